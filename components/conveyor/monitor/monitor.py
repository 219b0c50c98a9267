"""Serving-data drift: is the traffic a served model answers drifting from what it was trained on?

The monitor reads a time window `[start, end)` of serving traffic:

- prediction logs written by `conveyor serve --log-predictions PREFIX`
  (`PREFIX/date=YYYY-MM-DD/part-*.parquet`, local or gs://): only the date partitions the window
  touches are listed, then rows are kept by their `timestamp`; or
- any BigQuery table or query of serving traffic: either the prediction log's own table
  (`--log-bigquery-table`, a `features` RECORD) or flat feature columns, with a timestamp column.

Logged features are named by model input (`Street_Name`, `from_`); the served version's fitted
transform (`assets.extra/transform.json`, `Fitted.input_of`) maps each back to its column, and
each value back to the column's training type (the serving contract's "missing" values, NaN,
"" and the integer sentinel, become NULL). Conveyor's statistics of that traffic
(`conveyor.stats.columns`) are compared feature by feature with the served version's training
statistics (`assets.extra/statistics.json`, pushed with each version) by validate's measures and
sample-size-aware noise floors (`conveyor.validate.drift.compare`): a feature drifts when its
Jensen-Shannon / L-infinity distance passes its threshold and what sampling alone reaches at
p = 0.001 for the two sample sizes.

The predictions are compared too: class shares (`class_label`) or predicted values (`value`)
of the rows the served version answered, against the eval-time prediction statistics when the
version carries them (`assets.extra/predictions.json`, `conveyor.model.predictions`), which count
towards `drifted`; without them, against the training label's distribution, reported but not
counted (a model's predictions differ from the labels by its errors, not by drift).

Bad input raises InputError: a window holding no rows (naming the window and the source), a
served version without statistics, a logged feature the model does not know.

This module compares and writes the result; the window is `conveyor.monitor.window`, the served
version `conveyor.monitor.served`, the traffic's statistics `conveyor.monitor.traffic` and
where the traffic is read from `conveyor.monitor.sources`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.errors import EmptyDataError, InputError
from conveyor.monitor.served import Served
from conveyor.monitor.sources import read_bigquery, read_log, traffic_source
from conveyor.monitor.traffic import Traffic
from conveyor.monitor.window import Window, iso
from conveyor.stats.columns import CATEGORICAL, KIND_OF_TYPE, ColumnStatistics, SplitStatistics
from conveyor.validate import drift

FORMAT = "conveyor.monitoring/v1"
MONITORING_FILE = "monitoring.json"
REPORT_FILE = "report.html"
_UTC = datetime.UTC


# -- the comparison --------------------------------------------------------------------------

@dataclasses.dataclass
class MonitorResult:
    window: Window
    traffic: Traffic
    features: list[dict[str, Any]]  # per compared feature
    not_compared: list[dict[str, str]]
    prediction: dict[str, Any]
    drift_threshold: float

    @property
    def served(self) -> Served:
        return self.traffic.served

    @property
    def drifted_features(self) -> list[str]:
        return sorted(f["column"] for f in self.features if f["drifted"])

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_features) or bool(
            self.prediction.get("drifted") and self.prediction.get("counts"))

    def to_dict(self) -> dict[str, Any]:
        t = self.traffic
        return {
            "format": FORMAT,
            "generated_at": iso(datetime.datetime.now(_UTC)),
            "window": self.window.to_dict(),
            "source": t.source,
            "served": {"version": self.served.version, "uri": self.served.uri,
                       "task": self.served.fitted.spec.task,
                       "training_rows": self.served.baseline.rows},
            "rows": t.rows, "files": t.files,
            "rows_by_status": dict(sorted(t.by_status.items())),
            "rows_by_version": dict(sorted(t.by_version.items())),
            "drifted": self.drifted,
            "drifted_features": self.drifted_features,
            "drift_threshold": self.drift_threshold,
            "features": self.features,
            "not_compared": self.not_compared,
            "unparsed_keys": dict(sorted(t.unparsed.items(), key=lambda kv: (-kv[1], kv[0]))[:50]),
            "prediction": self.prediction,
        }

    def metrics(self) -> dict[str, float]:
        out = {"rows": float(self.traffic.rows), "drifted": float(self.drifted),
               "drifted_features": float(len(self.drifted_features)),
               "features_compared": float(len(self.features)),
               "max_drift": round(max((f["distance"] for f in self.features), default=0.0), 6)}
        if self.prediction.get("distance") is not None:
            out["prediction_drift"] = round(self.prediction["distance"], 6)
            out["prediction_drifted"] = float(bool(self.prediction["drifted"]))
        for f in self.features:
            out[f"drift_{f['input']}"] = round(f["distance"], 6)
        return out

    def lines(self) -> list[str]:
        out = [f"{f['column']!r}: {f['metric']} {f['distance']:.4f} > {f['threshold']} "
               f"(sampling noise {f['noise']:.4f})"
               + (f" ({f['figures']['summary']})" if f["figures"].get("summary") else "")
               for f in self.features if f["drifted"]]
        p = self.prediction
        if p.get("drifted"):
            out.append(f"predictions ({p['output']}, vs {p['reference']}): {p['metric']} "
                       f"{p['distance']:.4f} > {p['threshold']}"
                       + ("" if p["counts"] else " (reported, not counted)"))
        return out


def _label_reference(served: Served, output: str) -> ColumnStatistics | None:
    """The training label's distribution, in the prediction's terms (class labels as text)."""
    label = served.baseline.columns.get(served.fitted.spec.label)
    if label is None:
        return None
    if output == "value":
        return label if label.kind == "numeric" and label.finite else None
    reference = ColumnStatistics(output, "string", count=label.count, nulls=label.nulls)
    reference.values = {str(k) if not isinstance(k, bool) else str(int(k)): v
                        for k, v in (label.values or {}).items()}
    return reference if reference.values else None


def _prediction_drift(traffic: Traffic, threshold: float) -> dict[str, Any]:
    served, current = traffic.served, traffic.prediction
    out: dict[str, Any] = {"output": traffic.prediction_output,
                           "rows": current.count if current is not None else 0}
    if current is None or current.count == 0:
        out.update(status=f"no {traffic.prediction_output!r} output of version "
                          f"{served.version} in the window", drifted=False, counts=False)
        return out
    reference: ColumnStatistics | None
    if served.predictions is not None:
        reference = ColumnStatistics.from_dict(traffic.prediction_output,
                                               served.predictions["statistics"])
        out.update(reference=f"eval-time predictions ({served.predictions.get('split', 'eval')}"
                             " split)", counts=True)
    else:
        reference = _label_reference(served, traffic.prediction_output)
        out.update(reference="training labels (the version records no eval-time predictions)",
                   counts=False)
        if reference is None:
            out.update(status="no reference: the version records no eval-time predictions and "
                              "its statistics have no label column", drifted=False)
            return out
    d = drift.distance(reference, current, threshold)
    if d is None:
        out.update(status="not comparable", drifted=False)
        return out
    out.update(metric=d.metric, distance=round(d.value, 6), threshold=d.threshold,
               noise=round(d.noise, 6), drifted=d.exceeded,
               figures=drift.figures(reference, current))
    return out


def compare(traffic: Traffic, window: Window, drift_threshold: float = 0.1,
            feature_thresholds: Mapping[str, float] | None = None,
            prediction_threshold: float = 0.1) -> MonitorResult:
    """Each feature of the traffic against the served version's training statistics, and the
    predictions against their reference."""
    if traffic.rows == 0:
        other = (f" ({sum(traffic.by_status.values())} rows answered with other statuses: "
                 f"{traffic.by_status})" if traffic.by_status else "")
        raise EmptyDataError(
            f"traffic: no answered rows in the window {window.describe()} of {traffic.source} "
            f"({traffic.files} file(s) read){other}; widen window_hours, check window_end, or "
            "check that the server logs predictions there")
    for name, value in (("drift_threshold", drift_threshold),
                        ("prediction_threshold", prediction_threshold)):
        if not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise InputError(f"{name}: expected a number in (0, 1], got {value!r}")
    served = traffic.served
    by_input = served.columns_by_input()
    thresholds: dict[str, float] = {}
    for key, value in (feature_thresholds or {}).items():
        column = key if key in served.fitted.features else by_input.get(key)
        if column is None:
            raise InputError(f"feature_thresholds: {key!r} is not a feature of the served "
                             f"version (features: {', '.join(sorted(served.fitted.features))})")
        thresholds[column] = float(value)
    baseline = served.baseline
    current = SplitStatistics(traffic.rows, {c: s for c, s in traffic.columns.items()
                                             if c in traffic.present})
    distances = {d.column: d for d in drift.compare(baseline, current, drift_threshold,
                                                    thresholds)}
    features, not_compared = [], []
    for column in served.fitted.features:
        if column not in traffic.present:
            not_compared.append({"column": column, "reason": "not in the traffic"})
            continue
        if column not in baseline.columns:
            not_compared.append({"column": column,
                                 "reason": "not in the version's training statistics"})
            continue
        d = distances.get(column)
        if d is None:
            cur = current.columns[column]
            reason = ("no value in the window" if cur.count == 0 else
                      "dates and times have no drift measure (as in validate)"
                      if cur.kind == "temporal" else
                      "not comparable (no finite value on one side, or another type)")
            not_compared.append({"column": column, "reason": reason})
            continue
        features.append({"column": column, "input": served.fitted.input_of(column),
                         "metric": d.metric, "distance": round(d.value, 6),
                         "threshold": d.threshold, "noise": round(d.noise, 6),
                         "drifted": d.exceeded,
                         "figures": drift.figures(baseline.columns[column],
                                                  current.columns[column])})
    return MonitorResult(window, traffic, features, not_compared,
                         _prediction_drift(traffic, prediction_threshold), drift_threshold)


# -- everything at once -------------------------------------------------------------------------

def run(traffic: str, served: Served, win: Window, *, timestamp_column: str = "timestamp",
        drift_threshold: float = 0.1, feature_thresholds: Mapping[str, float] | None = None,
        prediction_threshold: float = 0.1, project: str = "",
        location: str = "") -> MonitorResult:
    """Read the window of `traffic` (see `traffic_source`) and compare it."""
    kind, where = traffic_source(traffic)
    if kind == "log":
        seen = read_log(where, win, served)
    else:
        seen = read_bigquery(win, served, table=where if kind == "table" else "",
                             query=where if kind == "query" else "",
                             timestamp_column=timestamp_column, project=project,
                             location=location)
    return compare(seen, win, drift_threshold, feature_thresholds, prediction_threshold)


def write(result: MonitorResult, folder: str | Path) -> Path:
    """monitoring.json (and report.html) into `folder`; returns the JSON's path."""
    from conveyor.monitor.report import html

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MONITORING_FILE
    path.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False,
                               default=_plain) + "\n")
    (folder / REPORT_FILE).write_text(html(result))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


def is_categorical(stats: ColumnStatistics) -> bool:
    return KIND_OF_TYPE.get(stats.type) == CATEGORICAL
