"""validate on small real datasets (Parquet shards written by the Dataset writer)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support import write_dataset

from conveyor.errors import InputError
from conveyor.local.seed import reference_rows
from conveyor.validate.stats import compute_statistics
from conveyor.validate.validate import ValidationFailed, validate_dataset

ROWS = 4000


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("clean") / "ds", reference_rows(ROWS, seed=0))


@pytest.fixture(scope="module")
def baseline(clean, tmp_path_factory):
    """A first run on the clean data: its inferred suite and statistics."""
    out = tmp_path_factory.mktemp("baseline")
    result = validate_dataset(clean, report_path=out / "report.html",
                              statistics_path=out / "stats", suite_path=out / "suite")
    assert result.passed
    return out


def run(tmp_path, dataset, baseline, **kw):
    return validate_dataset(dataset, report_path=tmp_path / "report.html",
                            statistics_path=tmp_path / "stats", suite_path=tmp_path / "suite",
                            suite=baseline / "suite", baseline_statistics=baseline / "stats",
                            policy="warn", **kw)


def faulty(tmp_path, change):
    table = change(reference_rows(ROWS, seed=1))
    return write_dataset(tmp_path / "faulty", table)


def set_rows(table, column, mask, value):
    arr = table.column(column).combine_chunks()
    new = pc.if_else(pa.array(mask), pa.scalar(value, arr.type), arr)
    return table.set_column(table.schema.get_field_index(column), column, new)


def every(n, rows=ROWS):
    return np.arange(rows) % n == 0


def test_inferred_suite_is_written_readable_and_splits_breakage_from_drift(baseline):
    spec = (baseline / "suite" / "suite.yaml").read_text()
    assert "inferred from this dataset" in spec
    assert "c0:" in spec and "expected:" in spec and "values:" in spec and "nulls:" in spec
    assert "finite: true" in spec and "allowed:" not in spec  # no label_column: all drift
    gx = json.loads((baseline / "suite" / "expectations.json").read_text())
    kinds = {e["type"] for e in gx["expectations"]}
    assert {"expect_column_values_to_be_between", "expect_column_values_to_be_in_set",
            "expect_column_values_to_not_be_null", "expect_table_columns_to_match_set"} <= kinds
    soft = {(e["type"], e["kwargs"]["column"]) for e in gx["expectations"]
            if e["meta"].get("conveyor_severity") == "drift"}
    assert ("expect_column_values_to_be_in_set", "c0") in soft
    assert ("expect_column_values_to_be_between", "f0") in soft
    assert not any(t == "expect_column_values_to_not_be_null" for t, _ in soft)


def test_new_data_from_the_same_source_passes(tmp_path, baseline):
    result = run(tmp_path, write_dataset(tmp_path / "ds", reference_rows(ROWS, seed=1)), baseline)
    assert result.passed, result.failures
    assert 0 < result.metrics()["max_drift"] < 0.1


@pytest.mark.parametrize("name, change, words", [
    ("nulls", lambda t: set_rows(t, "f0", every(20), None),
     ["'f0'", "expect_column_values_to_not_be_null", "values unexpected (", "baseline 0 of"]),
    ("missing column", lambda t: t.drop_columns(["f2"]),
     ["column 'f2': column exists: missing from the dataset"]),
    ("NaN", lambda t: set_rows(t, "f4", every(400), float("nan")),
     ["column 'f4': finite", "NaN"]),
])
def test_each_breakage_fails_and_is_named(tmp_path, baseline, name, change, words):
    result = run(tmp_path, faulty(tmp_path, change), baseline)
    assert not result.passed and result.broken
    text = "\n".join(result.failures)
    for word in words:
        assert word in text, f"{name}: {word!r} not in\n{text}"
    report = (tmp_path / "report.html").read_text()
    assert "FAILED" in report
    verdict = json.loads((tmp_path / "stats" / "validation.json").read_text())
    assert verdict["broken"] is True and verdict["breakage"]


@pytest.mark.parametrize("name, change, column, words", [
    ("out of range", lambda t: set_rows(t, "f1", every(50), 100.0), "f1",
     ["'f1'", "expect_column_values_to_be_between", "100.0", "(drift, not a failure)"]),
    ("new category", lambda t: set_rows(t, "c0", every(25), "zz"), "c0",
     ["'c0'", "expect_column_values_to_be_in_set", "'zz'"]),
    ("shifted distribution", lambda t: t.set_column(3, "f3", pc.add(t.column("f3"), 1.5)), "f3",
     ["drift of 'f3': jensen_shannon", "mean 0.0"]),
])
def test_drift_is_reported_with_figures_and_breaks_nothing(tmp_path, baseline, name, change,
                                                            column, words):
    result = run(tmp_path, faulty(tmp_path, change), baseline)
    assert not result.broken and result.failures == [], result.failures
    text = "\n".join(result.drift_lines)
    for word in words:
        assert word in text, f"{name}: {word!r} not in\n{text}"
    verdict = json.loads((tmp_path / "stats" / "validation.json").read_text())
    assert verdict["broken"] is False and verdict["breakage"] == []
    entries = [c for c in verdict["drift"]["columns"] if c["column"] == column]
    assert entries and all("baseline" in c and "current" in c for c in entries)
    if name == "shifted distribution":
        assert result.drifted and verdict["drift"]["drifted_columns"] == ["f3"]
        (train,) = [c for c in entries if c["split"] == "train"]
        assert train["current"]["mean"] - train["baseline"]["mean"] == pytest.approx(1.5, abs=0.1)
    if name == "new category":
        (train,) = [c for c in entries if c["split"] == "train"]
        assert train["new_values"][0][0] == "zz"
        assert train["new_share"] == pytest.approx(0.04, abs=0.01)
    report = (tmp_path / "report.html").read_text()
    assert "FAILED" not in report and "PASSED" in report


def test_policy_fail_raises_with_every_breakage_after_writing_outputs(tmp_path, baseline):
    bad = faulty(tmp_path, lambda t: set_rows(set_rows(set_rows(t, "f0", every(20), None),
                                                       "c1", every(30), "new"),
                                              "f6", every(40), None))
    with pytest.raises(ValidationFailed) as err:
        validate_dataset(bad, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                         suite_path=tmp_path / "suite", suite=baseline / "suite",
                         baseline_statistics=baseline / "stats")
    message = str(err.value)
    assert "'f0'" in message and "'f6'" in message and "r.html" in message
    assert "'c1'" not in message  # a new category is drift: reported, not a failure
    assert (tmp_path / "r.html").exists() and (tmp_path / "s" / "statistics.json").exists()
    verdict = json.loads((tmp_path / "s" / "validation.json").read_text())
    assert {c["column"] for c in verdict["breakage"]} == {"f0", "f6"}
    assert any(c["column"] == "c1" for c in verdict["drift"]["expectations"])


def test_drift_policy_fail_still_stops_on_drift(tmp_path, baseline):
    shifted = faulty(tmp_path, lambda t: t.set_column(3, "f3", pc.add(t.column("f3"), 1.5)))
    with pytest.raises(ValidationFailed, match="drift of 'f3'"):
        validate_dataset(shifted, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                         suite_path=tmp_path / "suite", suite=baseline / "suite",
                         baseline_statistics=baseline / "stats", drift_policy="fail")


def test_skew_between_train_and_eval(tmp_path):
    table = reference_rows(ROWS)
    index = np.arange(ROWS)
    ds = write_dataset(tmp_path / "ds", table)
    from conveyor.io import Dataset, DatasetWriter

    # Rebuild with eval's f5 shifted: skew, not drift.
    src = Dataset(ds)
    with DatasetWriter(tmp_path / "skewed", src.schema, ["train", "eval"], {}) as w:
        w.write("train", src.read_table("train"))
        ev = src.read_table("eval")
        w.write("eval", ev.set_column(5, "f5", pc.add(ev.column("f5"), 2.0)))
    result = validate_dataset(tmp_path / "skewed", report_path=tmp_path / "r.html",
                              statistics_path=tmp_path / "s", suite_path=tmp_path / "suite",
                              policy="warn", feature_thresholds={"f5": 0.2})
    assert index.size == ROWS
    assert [d.column for d in result.skew if d.exceeded] == ["f5"]
    assert "skew of 'f5'" in "\n".join(result.drift_lines) and not result.failures
    assert "mean " in result.skew_figures["f5"]["summary"]


def test_user_spec_with_every_rule(tmp_path, clean):
    spec = tmp_path / "spec.yaml"
    spec.write_text("""
