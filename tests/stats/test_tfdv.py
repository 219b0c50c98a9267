"""conveyor's statistics as TFDV's DatasetFeatureStatisticsList (tensorflow-metadata): the proto
round-trips (bytes, parse, equal), holds one dataset per split and one feature per column, with
the counts, bounds and top values of conveyor's own statistics; validate writes it."""

import datetime
import math

import numpy as np
import pyarrow as pa
import pytest
from support import write_dataset
from tensorflow_metadata.proto.v0 import statistics_pb2

from conveyor.errors import InputError
from conveyor.io.dataset import Dataset
from conveyor.stats import tfdv
from conveyor.stats.columns import DatasetStatistics, compute_statistics
from conveyor.validate.validate import validate_dataset

ROWS = 3000
FNS = statistics_pb2.FeatureNameStatistics


def awkward_table(rows=ROWS, seed=7):
    """Mixed-case, keyword and unicode names; nulls, NaN and inf; a skewed float, a bool, a
    date, a timestamp, an all-NULL string column and a string domain with a long tail."""
    rng = np.random.default_rng(seed)
    null = rng.random(rows) < 0.08
    price = rng.lognormal(3, 1.2, rows)
    price[rng.random(rows) < 0.01] = np.nan
    price[:3] = [np.inf, -np.inf, np.nan]
    words = np.array(["Ünïcode", "from", "", "a b", "ß"] + [f"w{i}" for i in range(60)])
    cats = words[np.minimum(rng.zipf(1.6, rows) - 1, len(words) - 1)]
    epoch = datetime.date(2020, 1, 1)
    return pa.table({
        "ShopID": pa.array(np.arange(rows), pa.int64()),
        "from": pa.array(np.where(null, None, price).tolist(), pa.float64()),
        "Größe m²": pa.array(rng.integers(-5, 6, rows), pa.int64()),
        "ünïcödé": pa.array([None if n else c for n, c in zip(rng.random(rows) < 0.1, cats)],
                            pa.string()),
        "IsActive": pa.array([None if n else bool(b) for n, b in
                              zip(null[::-1], rng.random(rows) < 0.3)], pa.bool_()),
        "Opened": pa.array([None if n else epoch + datetime.timedelta(days=int(d)) for n, d in
                            zip(np.roll(null, 5), rng.integers(0, 2000, rows))], pa.date32()),
        "seen at": pa.array([datetime.datetime(2024, 3, 1, tzinfo=datetime.UTC)
                             + datetime.timedelta(seconds=int(s))
                             for s in rng.integers(0, 10**8, rows)],
                            pa.timestamp("us", tz="UTC")),
        "SELECT": pa.array([None] * rows, pa.string()),
    })


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfdv") / "ds"
    return write_dataset(path, awkward_table(), {"train": 0.7, "eval": 0.2, "test": 0.1},
                         key="ShopID")


@pytest.fixture(scope="module")
def statistics(dataset):
    return compute_statistics(Dataset(dataset))


def features(ds):
    return {tuple(f.path.step): f for f in ds.features}


def custom(feature, name):
    found = [c for c in feature.custom_stats if c.name == name]
    assert len(found) == 1, (feature.path, name)
    return found[0]


def test_round_trip_through_bytes_is_equal(statistics):
    proto = tfdv.to_proto(statistics)
    data = proto.SerializeToString(deterministic=True)
    back = statistics_pb2.DatasetFeatureStatisticsList.FromString(data)
    assert back == proto
    assert back.SerializeToString(deterministic=True) == data
    # the same statistics, read back from their JSON (temporal bounds as text), give the same proto
    again = tfdv.to_proto(DatasetStatistics.from_dict(statistics.to_dict()))
    assert again == proto


def test_one_dataset_per_split_and_one_feature_per_column(dataset, statistics):
    proto = tfdv.to_proto(statistics)
    info = Dataset(dataset).info
    assert [d.name for d in proto.datasets] == ["train", "eval", "test"]
    assert sum(d.num_examples for d in proto.datasets) == ROWS
    for ds in proto.datasets:
        assert ds.num_examples == info.splits[ds.name].rows
        got = features(ds)
        assert list(got) == [(c.name,) for c in info.columns]  # names exact, in column order
        for f in got.values():
            common = (f.num_stats if f.HasField("num_stats") else f.string_stats).common_stats
            assert common.num_non_missing + common.num_missing == ds.num_examples
        types = {k[0]: FNS.Type.Name(f.type) for k, f in got.items()}
        assert types == {"ShopID": "INT", "from": "FLOAT", "Größe m²": "INT",
                         "ünïcödé": "STRING", "IsActive": "STRING", "Opened": "INT",
                         "seen at": "FLOAT", "SELECT": "STRING"}
        assert {k[0]: custom(f, "conveyor_type").str for k, f in got.items()} == {
            c.name: c.type for c in info.columns}


