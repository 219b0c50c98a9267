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
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conveyor.errors import EmptyDataError, InputError, SourceNotFoundError
from conveyor.io.location import GcsLocation, LocalLocation, Location
from conveyor.model.inputs import MISSING_INT
from conveyor.model.layout import ASSETS_EXTRA, PREDICTIONS_FILE, STATISTICS_FILE, TRANSFORM_FILE
from conveyor.model.predictions import PREDICTIONS_FORMAT
from conveyor.transform.fit import Fitted
from conveyor.validate import drift
from conveyor.stats.columns import (CATEGORICAL, KIND_OF_TYPE, ColumnStatistics,
                                     DatasetStatistics, SplitStatistics)

FORMAT = "conveyor.monitoring/v1"
MONITORING_FILE = "monitoring.json"
REPORT_FILE = "report.html"
#: The log's own columns: never features of a flat table.
LOG_COLUMNS = ("request_id", "instance", "timestamp", "model_name", "model_version", "status",
               "latency_ms", "features", "unparsed", "outputs", "error")
_UTC = datetime.timezone.utc
_QUERY = re.compile(r"^\s*(\(\s*)*(select|with)\b", re.IGNORECASE)
_TABLE_ID = re.compile(r"^`?([A-Za-z0-9_.:-]+\.)?[A-Za-z0-9_]+\.[\w-]+`?$")


# -- the window ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Window:
    start: datetime.datetime
    end: datetime.datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600

    def dates(self) -> list[str]:
        """The `date=` partitions the window touches (UTC days)."""
        day, last = self.start.date(), (self.end - datetime.timedelta(microseconds=1)).date()
        out = []
        while day <= last:
            out.append(day.isoformat())
            day += datetime.timedelta(days=1)
        return out

    def describe(self) -> str:
        return f"[{_iso(self.start)}, {_iso(self.end)})"

    def to_dict(self) -> dict[str, Any]:
        return {"start": _iso(self.start), "end": _iso(self.end), "hours": round(self.hours, 6)}


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(_UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str, parameter: str) -> datetime.datetime:
    """An ISO 8601 date or time; UTC unless it says otherwise."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise InputError(f"{parameter}: {text!r} is not an ISO 8601 time "
                         "(e.g. 2026-12-02T06:00:00Z or 2026-12-02)") from None
    return moment.replace(tzinfo=_UTC) if moment.tzinfo is None else moment.astimezone(_UTC)


def window(end: str = "", hours: float = 24.0, start: str = "",
           now: datetime.datetime | None = None) -> Window:
    """`[start, end)`: `end` (default now) minus `hours`, unless `start` is given."""
    stop = parse_time(end, "window_end") if end else (now or datetime.datetime.now(_UTC))
    if start:
        begin = parse_time(start, "window_start")
    else:
        if not isinstance(hours, (int, float)) or not 0 < hours < math.inf:
            raise InputError(f"window_hours: expected a positive number of hours, got {hours!r}")
        begin = stop - datetime.timedelta(hours=hours)
    if begin >= stop:
        raise InputError(f"window: the start {_iso(begin)} is not before the end {_iso(stop)}")
    return Window(begin, stop)


# -- the served version ------------------------------------------------------------------------

@dataclasses.dataclass
class Served:
    """What the monitor needs of the served version: its transform, training statistics and,
    when recorded, its eval-time prediction statistics."""
    fitted: Fitted
    statistics: DatasetStatistics
    version: int | None = None
    uri: str = ""
    predictions: dict | None = None

    @classmethod
    def from_folder(cls, folder: str | Path, version: int | None = None,
                    uri: str = "") -> "Served":
        """From a SavedModel folder (its `assets.extra/`)."""
        extra = Path(folder) / ASSETS_EXTRA
        name = uri or str(folder)
        if not (extra / TRANSFORM_FILE).exists():
            raise InputError(f"model_base_path: the served version {name} has no "
                             f"{ASSETS_EXTRA}/{TRANSFORM_FILE}; it was not trained by conveyor")
        fitted = Fitted.load(extra)
        path = extra / STATISTICS_FILE
        if not path.exists():
            raise InputError(
                f"model_base_path: the served version {name} has no training statistics "
                f"({ASSETS_EXTRA}/{STATISTICS_FILE}); push it with the training data's statistics "
                "(push's `statistics` input, as the training pipeline does) to monitor it")
        try:
            statistics = DatasetStatistics.from_dict(json.loads(path.read_text()),
                                                     f"{name}/{ASSETS_EXTRA}/{STATISTICS_FILE}")
        except ValueError as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"model_base_path: {name}/{ASSETS_EXTRA}/{STATISTICS_FILE} is not "
                             f"JSON: {exc}") from None
        predictions = None
        if (extra / PREDICTIONS_FILE).exists():
            predictions = json.loads((extra / PREDICTIONS_FILE).read_text())
            if predictions.get("format") != PREDICTIONS_FORMAT:
                raise InputError(f"model_base_path: {name}/{ASSETS_EXTRA}/{PREDICTIONS_FILE} is "
                                 f"not {PREDICTIONS_FORMAT}")
        return cls(fitted, statistics, version, uri or str(folder), predictions)

    @property
    def baseline(self) -> SplitStatistics:
        return self.statistics.split("train")

    def columns_by_input(self) -> dict[str, str]:
        return {self.fitted.input_of(c): c for c in self.fitted.features}

    def column_type(self, column: str) -> str:
        stats = self.baseline.columns.get(column)
        if stats is not None:
            return stats.type
        f = self.fitted.features[column]
        if f["kind"] == "numeric":
            return "float64"
        if f["kind"] == "datetime":
            return f.get("dtype", "timestamp")
        return f.get("dtype", "string")


def load_served(model_base_path: str, scratch: str | Path) -> Served:
    """The served version under the base path (what `conveyor serve` serves by default: the
    champion when versions are labelled, else the newest), fetched into `scratch` on gs://."""
    from conveyor.registry import served_version

    served = served_version(model_base_path)
    if served is None:
        raise SourceNotFoundError(f"model_base_path: {model_base_path} has no published "
                                  "version to monitor")
    return Served.from_folder(served.folder(scratch), served.version, served.uri)


