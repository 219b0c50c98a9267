"""The push KFP component: a thin typed shell over `conveyor.push.tasks`."""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def push(
    model: dsl.Input[dsl.Model],
    evaluation: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    pushed_model: dsl.Output[dsl.Artifact],
    summary: dsl.Output[dsl.Markdown],
    model_base_path: str,
    statistics: dsl.Input[dsl.Artifact] = None,
    split: str = "eval",
    vertex_endpoint: str = "",
    vertex_traffic_percent: int = 10,
    vertex_serving_image: str = "",
    kserve_service: str = "",
    mode: str = "auto",
    vertex_model: str = "",
    kserve_canary_percent: int = 10,
    tracking_uri: str = "",
    pipeline_run: str = "",
):
    """Push a blessed model as a new version under a TensorFlow Serving model base path.

    Refuses a model its evaluation did not bless, then makes sure it loads and answers in a fresh
    process (the infra check: evaluate's verdict when it covers exactly these files, else a new
    process calling its serving signature on sample rows), then publishes it atomically.

    Args:
        model: The SavedModel to push.
        evaluation: The evaluation artifact of evaluate (holds the blessing).
        dataset: Dataset whose split gives the infra check's sample rows.
        pushed_model: Version, URI and target of the pushed model.
        summary: Markdown summary of the push.
        model_base_path: Local folder or gs:// prefix; versions are <base>/<n>/.
        statistics: The training data's statistics (validate), kept with the version as a drift baseline.
        split: Split of the dataset to take sample rows from.
        vertex_endpoint: projects/P/locations/L/endpoints/E to deploy the version to (canary).
        vertex_traffic_percent: Share of the endpoint's traffic the new version gets.
        vertex_serving_image: Vertex AI prebuilt TensorFlow serving image (default: tf2-cpu).
        kserve_service: namespace/name of a KServe InferenceService to point at the version.
        mode: champion (served at once), challenger (labelled challenger beside the champion until promote decides), or auto (challenger when the base path's labels, or the Vertex AI model, have a champion).
        vertex_model: Model Registry model (resource name or ID) the versions are uploaded into; default from the base path's name.
        kserve_canary_percent: Share of the InferenceService's traffic a challenger gets (canaryTrafficPercent).
        tracking_uri: MLflow tracking server the run's figures and output URIs are logged to; default: MLFLOW_TRACKING_URI of the task's environment, else none. Pushed versions and labels are mirrored to its model registry (versions and aliases).
        pipeline_run: The pipeline run's name: every step of a run logs to the one MLflow run tagged with it.
    """
    from conveyor.push import tasks

    tasks.push(model, evaluation, dataset, pushed_model, summary,
               model_base_path=model_base_path, split=split, statistics=statistics,
               vertex_endpoint=vertex_endpoint,
               vertex_traffic_percent=vertex_traffic_percent,
               vertex_serving_image=vertex_serving_image, kserve_service=kserve_service,
               mode=mode, vertex_model=vertex_model,
               kserve_canary_percent=kserve_canary_percent,
               tracking_uri=tracking_uri, pipeline_run=pipeline_run)
