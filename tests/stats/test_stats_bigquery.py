"""Statistics computed inside BigQuery (the emulator) against the Parquet rows (the reference).

Tables from `conveyor.local.seed.houses` (mixed-case, keyword, spaced and unicode names, NULLs,
a bool, a DATE, an int-coded category, a zipf-skewed street name, a log-normal area), plus a
TIMESTAMP and a FLOAT64 with zeros, NaN and +-inf added here. Each is ingested for real, then its
statistics come from both paths. Tolerances:
- rows, counts, NULLs, NaN, inf, zeros, finite, min, max, value counts (at most 10,000
  distinct), and the whole value sample of a split with at most 8,192 finite values: equal;
- mean, standard deviation and m2: within 1e-9 relative (summation order);
- quantiles of a split with more finite values than the sample: each BigQuery quantile's rank in
  the split's real values within 0.03 of its level (the sample's standard error is < 0.006);
- a column with more distinct values than tracked: both say truncated and track as many.
"""

import datetime
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conveyor.io import Dataset
from conveyor.local import seed
from conveyor.stats import bigquery as bq_stats
from conveyor.stats.columns import NUMERIC, QUANTILES, SAMPLE_SIZE, _days, compute_statistics
from conveyor.validate.validate import validate_dataset

pytestmark = pytest.mark.local

ROWS = 20_000
RATIOS = {"train": 0.7, "eval": 0.2, "test": 0.1}


def with_more_types(table: pa.Table, seed_: int) -> pa.Table:
    """`table` plus a TIMESTAMP with NULLs and a FLOAT64 with zeros, NaN and +-inf."""
    rng = np.random.default_rng(seed_)
    rows = table.num_rows
    start = datetime.datetime(2023, 1, 1, tzinfo=datetime.UTC)
    listed = [None if rng.random() < 0.05 else start + datetime.timedelta(
        microseconds=int(rng.integers(0, 3 * 10**13))) for _ in range(rows)]
    ratio = rng.standard_t(2, rows) * 3  # heavy tails both ways
    ratio[rng.random(rows) < 0.03] = 0.0
    ratio[rng.random(rows) < 0.01] = np.nan
    ratio[rng.random(rows) < 0.002] = np.inf
    ratio[rng.random(rows) < 0.002] = -np.inf
    table = table.append_column("Listed At", pa.array(listed, pa.timestamp("us", tz="UTC")))
    return table.append_column("Größe/ratio", pa.array(ratio, mask=rng.random(rows) < 0.04))


def drifted(table: pa.Table) -> pa.Table:
    """Area x 1.6 and 60% of the districts (`from`) moved to the centre."""
    rng = np.random.default_rng(3)
    area = pc.multiply(table.column("Area_m2"), 1.6)
    district = table.column("from").combine_chunks()
    moved = pc.if_else(pa.array(rng.random(table.num_rows) < 0.6), "centre", district)
    moved = pc.if_else(pc.is_null(district), pa.scalar(None, pa.string()), moved)
    table = table.set_column(table.schema.get_field_index("Area_m2"), "Area_m2", area)
    return table.set_column(table.schema.get_field_index("from"), "from", moved)


@pytest.fixture(scope="module")
def tables(stack):
    clean = with_more_types(seed.houses(ROWS, seed=11), 11)
    seed.load_table(clean, "bqstats.houses")
    seed.load_table(drifted(with_more_types(seed.houses(ROWS, seed=12), 12)), "bqstats.moved")
    return clean


def ingest(path, **kw):
    from conveyor.ingest.bigquery import ingest_bigquery

    ingest_bigquery(str(path), split_ratios=RATIOS, **kw)
    return Dataset(path)


@pytest.fixture(scope="module")
def houses(tables, tmp_path_factory):
    return ingest(tmp_path_factory.mktemp("bqstats") / "houses", table="bqstats.houses",
                  split_key="Id")


def rank_interval(values: np.ndarray, v: float) -> tuple[float, float]:
    return float(np.mean(values < v)), float(np.mean(values <= v))


def assert_same_statistics(got, want, dataset: Dataset):
    """`got` (BigQuery) against `want` (the rows), within the module docstring's tolerances."""
    assert list(got.splits) == list(want.splits)
    assert got.fingerprint == want.fingerprint
    checked = {"sampled": 0, "exact sample": 0, "truncated": 0}
    for split, w in want.splits.items():
        g = got.splits[split]
        assert g.rows == w.rows == dataset.split(split).rows
        assert list(g.columns) == list(w.columns)
        rows = dataset.read_table(split)
        for name, wc in w.columns.items():
            gc = g.columns[name]
            where = f"{split}.{name}"
            assert (gc.type, gc.count, gc.nulls) == (wc.type, wc.count, wc.nulls), where
            assert (gc.nan, gc.inf, gc.finite) == (wc.nan, wc.inf, wc.finite), where
            assert gc.zeros == wc.zeros, where  # the overview's zeros %
            assert (gc.min, gc.max) == (wc.min, wc.max), where
            for figure in ("mean", "std", "m2"):
                a, b = getattr(gc, figure), getattr(wc, figure)
                assert (a is None) == (b is None), (where, figure)
                if a is not None:
                    assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (where, figure, a, b)
            assert gc.truncated == wc.truncated, where
            if wc.values is None:
                assert gc.values is None, where
            elif wc.truncated:
                assert len(gc.values) == len(wc.values), where
                checked["truncated"] += 1
            else:
                assert gc.values == wc.values, where
            if wc.sample is None:
                assert gc.sample is None or not len(gc.sample.values), where
                continue
            assert len(gc.sample.values) == len(wc.sample.values), where
            if len(wc.sample.values) < SAMPLE_SIZE or (wc.kind == NUMERIC
                                                       and wc.finite == SAMPLE_SIZE):
                assert np.array_equal(np.sort(gc.sample.values), np.sort(wc.sample.values)), where
                checked["exact sample"] += 1
                continue
            if wc.kind != NUMERIC:  # temporal: days since 1970
                x = _days(rows.column(name))
            else:
                x = rows.column(name).to_numpy(zero_copy_only=False).astype(float)
            real = x[np.isfinite(x)]
            for q in QUANTILES:
                lo, hi = rank_interval(real, gc.sample.quantile(q))
                assert lo - 0.03 <= q <= hi + 0.03, (where, q, lo, hi)
            checked["sampled"] += 1
    return checked


