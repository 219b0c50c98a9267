"""The promote KFP components: thin typed shells over `conveyor.promote.tasks`."""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def promote(
    dataset: dsl.Input[dsl.Dataset],
    promotion: dsl.Output[dsl.Artifact],
    summary: dsl.Output[dsl.Markdown],
    model_base_path: str,
    split: str = "eval",
    significance: float = 0.05,
    vertex_endpoint: str = "",
    vertex_model: str = "",
    kserve_service: str = "",
    tracking_uri: str = "",
    pipeline_run: str = "",
) -> str:
    """Promote the base path's challenger or roll it back, by the rule of docs/promotion.md on
    recent labeled data: promoted when at least as good as the champion on the primary metric
    and significantly worse on no paired metric (both versions evaluated on the same rows).

    Args:
        dataset: Recent labeled data (a Dataset) to re-evaluate the champion and the challenger on.
        promotion: promotion.json: the decision, its reasons and the paired comparisons.
        summary: Markdown summary of the decision.
        model_base_path: Model base path (local or gs://) whose labels name the champion and the challenger.
        split: Split of the dataset to evaluate on.
        significance: Level of the one-sided paired tests of "the challenger is worse".
        vertex_endpoint: projects/P/locations/L/endpoints/E where the challenger is deployed as a canary.
        vertex_model: Model Registry model (resource name or ID); default from the base path's name.
        kserve_service: namespace/name of a KServe InferenceService serving the challenger as its canary.
        tracking_uri: MLflow tracking server the run's figures and output URIs are logged to; default: MLFLOW_TRACKING_URI of the task's environment, else none. The labels after the decision are mirrored to its model registry (aliases champion and challenger).
        pipeline_run: The pipeline run's name: every step of a run logs to the one MLflow run tagged with it.

    Returns:
        promote, rollback or none (no challenger).
    """
    from conveyor.promote import tasks

    return tasks.promote(dataset, promotion, summary, model_base_path=model_base_path,
                         split=split, significance=significance,
                         vertex_endpoint=vertex_endpoint, vertex_model=vertex_model,
                         kserve_service=kserve_service, tracking_uri=tracking_uri,
                         pipeline_run=pipeline_run)


@dsl.component(base_image=images.image(), install_kfp_package=False)
def start_canary(model_base_path: str, enabled: bool = True) -> str:
    """Label the version served now `champion` unless the base path has labels already, so
    that the next push (mode auto) is a challenger beside it.

    Args:
        model_base_path: Model base path (local or gs://).
        enabled: False: change nothing (a pipeline's canary switch).

    Returns:
        The labels, as JSON.
    """
    from conveyor.promote import tasks

    return tasks.start_canary(model_base_path, enabled)