# -- from logged values to training columns ------------------------------------------------------

def _null_where(array: pa.Array, mask) -> pa.Array:
    mask = pc.fill_null(mask, False)
    return pc.if_else(mask, pa.scalar(None, array.type), array)


def _to_number(array: pa.Array) -> pa.Array:
    if pa.types.is_boolean(array.type):
        array = array.cast(pa.int8())
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        array = pa.array([_float(v) for v in array.to_pylist()], pa.float64())
    array = array.cast(pa.float64())
    return _null_where(array, pc.is_nan(array))


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _parse_temporal(array: pa.Array, kind: str) -> pa.Array:
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        return (array.cast(pa.date32()) if kind == "date"
                else array.cast(pa.timestamp("us", tz="UTC")))
    out = []
    for value in array.cast(pa.string()).to_pylist():
        moment = None
        if value:
            try:
                moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                moment = None
        if moment is not None:
            if kind == "date":
                moment = moment.date()
            elif moment.tzinfo is None:
                moment = moment.replace(tzinfo=_UTC)
        out.append(moment)
    return pa.array(out, pa.date32() if kind == "date" else pa.timestamp("us", tz="UTC"))


def as_training_type(array: pa.Array | pa.ChunkedArray, ctype: str) -> pa.Array:
    """Logged values of one feature as its training column holds them (`ctype`, a statistics
    type); the serving contract's missing values (NaN, "", MISSING_INT) become NULL."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_null(array.type):
        array = pa.nulls(len(array), pa.string())
    if ctype == "float64":
        return _to_number(array)
    if ctype == "int64":
        if pa.types.is_integer(array.type):
            array = array.cast(pa.int64())
            return _null_where(array, pc.equal(array, MISSING_INT))
        number = _to_number(array)
        return pc.round(number).cast(pa.int64(), safe=False) if len(number) else \
            pa.array([], pa.int64())
    if ctype == "bool":
        if pa.types.is_boolean(array.type):
            return array
        if pa.types.is_integer(array.type):
            array = array.cast(pa.int64())
            return _null_where(pc.not_equal(array, 0), pc.equal(array, MISSING_INT))
        words = {"true": True, "1": True, "false": False, "0": False}
        return pa.array([words.get(str(v).lower()) if v is not None else None
                         for v in array.to_pylist()], pa.bool_())
    if ctype in ("date", "timestamp"):
        return _parse_temporal(array, ctype)
    text = array if pa.types.is_string(array.type) else array.cast(pa.string())
    return _null_where(text, pc.equal(text, ""))


# -- the traffic ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Traffic:
    """Conveyor's statistics of a window of traffic, accumulated batch by batch."""
    served: Served
    source: str
    columns: dict[str, ColumnStatistics]  # feature column -> statistics of the traffic
    prediction: ColumnStatistics | None = None
    prediction_output: str = ""
    rows: int = 0  # rows compared: answered (200) with features, in the window
    files: int = 0
    by_status: dict[str, int] = dataclasses.field(default_factory=dict)
    by_version: dict[str, int] = dataclasses.field(default_factory=dict)
    unparsed: dict[str, int] = dataclasses.field(default_factory=dict)  # key -> rows
    present: set = dataclasses.field(default_factory=set)  # feature columns seen in the source

    @classmethod
    def start(cls, served: Served, source: str) -> "Traffic":
        columns = {c: ColumnStatistics(c, served.column_type(c)) for c in served.fitted.features}
        task = served.fitted.spec.task
        output = "value" if task == "regression" else "class_label"
        kind = "float64" if task == "regression" else "string"
        return cls(served, source, columns, ColumnStatistics(output, kind), output)

    def add_features(self, features: Mapping[str, pa.Array], rows: int) -> None:
        """One batch of answered rows: feature column -> logged values (any type)."""
        self.rows += rows
        for column, stats in self.columns.items():
            values = features.get(column)
            if values is None:
                continue
            self.present.add(column)
            stats.update(as_training_type(values, stats.type))

    def add_predictions(self, values: pa.Array) -> None:
        target = pa.float64() if self.prediction.type == "float64" else pa.string()
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            return
        self.prediction.update(values.cast(target, safe=False))

    def count(self, table: dict[str, int], key: Any, n: int) -> None:
        table[str(key)] = table.get(str(key), 0) + int(n)


