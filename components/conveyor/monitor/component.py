"""The monitor KFP component: a thin typed shell over `conveyor.monitor.tasks`."""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def monitor(
    traffic: str,
    model_base_path: str,
    monitoring: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.HTML],
    window_hours: float = 24.0,
    window_end: str = "",
    window_start: str = "",
    timestamp_column: str = "timestamp",
    drift_threshold: float = 0.1,
    feature_thresholds: dict = {},
    prediction_threshold: float = 0.1,
    project: str = "",
    location: str = "",
    monitoring_uri: str = "",
) -> bool:
    """Compare a time window of serving traffic with the served version's training data.

    Args:
        traffic: Prediction log prefix of conveyor serve (local folder or gs://bucket/path), or a BigQuery table (project.dataset.table) or SELECT query of serving traffic with the feature columns.
        model_base_path: Serving model base path (gs:// or local): its newest version is the one monitored.
        monitoring: monitoring.json (window, rows, per-feature distance, threshold, noise, drifted and figures, the prediction drift, drifted, the served version) and report.html.
        metrics: rows, drifted, drifted_features, max_drift, prediction_drift, drift_<input> per feature.
        report: HTML report: verdict, per-feature table, charts against the training data.
        window_hours: Length of the window, ending at window_end.
        window_end: End of the window (ISO 8601, UTC unless it says otherwise); default now.
        window_start: Start of the window instead of window_hours (ISO 8601).
        timestamp_column: Timestamp column of a BigQuery table or query.
        drift_threshold: Default drift threshold (Jensen-Shannon or L-infinity), as validate's.
        feature_thresholds: Per-feature thresholds, by column or input name.
        prediction_threshold: Threshold of the prediction distribution's drift.
        project: Project that runs the BigQuery query; default from the environment.
        location: BigQuery location, e.g. US or EU.
        monitoring_uri: Also publish monitoring.json under this folder or gs:// prefix, where conveyor serve --monitoring-uri reads the newest.

    Returns:
        True when a feature (or the prediction distribution, against eval-time predictions)
        drifted (in dsl.If: task.outputs["Output"]).
    """
    from conveyor.monitor import tasks

    return tasks.monitor(
        monitoring, metrics, report, traffic=traffic, model_base_path=model_base_path,
        window_hours=window_hours, window_end=window_end, window_start=window_start,
        timestamp_column=timestamp_column, drift_threshold=drift_threshold,
        feature_thresholds=feature_thresholds, prediction_threshold=prediction_threshold,
        project=project, location=location, monitoring_uri=monitoring_uri,
    )
