"""conveyor's statistics as TFDV's `DatasetFeatureStatisticsList` (tensorflow-metadata).

One `DatasetFeatureStatistics` per split (`name` = the split, `num_examples` = its rows), one
`FeatureNameStatistics` per column, identified by `path` (as TFDV writes them), so Facets
Overview, `tfdv.load_statistics`/`validate_statistics` and BigQuery ML's `ML.TFDV_VALIDATE` can
read what validate computed. Written by validate as `statistics.pb` (binary proto) beside
`statistics.json`, which stays conveyor's own (its value samples feed drift).

How conveyor's columns map (TFDV has no BOOL, DATE or TIMESTAMP):
- int64 -> INT, float64 -> FLOAT: `num_stats`: mean, std_dev (population), min, max over the
  finite values; median and two histograms read from the value sample: QUANTILES (10 equal-mass
  buckets) and STANDARD (10 equal-width buckets over [min, max], counts scaled to the finite
  count), `num_nan` = NaN count; `num_zeros` when it is known exactly (counted by the pass, or an
  int64 whose value counts are complete);
- string -> STRING, bool -> STRING ('true'/'false', as BigQuery casts them): `string_stats`:
  unique (tracked distinct values), top values (20), a rank histogram (up to 1000 values),
  avg_length; a custom statistic `conveyor_truncated` = 1 when more values existed than tracked;
- date -> INT and timestamp -> FLOAT, in days since 1970-01-01 (custom statistic
  `conveyor_unit`): min and max exact, mean/std/median/histograms from the value sample.
`common_stats` of every feature: `num_non_missing` (values, NaN included, as TFDV counts them),
`num_missing` (NULLs), one value per example.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from conveyor.stats.columns import CATEGORICAL, NUMERIC, TOP_K, ColumnStatistics, DatasetStatistics

STATISTICS_PB = "statistics.pb"
HISTOGRAM_BUCKETS = 10
RANK_BUCKETS = 1000
DAYS = "days since 1970-01-01"


def _pb():
    from tensorflow_metadata.proto.v0 import statistics_pb2

    return statistics_pb2


def _days(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):  # statistics read back from JSON keep temporal bounds as text
        value = (datetime.date.fromisoformat(value) if len(value) <= 10
                 else datetime.datetime.fromisoformat(value))
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        return (value - epoch) / datetime.timedelta(days=1)
    return float((value - datetime.date(1970, 1, 1)).days)


def _common(common, stats: ColumnStatistics) -> None:
    common.num_non_missing = stats.count
    common.num_missing = stats.nulls
    if stats.count:
        common.min_num_values = common.max_num_values = 1
        common.avg_num_values = 1.0
        common.tot_num_values = stats.count


def _histograms(num, values: np.ndarray, lo: float, hi: float, total: float, nan: int) -> None:
    pb = _pb()
    if not len(values):
        return
    standard = num.histograms.add(type=pb.Histogram.STANDARD, num_nan=nan)
    edges = np.linspace(lo, hi, HISTOGRAM_BUCKETS + 1) if hi > lo else np.array([lo, hi])
    counts = np.histogram(values, bins=edges)[0] if hi > lo else np.array([len(values)])
    for a, b, c in zip(edges[:-1], edges[1:], counts):
        standard.buckets.add(low_value=float(a), high_value=float(b),
                             sample_count=float(c) * total / len(values))
    quantiles = num.histograms.add(type=pb.Histogram.QUANTILES, num_nan=nan)
    bounds = np.quantile(values, np.linspace(0, 1, HISTOGRAM_BUCKETS + 1))
    bounds[0], bounds[-1] = lo, hi
    for a, b in zip(bounds[:-1], bounds[1:]):
        quantiles.buckets.add(low_value=float(a), high_value=float(b),
                              sample_count=total / HISTOGRAM_BUCKETS)


def _numeric(feature, stats: ColumnStatistics) -> None:
    num = feature.num_stats
    _common(num.common_stats, stats)
    sample = stats.sample.values if stats.sample is not None else np.empty(0)
    if stats.kind == NUMERIC:
        if stats.finite and stats.mean is not None and stats.std is not None:
            num.mean, num.std_dev = float(stats.mean), float(stats.std)
            num.min, num.max = float(stats.min), float(stats.max)
            num.median = float(np.quantile(sample, 0.5)) if len(sample) else num.mean
            _histograms(num, sample, num.min, num.max, float(stats.finite), stats.nan)
        if stats.zeros is not None:
            num.num_zeros = stats.zeros
        elif stats.type == "int64" and stats.values is not None and not stats.truncated:
            num.num_zeros = int(stats.values.get(0, 0))
        return
    # temporal: days since 1970
    feature.custom_stats.add(name="conveyor_unit", str=DAYS)
    lo, hi = _days(stats.min), _days(stats.max)
    if lo is None or hi is None or not len(sample):
        return
    num.min, num.max = lo, hi
    if stats.mean is not None and stats.std is not None:  # exact moments of the day numbers
        num.mean, num.std_dev = float(stats.mean), float(stats.std)
    else:  # statistics written before conveyor kept them
        num.mean, num.std_dev = float(sample.mean()), float(sample.std())
    num.median = float(np.quantile(sample, 0.5))
    _histograms(num, sample, lo, hi, float(stats.count), 0)


def _label(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _string(feature, stats: ColumnStatistics) -> None:
    string = feature.string_stats
    _common(string.common_stats, stats)
    values = stats.values or {}
    string.unique = len(values)
    ranked = stats.top(max(RANK_BUCKETS, TOP_K))
    for value, count in ranked[:TOP_K]:
        string.top_values.add(value=_label(value), frequency=float(count))
    for rank, (value, count) in enumerate(ranked[:RANK_BUCKETS]):
        string.rank_histogram.buckets.add(low_rank=rank, high_rank=rank, label=_label(value),
                                          sample_count=float(count))
    total = sum(values.values())
    if total:
        string.avg_length = float(sum(len(_label(v)) * n for v, n in values.items()) / total)
    feature.custom_stats.add(name="conveyor_truncated", num=float(bool(stats.truncated)))


_TYPES = {"int64": "INT", "float64": "FLOAT", "string": "STRING", "bool": "STRING",
          "date": "INT", "timestamp": "FLOAT"}


def to_proto(statistics: DatasetStatistics):
    """The `DatasetFeatureStatisticsList` of conveyor's statistics: one dataset per split."""
    pb = _pb()
    out = pb.DatasetFeatureStatisticsList()
    for split, s in statistics.splits.items():
        dataset = out.datasets.add(name=split, num_examples=s.rows)
        for name, stats in s.columns.items():
            feature = dataset.features.add(type=getattr(pb.FeatureNameStatistics,
                                                        _TYPES[stats.type]))
            feature.path.step.append(name)
            feature.custom_stats.add(name="conveyor_type", str=stats.type)
            if stats.kind == CATEGORICAL:
                _string(feature, stats)
            else:
                _numeric(feature, stats)
    return out


def write(statistics: DatasetStatistics, path: str | Path) -> Path:
    """Write `statistics.pb` (binary `DatasetFeatureStatisticsList`) at `path` (a file, or a
    folder to put it in), whole: written beside its name, then renamed."""
    path = Path(path)
    if path.is_dir():
        path = path / STATISTICS_PB
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(to_proto(statistics).SerializeToString(deterministic=True))
    partial.replace(path)
    return path


def read(path: str | Path):
    """A `DatasetFeatureStatisticsList` read from a binary file (or a folder holding
    `statistics.pb`); an `InputError` naming the file when it is not one."""
    from google.protobuf.message import DecodeError

    from conveyor.errors import InputError

    path = Path(path)
    if path.is_dir():
        path = path / STATISTICS_PB
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"statistics: cannot read {path}: {exc.strerror or exc}") from None
    out = _pb().DatasetFeatureStatisticsList()
    try:
        out.ParseFromString(data)
    except DecodeError as exc:
        raise InputError(f"statistics: {path} is not a binary DatasetFeatureStatisticsList: "
                         f"{exc}") from None
    return out