def _features_of_log(batch: pa.Table, served: Served, where: str) -> dict[str, pa.Array]:
    """A log batch's `features` struct as feature column -> values; an input the served
    version does not take is an InputError."""
    by_input = served.columns_by_input()
    struct = batch.column("features").combine_chunks()
    out = {}
    for i in range(struct.type.num_fields):
        name = struct.type.field(i).name
        if name not in by_input:
            raise InputError(
                f"{where}: the logged feature {name!r} is not an input of the served version "
                f"{served.uri} (its inputs: {', '.join(sorted(by_input))}); this traffic was "
                "answered by a model with other inputs: monitor a window of this version's "
                "traffic, or the base path that served it")
        out[by_input[name]] = pc.struct_field(struct, [i])
    return out


def _features_of_table(batch: pa.Table, served: Served, ignored: set[str],
                       where: str) -> dict[str, pa.Array]:
    """Flat feature columns (by column name or input name) -> values; any other column that
    is not the timestamp, the log's own, the label or a column the spec excluded is an
    InputError."""
    fitted = served.fitted
    by_input = served.columns_by_input()
    known = set(fitted.features) | {fitted.spec.label} | set(fitted.spec.excluded) | ignored
    out = {}
    for name in batch.column_names:
        if name in fitted.features:
            out[name] = batch.column(name)
        elif name in by_input and by_input[name] not in batch.column_names:
            out[by_input[name]] = batch.column(name)
        elif name not in known and name not in LOG_COLUMNS:
            raise InputError(
                f"{where}: column {name!r} is not a feature of the served version "
                f"{served.uri} (features: {', '.join(sorted(fitted.features))}); select only "
                "the feature columns (and the timestamp) in a query")
    return out


