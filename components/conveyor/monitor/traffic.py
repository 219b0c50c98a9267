"""A window of traffic as conveyor statistics: logged values mapped back to the served version's
training columns and types, rows of the window accumulated batch by batch (log files or
BigQuery pages alike)."""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from conveyor.errors import InputError
from conveyor.model.inputs import MISSING_INT
from conveyor.monitor.served import Served
from conveyor.monitor.window import Window
from conveyor.stats.columns import ColumnStatistics

#: The log's own columns: never features of a flat table.
LOG_COLUMNS = ("request_id", "instance", "timestamp", "model_name", "model_version", "status",
               "latency_ms", "features", "unparsed", "outputs", "error")
_UTC = datetime.UTC


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
    out: list[datetime.date | None] = []
    for value in array.cast(pa.string()).to_pylist():
        parsed = None
        if value:
            try:
                parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                parsed = None
        moment: datetime.date | None = parsed
        if parsed is not None:
            if kind == "date":
                moment = parsed.date()
            elif parsed.tzinfo is None:
                moment = parsed.replace(tzinfo=_UTC)
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
    def start(cls, served: Served, source: str) -> Traffic:
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
        prediction = self.prediction
        if prediction is None:  # `start` always sets it; a Traffic built without has no output
            return
        target = pa.float64() if prediction.type == "float64" else pa.string()
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            return
        prediction.update(values.cast(target, safe=False))

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


def accumulate(traffic: Traffic, table: pa.Table, window: Window, time_column: str,
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