columns:
  f0: {type: float64, nullable: false, min: -10, max: 10}
  c0: {type: string, allowed: [a0, a1, a2, a3]}
  label: {type: string, unique: true}
table: {min_rows: 10, max_rows: 100, exact_columns: false}
""")
    result = validate_dataset(clean, report_path=tmp_path / "r.html",
                              statistics_path=tmp_path / "s", suite_path=tmp_path / "suite",
                              suite=spec, policy="warn")
    failed = {(c.split, c.column, c.rule.split("(")[0]) for c in result.checks if not c.success}
    assert ("train", "c0", "expect_column_values_to_be_in_set") in failed  # a4 not allowed
    assert ("train", "label", "type is string") in failed
    assert ("train", "label", "expect_column_values_to_be_unique") in failed
    assert ("train", None, "expect_table_row_count_to_be_between") in failed
    assert ("train", "f0", "expect_column_values_to_be_between") not in failed


def test_chunked_run_gives_the_same_verdicts_as_one_chunk(tmp_path, clean, baseline):
    bad = faulty(tmp_path, lambda t: set_rows(t, "f1", every(50), 100.0))
    one = run(tmp_path / "one", bad, baseline)
    many = run(tmp_path / "many", bad, baseline, chunk_rows=500)
    assert [(c.rule, c.success, c.unexpected) for c in one.checks] == \
        [(c.rule, c.success, c.unexpected) for c in many.checks]


def test_gx_suite_json_is_run_as_is(tmp_path, clean):
    gx = tmp_path / "gx.json"
    gx.write_text(json.dumps({"name": "x", "expectations": [
        {"type": "expect_column_mean_to_be_between",
         "kwargs": {"column": "f0", "min_value": 5, "max_value": 6}},
        {"type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "label", "value_set": [0, 1]}}]}))
    result = validate_dataset(clean, report_path=tmp_path / "r.html",
                              statistics_path=tmp_path / "s", suite_path=tmp_path / "suite",
                              suite=gx, policy="warn", chunk_rows=1000)
    outcome = {c.rule.split("(")[0]: c.success for c in result.checks if c.split == "train"}
    assert outcome == {"expect_column_mean_to_be_between": False,
                       "expect_column_values_to_be_in_set": True}
    assert not (tmp_path / "suite" / "suite.yaml").exists()
    assert (tmp_path / "suite" / "expectations.json").exists()


def test_statistics_stream_and_round_trip(clean, tmp_path):
    from conveyor.validate.stats import DatasetStatistics

    stats = compute_statistics(__import__("conveyor.io", fromlist=["Dataset"]).Dataset(clean),
                               batch_size=333)
    train = stats.splits["train"].columns
    table = reference_rows(ROWS)
    assert abs(train["f0"].mean - float(np.mean(table.column("f0")))) < 0.1
    assert train["c0"].distinct == 5 and train["label"].values.keys() == {0, 1}
    again = DatasetStatistics.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert again.splits["train"].columns["f0"].quantile(0.5) == train["f0"].quantile(0.5)


@pytest.mark.parametrize("kwargs, words", [
    ({"suite": "/nonexistent/suite.yaml"}, "cannot read /nonexistent/suite.yaml"),
    ({"splits": ["test"]}, "no split 'test'"),
    ({"label_column": "nope"}, "label_column: 'nope' is not a column"),
    ({"policy": "ignore"}, "policy"),
    ({"feature_thresholds": {"zz": 0.2}}, "no column(s) ['zz']"),
])
def test_bad_parameters_are_named(tmp_path, clean, kwargs, words):
    with pytest.raises(InputError) as err:
        validate_dataset(clean, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                         suite_path=tmp_path / "suite", **kwargs)
    assert words in str(err.value)


@pytest.mark.parametrize("text, words", [
    ("columns:\n  f0: {type: float32}\n", "type 'float32' is not one of"),
    ("columns:\n  f0: {minimum: 1}\n", "unknown rule(s) ['minimum']"),
    ("columns:\n  f0: {min: 5, max: 1}\n", "min 5 > max 1"),
    ("[1, 2", "neither YAML nor JSON"),
    ('{"expectations": [{"type": "expect_nothing_at_all", "kwargs": {}}]}', "is not valid"),
])
def test_malformed_suites_are_named(tmp_path, clean, text, words):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        validate_dataset(clean, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                         suite_path=tmp_path / "suite", suite=path)
    assert words in str(err.value)


def test_all_null_label_is_an_error(tmp_path):
    table = reference_rows(500)
    table = table.set_column(10, "label", pa.nulls(500, pa.int64()))
    ds = write_dataset(tmp_path / "ds", table)
    with pytest.raises(InputError, match="'label' is NULL in all .* rows of split 'train'"):
        validate_dataset(ds, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                         suite_path=tmp_path / "suite", label_column="label")


def test_chunks_are_sized_by_bytes_not_rows(tmp_path, clean):
    """The default chunk holds about CHUNK_BYTES of uncompressed data: a wide table gets fewer
    rows per chunk than a narrow one, within the bounds."""
    from conveyor.io.dataset import Dataset
    from conveyor.validate import checks

    narrow = Dataset(clean)
    per_row = checks.CHUNK_BYTES / checks.chunk_rows_for(narrow, "train")
    assert 20 < per_row < 400  # the reference workload: about 70 bytes a row uncompressed
    assert checks.chunk_rows_for(narrow, "train", chunk_bytes=1) == checks.MIN_CHUNK_ROWS
    assert checks.chunk_rows_for(narrow, "train", chunk_bytes=2**40) == checks.MAX_CHUNK_ROWS
    rows = 3000
    wide = write_dataset(tmp_path / "wide", pa.table(
        {f"text_{i}": pa.array([f"{i}-{j}-" + "x" * 200 for j in range(rows)]) for i in range(20)}))
    wide_rows = checks.chunk_rows_for(Dataset(wide), "train", chunk_bytes=2**26)
    assert wide_rows < checks.chunk_rows_for(narrow, "train", chunk_bytes=2**26)
    assert wide_rows * 20 * 200 == pytest.approx(2**26, rel=0.5)