def _accumulate(traffic: Traffic, table: pa.Table, window: Window, time_column: str,
                where: str, ignored: set[str]) -> None:
    """Add one file's (or page's) rows of the window to `traffic`."""
    if time_column not in table.column_names:
        raise InputError(f"{where}: no timestamp column {time_column!r} (columns: "
                         f"{', '.join(table.column_names)})")
    times = table.column(time_column)
    if not pa.types.is_timestamp(times.type):
        times = _parse_temporal(times.combine_chunks(), "timestamp")
    elif times.type.tz is None:
        times = times.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    start = pa.scalar(window.start, pa.timestamp("us", tz="UTC"))
    end = pa.scalar(window.end, pa.timestamp("us", tz="UTC"))
    times = times.cast(pa.timestamp("us", tz="UTC"))
    inside = pc.fill_null(pc.and_(pc.greater_equal(times, start), pc.less(times, end)), False)
    table = table.filter(inside)
    if not table.num_rows:
        return
    logged = "features" in table.column_names and pa.types.is_struct(
        table.schema.field("features").type)
    if "status" in table.column_names:
        for item in pc.value_counts(table.column("status")).to_pylist():
            traffic.count(traffic.by_status, item["values"], item["counts"])
        table = table.filter(pc.fill_null(pc.equal(table.column("status"), 200), False))
    if logged:
        table = table.filter(pc.is_valid(table.column("features")))
    if not table.num_rows:
        return
    if "model_version" in table.column_names:
        for item in pc.value_counts(table.column("model_version")).to_pylist():
            traffic.count(traffic.by_version, item["values"], item["counts"])
    if "unparsed" in table.column_names:
        for text in pc.drop_null(table.column("unparsed")).to_pylist():
            try:
                keys = json.loads(text)
            except ValueError:
                continue
            for key in keys if isinstance(keys, dict) else ():
                traffic.count(traffic.unparsed, key, 1)
    features = (_features_of_log(table, traffic.served, where) if logged
                else _features_of_table(table, traffic.served, ignored | {time_column}, where))
    traffic.add_features(features, table.num_rows)
    if "outputs" in table.column_names and pa.types.is_struct(
            table.schema.field("outputs").type):
        answered = table
        if traffic.served.version is not None and "model_version" in table.column_names:
            answered = table.filter(pc.fill_null(pc.equal(
                table.column("model_version"), traffic.served.version), False))
        outputs = answered.column("outputs").combine_chunks()
        names = [outputs.type.field(i).name for i in range(outputs.type.num_fields)]
        if traffic.prediction_output in names and answered.num_rows:
            traffic.add_predictions(pc.struct_field(
                outputs, [names.index(traffic.prediction_output)]))


# -- reading logs --------------------------------------------------------------------------------

def _log_files(prefix: str, window: Window) -> Iterator[tuple[str, bytes | str]]:
    """(name, local path or bytes) of each log file in the window's date partitions: the
    `*.parquet` files under `date=<day>/` that are not hidden (`.`/`_`), local or gs://."""
    root = Location.parse(prefix)
    if isinstance(root, LocalLocation) and not root.path.is_dir():
        raise SourceNotFoundError(f"traffic: the prediction log folder {prefix} does not exist")
    for day in window.dates():
        folder = root / f"date={day}"
        try:
            names = folder.list()
        except SourceNotFoundError:  # only a gs:// listing raises it: the bucket is missing
            bucket = root.bucket_name if isinstance(root, GcsLocation) else root.uri
            raise SourceNotFoundError(f"traffic: bucket gs://{bucket} not found") from None
        for rel in names:
            name = rel.rsplit("/", 1)[-1]
            if name.endswith(".parquet") and not name.startswith((".", "_")):
                file = folder / rel
                if isinstance(file, LocalLocation):
                    yield file.uri, file.uri  # read from disk by pyarrow, not into memory
                else:
                    yield file.uri, file.read_bytes()


