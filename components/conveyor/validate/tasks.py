"""The work behind the validate KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from conveyor.gcp.files import local_copy
from conveyor.model.layout import STATISTICS_FILE
from conveyor.validate.validate import ValidationResult, validate_dataset


def served_baseline(model_base_path: str, scratch: str) -> tuple[Path, str] | None:
    """The training statistics pushed with the served version under the base path: a local
    file (fetched into `scratch` from gs://) and the URI that names it, or None."""
    from conveyor.registry import served_version

    served = served_version(model_base_path)  # the champion when labelled, else the newest
    if served is None:
        return None
    path = served.file(STATISTICS_FILE, scratch)
    if not path.exists():
        return None
    return path, served.file_uri(STATISTICS_FILE)


def served_statistics(model_base_path: str, scratch: str):
    """The local file of `served_baseline`, or None."""
    found = served_baseline(model_base_path, scratch)
    return found[0] if found else None


def validate(dataset, report, *args, **kwargs) -> bool:
    """`_validate` under `conveyor.failfast.fail_once`: after an attempt that failed on bad input,
    a retry fails at once with the same error (marker beside the `report` output)."""
    from conveyor.failfast import fail_once

    with fail_once(report.path, "validate"):
        return _validate(dataset, report, *args, **kwargs)


def _validate(dataset, report, metrics, statistics, suite, *, input_suite=None,
             baseline_statistics=None, baseline_dataset=None, suite_uri: str = "",
             baseline_model_base_path: str = "", splits: list | None = None,
             tracking_uri: str = "", pipeline_run: str = "", **params: Any) -> bool:
    """Run `validate_dataset` from KFP artifacts; publish metrics; return whether it passed.

    The verdict is the output named `Output` (`task.outputs["Output"]`): kfp.local resolves only
    outputs named `Output` in `dsl.If` conditions (kfp 2.17), and the gate must work there too.
    It is True when nothing is broken and nothing drifted against the baseline; under policy
    fail broken data raises, so `Output == False` then means drift. The statistics and report
    artifacts' metadata say `broken`, `drifted`, `skewed` and `drifted_columns`, and the
    statistics folder holds `validation.json` (the verdict with per-column drift figures)."""
    suite_source = (input_suite.path if input_suite is not None
                    else local_copy(suite_uri, "suite_uri") if suite_uri else None)
    params = {k: v for k, v in params.items() if v != ""}
    baseline_stats = baseline_statistics.path if baseline_statistics is not None else None
    # Reports name the baseline by URI: a scratch copy's path means nothing once deleted.
    baseline_name = _uri(baseline_statistics)
    with tempfile.TemporaryDirectory(prefix="conveyor-baseline-") as scratch:
        if baseline_stats is None and baseline_model_base_path:
            found = served_baseline(baseline_model_base_path, scratch)
            if found is not None:  # named by the version's URI, not the deleted scratch copy
                baseline_stats, baseline_name = found
        if baseline_stats is None and baseline_dataset is not None:
            baseline_name = f"dataset {_uri(baseline_dataset)}"
        result: ValidationResult = validate_dataset(
            dataset.path,
            report_path=report.path,
            statistics_path=statistics.path,
            suite_path=suite.path,
            suite=suite_source,
            baseline_statistics=baseline_stats,
            baseline_dataset=baseline_dataset.path if baseline_dataset is not None else None,
            splits=splits or None,
            baseline_name=baseline_name,
            **params,
        )
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    verdict = {"passed": result.passed, "broken": result.broken, "drifted": result.drifted,
               "skewed": result.skewed,
               "drifted_columns": sorted({d.column for _, d in result.drift if d.exceeded})}
    statistics.metadata["dataset_fingerprint"] = result.statistics.fingerprint
    statistics.metadata["statistics_source"] = result.statistics_source
    statistics.metadata.update(verdict)
    report.metadata.update(verdict)
    suite.metadata["origin"] = result.suite.origin
    state = ("BROKEN (policy warn)" if result.broken else "PASSED")
    state += ", DRIFTED" if result.drifted else ""
    print(state + "".join(f"\n  {line}" for line in result.breakage + result.drift_lines)
          + "".join(f"\n  warning: {line}" for line in result.warnings), flush=True)
    _track(result, report, statistics, params, tracking_uri, pipeline_run)
    return result.passed


def _track(result: ValidationResult, report, statistics, params: dict, tracking_uri: str,
           pipeline_run: str) -> None:
    """The run's validate figures (drift count and the rest), settings and outputs, to MLflow
    when tracking is configured (`conveyor.tracking`)."""
    from conveyor import tracking
    from conveyor.tracking.runs import artifact_uri

    tracking.log_step(tracking.Step(
        "validate", params=params, metrics=result.metrics(),
        tags={"validate.passed": str(result.passed).lower()},
        artifacts={"report": artifact_uri(report), "statistics": artifact_uri(statistics)}),
        tracking_uri=tracking_uri, pipeline_run=pipeline_run)


def _uri(artifact) -> str | None:
    """An input artifact's URI (gs://... in the cluster), else its local path, else None."""
    if artifact is None:
        return None
    return getattr(artifact, "uri", "") or artifact.path