def test_values_are_conveyors_figures(statistics):
    proto = tfdv.to_proto(statistics)
    for ds in proto.datasets:
        split = statistics.splits[ds.name]
        got = features(ds)
        price, s = got[("from",)].num_stats, split.columns["from"]
        assert price.common_stats.num_missing == s.nulls > 0
        assert price.mean == pytest.approx(s.mean) and price.std_dev == pytest.approx(s.std)
        assert (price.min, price.max) == (s.min, s.max) and math.isfinite(price.max)
        assert price.min <= price.median <= price.max
        kinds = {statistics_pb2.Histogram.HistogramType.Name(h.type): h for h in price.histograms}
        assert set(kinds) == {"STANDARD", "QUANTILES"}
        for h in kinds.values():
            assert h.num_nan == s.nan > 0
            assert sum(b.sample_count for b in h.buckets) == pytest.approx(s.finite)
            assert h.buckets[0].low_value == s.min and h.buckets[-1].high_value == s.max
        ints, s = got[("Größe m²",)].num_stats, split.columns["Größe m²"]
        assert ints.num_zeros == s.values[0] > 0
        words, s = got[("ünïcödé",)].string_stats, split.columns["ünïcödé"]
        assert words.unique == len(s.values)
        assert [(v.value, v.frequency) for v in words.top_values] == [
            (k, float(n)) for k, n in s.top(20)]
        assert len(words.rank_histogram.buckets) == len(s.values)
        assert custom(got[("ünïcödé",)], "conveyor_truncated").num == 0
        flags, s = got[("IsActive",)].string_stats, split.columns["IsActive"]
        assert {v.value: v.frequency for v in flags.top_values} == {
            "true": s.values[True], "false": s.values[False]}
        opened, s = got[("Opened",)].num_stats, split.columns["Opened"]
        assert opened.min == (s.min - datetime.date(1970, 1, 1)).days
        assert opened.max == (s.max - datetime.date(1970, 1, 1)).days
        assert custom(got[("Opened",)], "conveyor_unit").str == tfdv.DAYS
        assert opened.mean == s.mean and opened.std_dev == pytest.approx(s.std)  # exact moments
        seen, s = got[("seen at",)].num_stats, split.columns["seen at"]
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        assert seen.min == pytest.approx((s.min - epoch).total_seconds() / 86400, abs=1e-9)
        empty = got[("SELECT",)].string_stats
        assert empty.common_stats.num_non_missing == 0 and not empty.top_values


def test_validate_writes_statistics_pb_beside_statistics_json(dataset, tmp_path):
    result = validate_dataset(dataset, report_path=tmp_path / "report.html",
                              statistics_path=tmp_path / "stats", suite_path=tmp_path / "suite",
                              policy="warn", statistics_source="rows")
    assert (tmp_path / "stats" / "statistics.json").exists()
    written = tfdv.read(tmp_path / "stats")
    assert written == tfdv.to_proto(result.statistics)
    assert not list((tmp_path / "stats").glob(".*partial"))
    assert result.statistics_source == "rows"


def test_a_file_that_is_not_the_proto_is_named(tmp_path):
    bad = tmp_path / "statistics.pb"
    bad.write_bytes(b"\xff\xfe not a proto at all")
    with pytest.raises(InputError, match="statistics.pb"):
        tfdv.read(bad)
    with pytest.raises(InputError, match="cannot read"):
        tfdv.read(tmp_path / "nope.pb")


def test_statistics_source_must_be_known(dataset, tmp_path):
    with pytest.raises(InputError, match="statistics_source: 'parquet' is not one of"):
        validate_dataset(dataset, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                         suite_path=tmp_path / "u", statistics_source="parquet")
    assert not (tmp_path / "s").exists()


def test_bigquery_statistics_need_a_dataset_from_bigquery(dataset, tmp_path):
    with pytest.raises(InputError, match="needs a Dataset ingested from BigQuery"):
        validate_dataset(dataset, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                         suite_path=tmp_path / "u", statistics_source="bigquery")
    assert not (tmp_path / "s").exists()
