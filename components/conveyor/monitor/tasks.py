"""The work behind the monitor KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from conveyor.errors import InputError
from conveyor.io.location import Location, PreconditionError
from conveyor.monitor import monitor as mon
from conveyor.monitor.served import load_served
from conveyor.monitor.window import window


def publish(payload: dict[str, Any], monitoring_uri: str) -> str:
    """Write `payload` as `<monitoring_uri>/monitoring-<window end>-<id>.json`, whole or not
    at all (locally a renamed temporary file; on gs:// one create-only upload), where
    `conveyor serve --monitoring-uri` finds the newest. Returns its URI."""
    end = payload["window"]["end"].replace("-", "").replace(":", "").replace(".", "")
    name = f"monitoring-{end}-{uuid.uuid4().hex[:8]}.json"
    text = json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
    target = Location.parse(monitoring_uri).child(name)
    if monitoring_uri.startswith("gs://"):
        try:  # create-only: a retry after a lost response cannot write it twice
            target.write_text(text, content_type="application/json", if_generation_match=0)
        except PreconditionError:
            pass  # the unique name exists: an earlier attempt of this very upload succeeded
        return target.uri
    try:
        target.write_text(text, content_type="application/json")
    except OSError as exc:
        raise InputError(f"monitoring_uri: cannot write into {monitoring_uri}: "
                         f"{exc.strerror or exc}") from None
    return str(Path(monitoring_uri) / name)


def monitor(monitoring, metrics, report, *, traffic: str, model_base_path: str,
            window_hours: float = 24.0, window_end: str = "", window_start: str = "",
            timestamp_column: str = "timestamp", drift_threshold: float = 0.1,
            feature_thresholds: dict | None = None, prediction_threshold: float = 0.1,
            project: str = "", location: str = "", monitoring_uri: str = "") -> bool:
    """Run the monitor from KFP artifacts; publish metrics; return whether it drifted."""
    from conveyor.failfast import fail_once

    with fail_once(monitoring.path, "monitor"), \
            tempfile.TemporaryDirectory(prefix="conveyor-monitor-") as scratch:
        win = window(window_end, window_hours, window_start)
        served = load_served(model_base_path, scratch)
        result = mon.run(traffic, served, win, timestamp_column=timestamp_column,
                         drift_threshold=drift_threshold, feature_thresholds=feature_thresholds,
                         prediction_threshold=prediction_threshold, project=project,
                         location=location)
    path = mon.write(result, monitoring.path)
    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    Path(report.path).write_text((Path(monitoring.path) / mon.REPORT_FILE).read_text())
    payload = json.loads(path.read_text())
    if monitoring_uri:
        payload_uri = publish(payload, monitoring_uri)
        monitoring.metadata["published"] = payload_uri
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    verdict = {"drifted": result.drifted, "drifted_features": result.drifted_features,
               "served_version": served.version, "rows": result.traffic.rows,
               "window_start": payload["window"]["start"],
               "window_end": payload["window"]["end"]}
    monitoring.metadata.update(verdict)
    report.metadata.update(verdict)
    state = "DRIFTED" if result.drifted else "NO DRIFT"
    print(f"{state}: {result.traffic.rows} rows of {result.traffic.source} in "
          f"{win.describe()} against version {served.version}"
          + "".join(f"\n  {line}" for line in result.lines()), flush=True)
    return result.drifted


