"""The validate KFP component: a thin typed shell over `conveyor.validate.tasks`."""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def validate(
    dataset: dsl.Input[dsl.Dataset],
    report: dsl.Output[dsl.HTML],
    metrics: dsl.Output[dsl.Metrics],
    statistics: dsl.Output[dsl.Artifact],
    suite: dsl.Output[dsl.Artifact],
    input_suite: dsl.Input[dsl.Artifact] = None,
    baseline_statistics: dsl.Input[dsl.Artifact] = None,
    baseline_dataset: dsl.Input[dsl.Dataset] = None,
    suite_uri: str = "",
    baseline_model_base_path: str = "",
    splits: list = [],
    policy: str = "fail",
    drift_policy: str = "warn",
    drift_threshold: float = 0.1,
    feature_thresholds: dict = {},
    skew_threshold: float = 0.2,
    label_column: str = "",
    statistics_source: str = "auto",
    tracking_uri: str = "",
    pipeline_run: str = "",
) -> bool:
    """Validate a Dataset with a Great Expectations suite, and check drift and train/eval skew.

    The suite is input_suite, else suite_uri, else inferred from the baseline, else from this
    dataset's train split; the suite used is written to the suite output for the next run.

    Args:
        dataset: The Dataset to validate.
        report: HTML report: failed expectations with examples, drift, skew, statistics.
        metrics: success_ratio, failed_expectations, max_drift, max_skew and more.
        statistics: Per-column statistics of each split (a baseline for later runs; statistics.json, and statistics.pb: TFDV's DatasetFeatureStatisticsList), and validation.json: the verdict, breakage apart from drift, with per-column drift figures; metadata broken, drifted, skewed, drifted_columns.
        suite: The suite used: suite.yaml (conveyor spec) and expectations.json (GX).
        input_suite: A suite artifact from an earlier run (or an importer).
        baseline_statistics: Statistics artifact of the baseline data, for drift.
        baseline_dataset: Baseline Dataset, when no baseline statistics are given.
        suite_uri: Path or gs:// URI of a conveyor spec (YAML/JSON) or a GX suite (JSON).
        baseline_model_base_path: Serving base path: its newest version's training statistics are the baseline.
        splits: Splits to validate (default: all).
        policy: fail (the task fails on broken data) or warn (Output is False).
        drift_policy: warn (default: drift and skew are reported, Output False on drift) or fail (drift and skew fail the task too).
        drift_threshold: Default drift threshold (Jensen-Shannon or L-infinity).
        feature_thresholds: Per-column drift and skew thresholds.
        skew_threshold: Default train/eval skew threshold (small eval splits are noisy).
        label_column: Label column; a split where it is all NULL is an error.
        statistics_source: auto (default: one aggregate query in BigQuery for a Dataset ingested from BigQuery of at least 5 M rows, else the rows), rows (the Parquet rows), or bigquery.
        tracking_uri: MLflow tracking server the run's figures and output URIs are logged to; default: MLFLOW_TRACKING_URI of the task's environment, else none.
        pipeline_run: The pipeline run's name: every step of a run logs to the one MLflow run tagged with it.

    Returns:
        True when nothing is broken and nothing drifted against the baseline (in dsl.If:
        task.outputs["Output"]); under policy fail, False means drift.
    """
    from conveyor.validate import tasks

    return tasks.validate(
        dataset, report, metrics, statistics, suite, input_suite=input_suite,
        baseline_statistics=baseline_statistics, baseline_dataset=baseline_dataset,
        suite_uri=suite_uri, baseline_model_base_path=baseline_model_base_path, splits=splits,
        policy=policy, drift_policy=drift_policy, drift_threshold=drift_threshold,
        feature_thresholds=feature_thresholds, skew_threshold=skew_threshold,
        label_column=label_column, statistics_source=statistics_source,
        tracking_uri=tracking_uri, pipeline_run=pipeline_run,
    )