def test_bigquery_and_the_rows_give_the_same_statistics(houses):
    got = bq_stats.bigquery_statistics(houses)
    want = compute_statistics(houses)
    checked = assert_same_statistics(got, want, houses)
    # the cases the tolerances are for all occurred: sampled splits, exact ones, truncation
    assert checked["sampled"] >= 5 and checked["exact sample"] >= 10 and checked["truncated"]
    train = got.splits["train"].columns
    assert train["Größe/ratio"].nan and train["Größe/ratio"].inf and train["Größe/ratio"].nulls
    assert train["HasGarden"].values.keys() == {True, False}
    assert isinstance(train["SoldOn"].min, datetime.date)
    assert train["Listed At"].min.tzinfo is not None


def test_a_query_with_parameters_and_a_content_hash_split(tables, tmp_path):
    ds = ingest(tmp_path / "q", query="SELECT * FROM bqstats.houses WHERE Rooms >= @rooms "
                "AND `from` IS NOT NULL", query_parameters={"rooms": 3})
    assert ds.info.source["split"]["key"] == "<row content>"
    got = bq_stats.bigquery_statistics(ds, ["eval", "test"])
    want = compute_statistics(ds, ["eval", "test"])
    assert_same_statistics(got, want, ds)
    assert got.splits["eval"].columns["from"].nulls == 0


def test_the_same_validate_verdict_from_both_paths(tables, houses, tmp_path):
    moved = ingest(tmp_path / "moved", table="bqstats.moved", split_key="Id")

    def run(dataset, out, source, **kw):
        return validate_dataset(dataset.path, report_path=out / "report.html",
                                statistics_path=out / "stats", suite_path=out / "suite",
                                policy="warn", statistics_source=source, **kw)

    clean = {s: run(houses, tmp_path / f"clean-{s}", s) for s in ("rows", "bigquery")}
    assert clean["rows"].statistics_source == "rows"
    assert clean["bigquery"].statistics_source == "bigquery"
    assert clean["rows"].passed and clean["bigquery"].passed
    assert clean["rows"].suite.spec == clean["bigquery"].suite.spec  # inferred alike
    results = {s: run(moved, tmp_path / f"moved-{s}", s,
                      baseline_statistics=tmp_path / "clean-rows" / "stats",
                      suite=tmp_path / "clean-rows" / "suite")
               for s in ("rows", "bigquery")}
    verdicts = {s: r.verdict() for s, r in results.items()}
    for v in verdicts.values():
        assert v["drift"]["drifted"] and not v["passed"]
        assert {"Area_m2", "from"} <= set(v["drift"]["drifted_columns"])
    assert verdicts["rows"]["drift"]["drifted_columns"] == \
        verdicts["bigquery"]["drift"]["drifted_columns"]
    assert verdicts["rows"]["broken"] == verdicts["bigquery"]["broken"]
    assert sorted(c.line() for c in results["rows"].checks) == \
        sorted(c.line() for c in results["bigquery"].checks)
    assert verdicts["bigquery"]["statistics_source"] == "bigquery"
    assert (tmp_path / "moved-bigquery" / "stats" / "statistics.pb").stat().st_size > 0


def test_a_source_that_changed_since_ingest_is_refused_and_auto_reads_the_rows(
        tables, tmp_path, monkeypatch):
    from conveyor import gcp

    seed.load_table(tables.slice(0, 4000), "bqstats.growing")
    ds = ingest(tmp_path / "g", table="bqstats.growing", split_key="Id")
    monkeypatch.setattr(bq_stats, "AUTO_MIN_ROWS", 1000)  # auto takes BigQuery at this size
    out = tmp_path / "auto"
    # ... but not on an emulator, where the aggregate query is the slow path
    on_emulator = validate_dataset(ds.path, report_path=out / "e.html",
                                   statistics_path=out / "e", suite_path=out / "eu", policy="warn")
    assert on_emulator.statistics_source == "rows"
    monkeypatch.setattr(bq_stats, "AUTO_ON_EMULATOR", True)
    result = validate_dataset(ds.path, report_path=out / "r.html", statistics_path=out / "s",
                              suite_path=out / "u", policy="warn")
    assert result.statistics_source == "bigquery"

    client = gcp.bigquery_client()
    client.query("INSERT INTO bqstats.growing (Id, Rooms) VALUES (999999, 3)").result()
    with pytest.raises(bq_stats.SourceChangedError, match="bqstats.growing.*changed since"):
        bq_stats.bigquery_statistics(ds)
    with pytest.raises(bq_stats.SourceChangedError):
        validate_dataset(ds.path, report_path=tmp_path / "x" / "r.html",
                         statistics_path=tmp_path / "x" / "s", suite_path=tmp_path / "x" / "u",
                         statistics_source="bigquery")
    assert not (tmp_path / "x" / "s").exists()
    again = validate_dataset(ds.path, report_path=out / "r2.html", statistics_path=out / "s2",
                             suite_path=out / "u2", policy="warn")
    assert again.statistics_source == "rows"
    assert again.statistics.to_dict() == compute_statistics(ds).to_dict()
