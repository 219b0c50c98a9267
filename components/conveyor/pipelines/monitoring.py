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
from conveyor.params import default, documented
from conveyor.pipelines import continuous_training
from conveyor.pipelines.retry import retried
from conveyor.promote.component import start_canary

NAME = "conveyor-monitoring"


#: The Args lines of `pipeline`'s docstring (compiled into its spec): the retraining
#: parameters' docs of continuous_training, then the monitor's own.
MONITORING_DOCS = dict(
    **continuous_training.RETRAINING_DOCS,
    traffic="Prediction log prefix of conveyor serve (local folder or gs://bucket/path), or a "
            "BigQuery table (project.dataset.table) or SELECT query of serving traffic.",
    model_base_path="Serving model base path (gs:// or local): the version monitored, its "
                    "training statistics, and the push target of the retraining.",
    label="Label column of the retraining data.",
    table="Table with the newest labeled data to retrain on, as project.dataset.table or "
          "dataset.table (or give query).",
    query="GoogleSQL query for the newest labeled data, instead of table.",
    window_hours="Length of the traffic window, ending at window_end.",
    window_end="End of the window (ISO 8601, UTC); default the time of the run.",
    timestamp_column="Timestamp column of a BigQuery traffic table or query.",
    drift_threshold="Drift (Jensen-Shannon or L-infinity) above which a feature drifted, "
                    "beyond sampling noise.",
    feature_thresholds="Per-feature thresholds, by column or input name.",
    prediction_threshold="Drift threshold of the prediction distribution.",
    monitoring_uri="Also publish monitoring.json under this folder or gs:// prefix (conveyor "
                   "serve --monitoring-uri exports it as Prometheus gauges).",
    policy="fail (stop on broken retraining data) or warn.",
    allow_breaking_signature="Bless a model whose serving signature breaks the served "
                             "version's clients.",
    train_accelerator="Accelerator type when train_gpus > 0.",
    canary="Push the retrained version as a challenger of the served one (labelled champion "
           "first) instead of serving it at once.",
)


@dsl.pipeline(name=NAME, description="Check serving traffic for drift against the served "
                                     "model's training data; on drift, retrain, evaluate and "
                                     "push if better.")
@documented("Monitor serving traffic for drift; retrain on the newest data when it drifted.",
            **MONITORING_DOCS)
def pipeline(
    traffic: str,
    model_base_path: str,
    label: str,
    table: str = default("table"),
    query: str = default("query"),
    window_hours: float = 24.0,
    window_end: str = "",
    timestamp_column: str = "timestamp",
    drift_threshold: float = default("drift_threshold"),
    feature_thresholds: dict = {},
    prediction_threshold: float = 0.1,
    monitoring_uri: str = "",
    task: str = default("task"),
    split_key: str = default("split_key"),
    split_ratios: dict = default("split_ratios"),
    project: str = default("project"),
    location: str = default("location"),
    policy: str = default("policy"),
    feature_spec_uri: str = default("feature_spec_uri"),
    hyperparameters: dict = default("hyperparameters"),
    module_file: str = default("module_file"),
    slices: list = default("slices"),
    thresholds: dict = default("thresholds"),
    allow_breaking_signature: bool = default("allow_breaking_signature"),
    train_gpus: int = default("train_gpus"),
    train_accelerator: str = default("train_accelerator"),
    canary: bool = False,
    tracking_uri: str = default("tracking_uri"),
):
    watched = monitor(
        traffic=traffic, model_base_path=model_base_path, window_hours=window_hours,
        window_end=window_end, timestamp_column=timestamp_column,
        drift_threshold=drift_threshold, feature_thresholds=feature_thresholds,
        prediction_threshold=prediction_threshold, project=project, location=location,
        monitoring_uri=monitoring_uri,
    ).set_display_name("Monitor serving traffic")
    watched.set_caching_options(False)  # new traffic arrives under the same parameters
    retried(watched)
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
            tracking_uri=tracking_uri,
        ).set_display_name("Continuous training (serving drift)").after(labelled)
