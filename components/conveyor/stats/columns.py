"""Per-column statistics of a Dataset, computed in one streaming pass per split.

For each split and column:
- numeric (int64, float64): count of values, nulls, NaN, +-inf and zeros, mean and standard
  deviation (merged per batch with Chan's formulas), min, max, and a uniform sample of
  `SAMPLE_SIZE` finite values from which quantiles and histograms are read. The sample is
  deterministic: each row draws a priority from a generator seeded with 0 in row order, and the
  lowest priorities are kept, so the same Dataset always gives the same statistics, however it
  is chunked;
- categorical (string, bool): count, nulls, exact value frequencies up to `MAX_TRACKED_VALUES`
  distinct values (beyond that the column is marked `truncated` and new values are not tracked);
- temporal (timestamp, date): count, nulls, min, max, the count, mean and standard deviation of
  the values as days since 1970 (fractional for timestamps; `finite`, `mean`, `std`: what
  transform z-scores a datetime feature's day number with), and a sample of those day numbers
  as for numbers, for the report's histograms.

Everything tracked is written: an int64 column's value frequencies too (up to
`MAX_TRACKED_VALUES`), so statistics read back from JSON describe the split exactly as the pass
did, and transform can fit on them without reading the rows (`conveyor.transform.fit`).

Memory does not grow with the row count: a batch at a time, fixed-size samples, capped counters.
The result serializes to JSON (`DatasetStatistics.to_dict`), samples included (base64), so a later
run can compute drift against it without the baseline data.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conveyor.errors import InputError
from conveyor.io.dataset import Dataset

FORMAT = "conveyor.statistics/v1"
MAX_TRACKED_VALUES = 10_000
SAMPLE_SIZE = 8192  # quantile standard error below 0.6% of rank
TOP_K = 20
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
NUMERIC, CATEGORICAL, TEMPORAL = "numeric", "categorical", "temporal"
KIND_OF_TYPE = {"int64": NUMERIC, "float64": NUMERIC, "string": CATEGORICAL, "bool": CATEGORICAL,
                "timestamp": TEMPORAL, "date": TEMPORAL}


class Sample:
    """A uniform sample without replacement of at most `size` values, kept by lowest priority.

    Priorities come from `numpy.random.default_rng(0)` drawn once per row in row order (nulls
    and non-finite rows draw too), so the sample depends only on the rows and their order.
    """

    def __init__(self, size: int = SAMPLE_SIZE, values: np.ndarray | None = None):
        self.size = size
        self.rng = np.random.default_rng(0)
        self.priority = np.empty(0)
        self.values = np.empty(0) if values is None else values

    def update(self, values: np.ndarray, keep: np.ndarray) -> None:
        """Offer a batch: `values` for every row, `keep` marks rows with a finite value."""
        priority = self.rng.random(len(values))[keep]
        values = values[keep]
        if len(self.priority) >= self.size:
            low = priority < self.priority.max()
            priority, values = priority[low], values[low]
        priority = np.concatenate([self.priority, priority])
        values = np.concatenate([self.values, values])
        if len(priority) > self.size:
            kept = np.argpartition(priority, self.size - 1)[: self.size]
            priority, values = priority[kept], values[kept]
        self.priority, self.values = priority, values

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.values, q))

    def pmf(self, edges: Sequence[float]) -> np.ndarray:
        bins = np.searchsorted(np.asarray(edges, dtype=float), self.values, side="right")
        return np.bincount(bins, minlength=len(edges) + 1) / max(len(self.values), 1)

    def encode(self) -> str:
        return base64.b64encode(np.sort(self.values).astype("<f8").tobytes()).decode()

    @classmethod
    def decode(cls, text: str) -> Sample:
        return cls(values=np.frombuffer(base64.b64decode(text), dtype="<f8").copy())


_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def _days(column: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """A date or timestamp column as days since 1970 (float64, NaN for NULL), else None."""
    kind = column.type
    if pa.types.is_date32(kind):
        ints, per_day = column.cast(pa.int32()), 1
    elif pa.types.is_date64(kind):
        ints, per_day = column.cast(pa.int64()), _PER_DAY["ms"]
    elif pa.types.is_timestamp(kind):
        ints, per_day = column.cast(pa.int64()), _PER_DAY[kind.unit]
    else:
        return None
    values = ints.to_numpy(zero_copy_only=False).astype(np.float64)
    if column.null_count:
        values[np.asarray(pc.is_null(column))] = np.nan
    return values / per_day


@dataclasses.dataclass
class ColumnStatistics:
    name: str
    type: str
    count: int = 0  # non-null values (NaN and inf included)
    nulls: int = 0
    # numeric (temporal: `finite`, `mean` and `m2` are those of the day numbers)
    nan: int = 0
    inf: int = 0
    zeros: int | None = 0  # values equal to 0 (None: statistics written before they were counted)
    mean: float | None = None
    m2: float = 0.0
    finite: int = 0
    min: Any = None
    max: Any = None
    sample: Sample | None = None
    # categorical
    values: dict[Any, int] | None = None
    truncated: bool = False

    @property
    def kind(self) -> str:
        return KIND_OF_TYPE[self.type]

    @property
    def rows(self) -> int:
        return self.count + self.nulls

    @property
    def null_fraction(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0

    @property
    def std(self) -> float | None:
        return math.sqrt(self.m2 / self.finite) if self.finite else None

    @property
    def distinct(self) -> int | None:
        return len(self.values) if self.values is not None else None

    def quantile(self, q: float) -> float | None:
        return self.sample.quantile(q) if self.sample is not None and self.finite else None

    def sampled(self) -> Sample:
        """The sample of the finite values, which numeric and temporal statistics keep."""
        if self.sample is None:
            raise ValueError(f"the statistics of column {self.name!r} keep no sample")
        return self.sample

    def pmf(self, edges: Sequence[float]) -> np.ndarray:
        """Share of finite values in each bin: (-inf, e0), [e0, e1), ..., [en, inf)."""
        return self.sampled().pmf(edges)

    def frequencies(self) -> dict[Any, float]:
        values = self.values or {}
        total = sum(values.values())
        return {k: v / total for k, v in values.items()} if total else {}

    def top(self, k: int = TOP_K) -> list[tuple[Any, int]]:
        return sorted((self.values or {}).items(), key=lambda kv: (-kv[1], str(kv[0])))[:k]

    # -- accumulation -------------------------------------------------------------------------

    def update(self, column: pa.Array | pa.ChunkedArray) -> None:
        nulls = column.null_count
        self.nulls += nulls
        self.count += len(column) - nulls
        if self.kind == NUMERIC:
            self._update_numeric(column)
        elif self.kind == CATEGORICAL:
            self._update_categorical(column)
        else:
            self._update_range(column)

    def _update_numeric(self, column) -> None:
        values = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        valid = ~np.asarray(pc.is_null(column))  # NaN is a value, not a null, in Arrow
        nan = np.isnan(values) & valid
        finite = np.isfinite(values) & valid
        self.nan += int(nan.sum())
        self.inf += int((valid & ~finite & ~nan).sum())
        if self.sample is None:
            self.sample = Sample()
        self.sample.update(values, finite)
        x = values[finite]
        if self.zeros is not None:
            self.zeros += int(np.count_nonzero(x == 0))
        if self.type == "int64":  # small integer domains (labels, codes) also get frequencies
            self._update_categorical(column)
        if not len(x):
            return
        self._merge_moments(x)
        lo, hi = float(x.min()), float(x.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def _merge_moments(self, x: np.ndarray) -> None:
        """Merge a batch of finite values into count, mean and m2 (Chan et al.)."""
        n_b, mean_b = len(x), float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        if self.mean is None:
            self.finite, self.mean, self.m2 = n_b, mean_b, m2_b
        else:
            n = self.finite + n_b
            delta = mean_b - self.mean
            self.mean += delta * n_b / n
            self.m2 += m2_b + delta * delta * self.finite * n_b / n
            self.finite = n

    def _update_categorical(self, column) -> None:
        if self.values is None:
            self.values = {}
        if self.truncated:
            counts = pc.value_counts(pc.drop_null(column))
            for item in counts.to_pylist():
                if item["values"] in self.values:
                    self.values[item["values"]] += item["counts"]
            return
        for item in pc.value_counts(pc.drop_null(column)).to_pylist():
            key = item["values"]
            if key in self.values:
                self.values[key] += item["counts"]
            elif len(self.values) < MAX_TRACKED_VALUES:
                self.values[key] = item["counts"]
            else:
                self.truncated = True

    def _update_range(self, column) -> None:
        days = _days(column)
        if days is not None:
            if self.sample is None:
                self.sample = Sample()
            present = ~np.isnan(days)
            self.sample.update(days, present)
            if present.any():
                self._merge_moments(days[present])
        if len(column) == self.nulls and not self.count:
            return
        bounds = pc.min_max(column).as_py()
        if bounds["min"] is None:
            return
        self.min = bounds["min"] if self.min is None else min(self.min, bounds["min"])
        self.max = bounds["max"] if self.max is None else max(self.max, bounds["max"])

    # -- serialization ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "kind": self.kind, "count": self.count,
                               "nulls": self.nulls, "null_fraction": round(self.null_fraction, 6)}
        if self.kind == NUMERIC:
            out.update(nan=self.nan, inf=self.inf, zeros=self.zeros, finite=self.finite,
                       mean=self.mean, m2=self.m2, std=self.std, min=self.min, max=self.max,
                       quantiles={str(q): self.quantile(q) for q in QUANTILES},
                       sample=self.sample.encode() if self.sample is not None else None)
        if self.kind == TEMPORAL:
            out.update(min=None if self.min is None else str(self.min),
                       max=None if self.max is None else str(self.max),
                       finite=self.finite, days_mean=self.mean, days_m2=self.m2,
                       days_std=self.std)
            if self.sample is not None:  # days since 1970 (statistics before it have none)
                out["sample"] = self.sample.encode()
        if self.values is not None:
            out.update(distinct=self.distinct, truncated=self.truncated,
                       values=[[k, v] for k, v in sorted(self.values.items(),
                                                         key=lambda kv: str(kv[0]))])
        return out

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> ColumnStatistics:
        stats = cls(name=name, type=data["type"], count=data["count"], nulls=data["nulls"])
        if stats.kind == NUMERIC:
            stats.nan, stats.inf, stats.finite = data["nan"], data["inf"], data["finite"]
            stats.zeros = data.get("zeros")  # None in statistics written before zeros were
            stats.mean, stats.m2, stats.min, stats.max = (data["mean"], data["m2"],
                                                           data["min"], data["max"])
            if data.get("sample"):
                stats.sample = Sample.decode(data["sample"])
        elif stats.kind == TEMPORAL:
            stats.min, stats.max = data.get("min"), data.get("max")
            # day-number moments (statistics written before them have none: finite stays 0)
            if data.get("days_mean") is not None:
                stats.finite, stats.mean = data["finite"], data["days_mean"]
                stats.m2 = data["days_m2"]
            if data.get("sample"):
                stats.sample = Sample.decode(data["sample"])
        # (statistics written before every tracked int64 value was kept wrote `values: []` for
        # an int64 column of more than 1,000 values: those stay unknown, None)
        if "values" in data and (data["values"] or stats.kind == CATEGORICAL
                                 or not data.get("distinct")):
            stats.values = {k: v for k, v in data["values"]}
            stats.truncated = data.get("truncated", False)
        return stats


@dataclasses.dataclass
class SplitStatistics:
    rows: int
    columns: dict[str, ColumnStatistics]


@dataclasses.dataclass
class DatasetStatistics:
    splits: dict[str, SplitStatistics]
    fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "dataset_fingerprint": self.fingerprint,
                "splits": {name: {"rows": s.rows,
                                  "columns": {c: cs.to_dict() for c, cs in s.columns.items()}}
                           for name, s in self.splits.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "statistics") -> DatasetStatistics:
        if data.get("format") != FORMAT:
            raise InputError(f"{where}: format is {data.get('format')!r}, expected {FORMAT!r}")
        return cls(
            splits={name: SplitStatistics(
                rows=s["rows"],
                columns={c: ColumnStatistics.from_dict(c, cs) for c, cs in s["columns"].items()})
                for name, s in data["splits"].items()},
            fingerprint=data.get("dataset_fingerprint", ""),
        )

    def split(self, name: str | None = None) -> SplitStatistics:
        """The named split, else `train`, else the first."""
        if name is not None and name in self.splits:
            return self.splits[name]
        return self.splits.get("train") or next(iter(self.splits.values()))


ID_DISTINCT_SHARE = 0.95  # distinct values per row above which a column identifies rows
MIN_ID_ROWS = 50


def identifies_rows(s: ColumnStatistics) -> bool:
    """Whether a string or int64 column holds distinct values in (nearly) every row: an id, not a
    feature (transform leaves it out of the features, validate out of drift and charts).
    Integers must also be dense (ids, counters), so a continuous measure stored as integers
    (prices, areas) is not one. Beyond the tracked values, judged by how often those repeat."""
    if s.type not in ("string", "int64") or s.count < MIN_ID_ROWS:
        return False
    if s.truncated:
        repeated = sum(1 for c in (s.values or {}).values() if c > 1)
        unique_like = repeated <= 0.05 * len(s.values or {1: 1})
    else:
        unique_like = (s.distinct or 0) >= ID_DISTINCT_SHARE * s.count
    if not unique_like:
        return False
    if s.type == "int64":
        span = (s.max - s.min + 1) if s.min is not None and s.max is not None else math.inf
        return span <= 2 * s.count
    return True


def id_reason(s: ColumnStatistics) -> str:
    """How the report and the feature spec say why `s` identifies rows."""
    return (f"{'~' if s.truncated else ''}{s.distinct}{'+' if s.truncated else ''} "
            f"distinct values in {s.count} rows: identifies rows")


def split_statistics(batches: Iterable[pa.RecordBatch], schema: pa.Schema,
                     types: Mapping[str, str]) -> SplitStatistics:
    columns = {name: ColumnStatistics(name, types[name]) for name in schema.names}
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        for name, stats in columns.items():
            stats.update(batch.column(name))
    return SplitStatistics(rows, columns)


def compute_statistics(dataset: Dataset, splits: Sequence[str] | None = None,
                       batch_size: int = 256 * 1024) -> DatasetStatistics:
    """Statistics of the named splits (default all) of a Dataset, one streaming pass each."""
    types = {c.name: c.type for c in dataset.info.columns}
    return DatasetStatistics(
        splits={name: split_statistics(dataset.iter_batches(name, batch_size=batch_size),
                                       dataset.schema, types)
                for name in (splits or dataset.splits)},
        fingerprint=dataset.info.fingerprint,
    )
