"""The evaluate KFP component: a thin typed shell over `conveyor.evaluate.tasks`."""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def evaluate(
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    evaluation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    classification_metrics: dsl.Output[dsl.ClassificationMetrics],
    report: dsl.Output[dsl.Markdown],
    html_report: dsl.Output[dsl.HTML],
    baseline_model: dsl.Input[dsl.Model] = None,
    model_base_path: str = "",
    split: str = "eval",
    slices: list = [],
    thresholds: dict = {},
    allow_breaking_signature: bool = False,
    tracking_uri: str = "",
    pipeline_run: str = "",
) -> bool:
    """Evaluate a model overall and per slice against a naive floor, the newest baseline that can
    be evaluated on this data, thresholds and the served version's serving signature; bless it
    or not.

    Args:
        model: The SavedModel to evaluate (through its serving signature).
        dataset: The Dataset holding the evaluation split.
        evaluation: evaluation.json: metrics per slice, baseline and naive metrics, skipped
            baselines, the serving signature diff, checks, blessing.
        metrics: Overall metrics of the model, the baseline (baseline_ prefix) and the naive
            reference (naive_ prefix); never NaN (non-finite values are left out).
        classification_metrics: ROC curve (binary) and confusion matrix, drawn by the UI.
        report: Markdown: checks, skipped baselines, signature diff, metrics per slice,
            candidate vs baseline vs naive.
        html_report: The same as a self-contained HTML page with charts: ROC, PR and
            calibration (classification), a confusion-matrix heat map (multiclass),
            predicted vs actual and residuals (regression).
        baseline_model: Baseline SavedModel, tried first; then the newest of the 5 newest
            versions under model_base_path that can be evaluated on this data (the others
            are skipped and named); none: the naive floor alone.
        model_base_path: Serving model base path (local or gs://) to find the baseline in.
        split: Split to evaluate on.
        slices: Columns whose values slice the metrics.
        thresholds: Per metric: min, max, min_improvement, min_improvement_relative,
            min_improvement_over_naive (replaces the default naive floor); "naive_floor":
            false turns the floor off.
        allow_breaking_signature: Bless a model whose serving signature breaks the served
            version's clients (an input added, removed or changed; an output removed or
            changed); by default such a model is not blessed.
        tracking_uri: MLflow tracking server the run's figures and output URIs are logged to; default: MLFLOW_TRACKING_URI of the task's environment, else none.
        pipeline_run: The pipeline run's name: every step of a run logs to the one MLflow run tagged with it.

    Returns:
        True when every check passed (the model is blessed); in dsl.If: task.outputs["Output"].
    """
    from conveyor.evaluate import tasks

    return tasks.evaluate(model, dataset, evaluation, metrics, classification_metrics, report,
                          html_report=html_report, baseline_model=baseline_model,
                          model_base_path=model_base_path, split=split, slices=slices,
                          thresholds=thresholds,
                          allow_breaking_signature=allow_breaking_signature,
                          tracking_uri=tracking_uri, pipeline_run=pipeline_run)