def read_log(prefix: str, window: Window, served: Served) -> Traffic:
    """Statistics of the prediction log rows in the window, file by file."""
    from conveyor.io import parquet

    source = prefix.rstrip("/") if prefix != "/" else prefix
    traffic = Traffic.start(served, source)
    for name, data in _log_files(source, window):
        try:
            table = parquet.read_table(data)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"traffic: {name} is not a readable Parquet file: {exc}") from None
        traffic.files += 1
        _accumulate(traffic, table, window, "timestamp", name, set())
    return traffic


# -- reading BigQuery ------------------------------------------------------------------------

def read_bigquery(window: Window, served: Served, *, table: str = "", query: str = "",
                  timestamp_column: str = "timestamp", project: str = "",
                  location: str = "") -> Traffic:
    """Statistics of the rows of a BigQuery table or query whose `timestamp_column` is in the
    window (filtered inside BigQuery)."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    from conveyor import gcp
    from conveyor.gcp import retry
    from conveyor.gcp.sql import parse_table_id, single_statement

    client = gcp.bigquery_client(project or None, location or None)
    if table:
        ref = parse_table_id(table, client.project, "traffic")
        source_sql, where = f"SELECT * FROM {ref.sql}", f"table {ref}"
    else:
        source_sql, where = single_statement(query), "traffic query"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", timestamp_column or ""):
        raise InputError(f"timestamp_column: {timestamp_column!r} is not a column name")
    sql = (f"SELECT * FROM (\n{source_sql}\n) AS traffic WHERE `{timestamp_column}` >= @start "
           f"AND `{timestamp_column}` < @end")
    config = bigquery.QueryJobConfig(use_query_cache=False, query_parameters=[
        bigquery.ScalarQueryParameter("start", "TIMESTAMP", window.start),
        bigquery.ScalarQueryParameter("end", "TIMESTAMP", window.end)])
    traffic = Traffic.start(served, str(ref) if table else "query")
    try:
        job = client.query(sql, job_config=config, retry=retry.bigquery(),
                           job_retry=retry.bigquery_job())
        rows = job.result(retry=retry.bigquery(), job_retry=retry.bigquery_job(),
                          page_size=50_000)
        for batch in rows.to_arrow_iterable(bqstorage_client=None):
            traffic.files += 1
            _accumulate(traffic, pa.Table.from_batches([batch]), window, timestamp_column,
                        where, set())
    except gexc.NotFound as exc:
        raise SourceNotFoundError(f"{where}: BigQuery: {exc.message}") from None
    except gexc.BadRequest as exc:
        raise InputError(f"{where}: BigQuery rejected the query: {exc.message}") from None
    return traffic


def traffic_source(traffic: str) -> tuple[str, str]:
    """('log', prefix), ('table', id) or ('query', sql) from the one `traffic` parameter."""
    text = (traffic or "").strip()
    if not text:
        raise InputError("traffic: empty; expected a prediction log prefix (a local folder or "
                         "gs://bucket/path), a BigQuery table (project.dataset.table) or a query")
    if text.startswith("bq://"):
        return "table", text[5:]
    if text.startswith("gs://") or Path(text).exists() or "/" in text:
        return "log", text
    if _QUERY.match(text):
        return "query", text
    if _TABLE_ID.match(text):
        return "table", text.strip("`")
    raise InputError(f"traffic: {text!r} is neither an existing folder, a gs:// prefix, a "
                     "BigQuery table id (dataset.table) nor a SELECT query")


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
            "generated_at": _iso(datetime.datetime.now(_UTC)),
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
