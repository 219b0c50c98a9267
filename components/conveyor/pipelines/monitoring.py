"""Monitoring: the spec a recurring run launches after the model is in service.

The monitor reads a time window of serving traffic (conveyor serve's prediction logs, or a
BigQuery table or query of it) and compares each feature with the served version's training
statistics, and the predictions with the eval-time ones. When it finds drift, the
continuous-training pipeline runs on the newest labeled data (`table` or `query`) with
`retrain_always`: broken data still stops it, and the retrained model is pushed only if it
beats the served version. With `canary`, the version served is labelled champion first (unless
the base path has labels already), so the retrained version is pushed as its challenger: served
for `conveyor serve --canary-percent` of the requests until `promote` decides
(docs/promotion.md).
"""

from kfp import dsl

from conveyor.monitor.component import monitor
from conveyor.pipelines import continuous_training
from conveyor.pipelines.steps import DEFAULT_ACCELERATOR
from conveyor.promote.component import start_canary

NAME = "conveyor-monitoring"


@dsl.pipeline(name=NAME, description="Check serving traffic for drift against the served "
                                     "model's training data; on drift, retrain, evaluate and "
                                     "push if better.")
def pipeline(
    traffic: str,
    model_base_path: str,
    label: str,
    table: str = "",
    query: str = "",
    window_hours: float = 24.0,
    window_end: str = "",
    timestamp_column: str = "timestamp",
    drift_threshold: float = 0.1,
    feature_thresholds: dict = {},
    prediction_threshold: float = 0.1,
    monitoring_uri: str = "",
    task: str = "",
    split_key: str = "",
    split_ratios: dict = {"train": 0.8, "eval": 0.2},
    project: str = "",
    location: str = "",
    policy: str = "fail",
    feature_spec_uri: str = "",
    hyperparameters: dict = {},
    module_file: str = "",
    slices: list = [],
    thresholds: dict = {},
    allow_breaking_signature: bool = False,
    train_gpus: int = 0,
    train_accelerator: str = DEFAULT_ACCELERATOR,
    canary: bool = False,
):
    """Monitor serving traffic for drift; retrain on the newest data when it drifted.

    Args:
        traffic: Prediction log prefix of conveyor serve (local folder or gs://bucket/path), or a BigQuery table (project.dataset.table) or SELECT query of serving traffic.
        model_base_path: Serving model base path (gs:// or local): the version monitored, its training statistics, and the push target of the retraining.
        label: Label column of the retraining data.
        table: Table with the newest labeled data to retrain on, as project.dataset.table or dataset.table (or give query).
        query: GoogleSQL query for the newest labeled data, instead of table.
        window_hours: Length of the traffic window, ending at window_end.
        window_end: End of the window (ISO 8601, UTC); default the time of the run.
        timestamp_column: Timestamp column of a BigQuery traffic table or query.
        drift_threshold: Drift (Jensen-Shannon or L-infinity) above which a feature drifted, beyond sampling noise.
        feature_thresholds: Per-feature thresholds, by column or input name.
        prediction_threshold: Drift threshold of the prediction distribution.
        monitoring_uri: Also publish monitoring.json under this folder or gs:// prefix (conveyor serve --monitoring-uri exports it as Prometheus gauges).
        task: binary, multiclass or regression; default: the served version's, else from the label.
        split_key: INT64 or STRING column that decides each row's split (default: the row).
        split_ratios: Split names and their shares of rows, summing to 1.
        project: Project that runs the BigQuery jobs; default from the environment.
        location: BigQuery location, e.g. US or EU.
        policy: fail (stop on broken retraining data) or warn.
        feature_spec_uri: Feature spec (path or gs://); default: the served version's, else proposed.
        hyperparameters: Model and training settings for the retraining; default: chosen from the data.
        module_file: Module defining build_model(hparams, feature_spec), instead of a built-in model.
        slices: Columns whose values slice the evaluation metrics.
        thresholds: Evaluation thresholds; default: beat the serving model and the naive reference.
        allow_breaking_signature: Bless a model whose serving signature breaks the served version's clients.
        train_gpus: GPUs to retrain on; 0 trains on CPU with conveyor's CPU image.
        train_accelerator: Accelerator type when train_gpus > 0.
        canary: Push the retrained version as a challenger of the served one (labelled champion first) instead of serving it at once.
    """
    watched = monitor(
        traffic=traffic, model_base_path=model_base_path, window_hours=window_hours,
        window_end=window_end, timestamp_column=timestamp_column,
        drift_threshold=drift_threshold, feature_thresholds=feature_thresholds,
        prediction_threshold=prediction_threshold, project=project, location=location,
        monitoring_uri=monitoring_uri,
    ).set_display_name("Monitor serving traffic")
    watched.set_caching_options(False)  # new traffic arrives under the same parameters
    watched.set_retry(num_retries=2, backoff_duration="2s", backoff_factor=2.0)
    with dsl.If(watched.outputs["Output"] == True, name="serving-drift"):  # noqa: E712
        labelled = start_canary(model_base_path=model_base_path, enabled=canary
                                ).set_display_name("Label the champion (canary)")
        labelled.set_caching_options(False)
        continuous_training.pipeline(
            label=label, model_base_path=model_base_path, table=table, query=query, task=task,
            split_key=split_key, split_ratios=split_ratios, project=project,
            location=location, policy=policy, drift_threshold=drift_threshold,
            retrain_always=True, feature_spec_uri=feature_spec_uri,
            hyperparameters=hyperparameters, module_file=module_file, slices=slices,
            thresholds=thresholds, allow_breaking_signature=allow_breaking_signature,
            train_gpus=train_gpus, train_accelerator=train_accelerator,
        ).set_display_name("Continuous training (serving drift)").after(labelled)
