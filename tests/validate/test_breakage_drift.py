"""validate keeps breakage apart from drift, on the Palmer penguins and on awkward real-table
shapes: covariate shift passes with drift reported; broken data fails naming each fault; clean
data never fails by the luck of its split; any column name and type goes through."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conveyor.errors import EmptyDataError
from conveyor.io import Dataset, DatasetWriter
from conveyor.local import seed
from conveyor.validate import stats as st
from conveyor.validate import suite as suites
from conveyor.validate.validate import ValidationFailed, validate_dataset

SPLITS = ("train", "eval", "test")


@pytest.fixture(scope="module")
def penguins() -> pa.Table:
    return seed.penguins()


def write_splits(path: Path, table: pa.Table, rng: np.random.Generator,
                 shares=(0.7, 0.15, 0.15)) -> Path:
    """A Dataset of `table` split at random (not by hash): another split at every seed."""
    index = rng.choice(len(shares), size=table.num_rows, p=list(shares))
    with DatasetWriter(path, table.schema, list(SPLITS[:len(shares)]), {"type": "test"}) as w:
        for i, name in enumerate(SPLITS[:len(shares)]):
            w.write(name, table.filter(pa.array(index == i)))
    return path


def run(out: Path, dataset: Path, **kw):
    return validate_dataset(dataset, report_path=out / "report.html",
                            statistics_path=out / "stats", suite_path=out / "suite", **kw)


def replace(table: pa.Table, name: str, values) -> pa.Table:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    return table.set_column(table.schema.get_field_index(name), name, arr)


@pytest.fixture(scope="module")
def served(penguins, tmp_path_factory):
    """The served version's training run: statistics and inferred suite of penguins."""
    out = tmp_path_factory.mktemp("served")
    result = run(out, write_splits(out / "ds", penguins, np.random.default_rng(1)),
                 label_column="species")
    assert result.passed and not result.broken
    return out


def against(out, dataset, served, **kw):
    """Validate new data the continuous-training way: suite inferred from the served stats."""
    return run(out, dataset, baseline_statistics=served / "stats", label_column="species",
               drift_policy="warn", **kw)


# -- drift is not breakage ----------------------------------------------------------------

def covariate_shift(table: pa.Table, rng: np.random.Generator) -> pa.Table:
    """Heavier, longer-flippered birds, and mostly from Dream: a real shift, nothing broken."""
    for name in ("body_mass_g", "flipper_length_mm"):
        table = replace(table, name, pc.multiply(table.column(name), 1.5))
    island = np.array(table.column("island").to_pylist(), dtype=object)
    island[rng.random(len(island)) < 0.6] = "Dream"
    return replace(table, "island", pa.array(list(island), pa.string()))


def test_covariate_shift_passes_with_drift_reported(tmp_path, penguins, served):
    shifted = covariate_shift(penguins, np.random.default_rng(5))
    ds = write_splits(tmp_path / "ds", shifted, np.random.default_rng(6))
    result = against(tmp_path, ds, served, policy="fail")  # does not raise
    assert not result.broken and result.drifted and not result.passed
    drifted = {d.column for _, d in result.drift if d.exceeded}
    assert {"body_mass_g", "flipper_length_mm", "island"} <= drifted
    assert "bill_length_mm" not in drifted and "species" not in drifted
    verdict = json.loads((tmp_path / "stats" / "validation.json").read_text())
    assert verdict["broken"] is False and verdict["drift"]["drifted"] is True
    mass = [c for c in verdict["drift"]["columns"]
            if c["column"] == "body_mass_g" and c["split"] == "train"][0]
    assert mass["current"]["mean"] / mass["baseline"]["mean"] == pytest.approx(1.5, rel=0.08)
    assert mass["exceeded"] and mass["summary"].startswith("mean ")
    dream = dict(c for c in [c for c in verdict["drift"]["columns"]
                             if c["column"] == "island" and c["split"] == "train"][0]
                 ["current"]["shares"])
    assert dream["Dream"] > 0.6
    # values past the served range are drift findings, not failures
    assert any(c.column == "body_mass_g" and c.drifted for c in result.checks)
    lines = "\n".join(result.drift_lines)
    assert "drift of 'body_mass_g'" in lines and "mean " in lines
    report = (tmp_path / "report.html").read_text()
    assert "DRIFTED" in report and "FAILED" not in report


def test_the_component_task_says_drifted_in_metadata_and_output(tmp_path, penguins, served):
    from kfp import dsl

    from conveyor.validate import tasks

    ds = write_splits(tmp_path / "ds", covariate_shift(penguins, np.random.default_rng(8)),
                      np.random.default_rng(9))
    art = {name: kind(uri=str(tmp_path / name)) for name, kind in (
        ("report", dsl.HTML), ("metrics", dsl.Metrics), ("statistics", dsl.Artifact),
        ("suite", dsl.Artifact), ("baseline", dsl.Artifact))}
    art["baseline"].uri = str(served / "stats")
    output = tasks.validate(dsl.Dataset(uri=str(ds)), art["report"], art["metrics"],
                            art["statistics"], art["suite"],
                            baseline_statistics=art["baseline"], policy="fail",
                            label_column="species")
    assert output is False  # drift: the continuous-training pipeline's Elif retrains
    for name in ("statistics", "report"):
        meta = art[name].metadata
        assert meta["broken"] is False and meta["drifted"] is True
        assert {"body_mass_g", "island"} <= set(meta["drifted_columns"])
    assert art["metrics"].metadata["drifted"] == 1.0 and art["metrics"].metadata["broken"] == 0.0


# -- breakage -----------------------------------------------------------------------------

BREAKAGE = {
    "column gone": (lambda t: t.drop_columns(["bill_depth_mm"]),
                    "column 'bill_depth_mm': column exists: missing"),
    "type changed": (lambda t: replace(t, "body_mass_g", pc.cast(t.column("body_mass_g"),
                                                                 pa.string())),
                     "column 'body_mass_g': type is float64: type is string"),
    "half null": (lambda t: replace(t, "bill_length_mm", pa.array(
        [None if i % 2 else v for i, v in enumerate(t.column("bill_length_mm").to_pylist())],
        pa.float64())), "column 'bill_length_mm': expect_column_values_to_not_be_null"),
    "negative": (lambda t: replace(t, "flipper_length_mm", pa.array(
        [-v if (v is not None and i % 40 == 0) else v
         for i, v in enumerate(t.column("flipper_length_mm").to_pylist())], pa.float64())),
        "column 'flipper_length_mm': expect_column_values_to_be_between(min_value=0"),
}


@pytest.mark.parametrize("fault", sorted(BREAKAGE))
def test_each_breakage_fails_naming_it(tmp_path, penguins, served, fault):
    change, words = BREAKAGE[fault]
    ds = write_splits(tmp_path / "ds", change(penguins), np.random.default_rng(3))
    with pytest.raises(ValidationFailed) as err:
        against(tmp_path, ds, served, policy="fail")
    assert words in str(err.value), str(err.value)
    verdict = json.loads((tmp_path / "stats" / "validation.json").read_text())
    assert verdict["broken"] is True


def test_all_breakage_at_once_is_named_fault_by_fault(tmp_path, penguins, served):
    table = penguins
    for change, _ in BREAKAGE.values():
        table = change(table)
    ds = write_splits(tmp_path / "ds", table, np.random.default_rng(4))
    with pytest.raises(ValidationFailed) as err:
        against(tmp_path, ds, served, policy="fail")
    for _, words in BREAKAGE.values():
        assert words in str(err.value), words


def test_no_rows_in_a_split_is_refused_naming_it(tmp_path, penguins, served):
    """The Dataset contract refuses an empty split before validate reads it (the inferred
    suite's min_rows: 1 is the second guard)."""
    with pytest.raises(EmptyDataError, match=r"split\(s\) \['eval'\] are empty"):
        with DatasetWriter(tmp_path / "ds", penguins.schema, ["train", "eval"], {}) as w:
            w.write("train", penguins)
            w.write("eval", penguins.slice(0, 0))
        against(tmp_path, tmp_path / "ds", served, policy="warn")
    spec = suites.SuiteSpec.from_dict(json.loads(json.dumps(
        suites.load_suite(served / "suite").spec.to_dict())), "served")
    assert spec.min_rows == 1


def test_nan_and_inf_where_the_baseline_had_none_are_breakage(tmp_path, penguins, served):
    bill = penguins.column("bill_depth_mm").to_pylist()
    bill[10], bill[20] = float("nan"), float("inf")
    ds = write_splits(tmp_path / "ds", replace(penguins, "bill_depth_mm", pa.array(bill)),
                      np.random.default_rng(0), shares=(1.0,))
    result = against(tmp_path, ds, served, policy="warn")
    assert result.broken
    assert any("column 'bill_depth_mm': finite" in line and "1 NaN and 1 infinite" in line
               for line in result.breakage), result.breakage


# -- clean data never fails by the luck of its split ----------------------------------------

def test_penguins_with_columns_in_another_order_and_another_split_pass(tmp_path, penguins,
                                                                         served):
    names = list(reversed(penguins.column_names))
    ds = write_splits(tmp_path / "ds", penguins.select(names), np.random.default_rng(77),
                      shares=(0.6, 0.2, 0.2))
    result = against(tmp_path, ds, served, policy="fail")
    assert not result.broken and not result.drifted, result.breakage + result.drift_lines
    # and a suite inferred from its own train split, as the training pipeline does
    own = run(tmp_path / "own", ds, label_column="species", policy="fail")
    assert not own.broken


def breakage_rules_hold(spec: suites.SuiteSpec, split: pa.Table) -> list[str]:
    """The inferred suite's breakage rules, checked on a split's actual values (an oracle in
    plain pyarrow: what the expectations conveyor builds for this split's size must accept)."""
    faults = []
    rows = split.num_rows
    by_column = {}
    for config in suites.to_expectations(spec, rows):
        if (config.meta or {}).get(suites.SEVERITY) == suites.DRIFT:
            continue
        by_column.setdefault(config.kwargs.get("column"), []).append(config)
    for name, configs in by_column.items():
        if name is None:
            continue
        column = split.column(name)
        for c in configs:
            if c.type == "expect_column_values_to_not_be_null":
                nulls = column.null_count
                if rows and (rows - nulls) / rows < c.kwargs.get("mostly", 1.0):
                    faults.append(f"{name}: {nulls} nulls in {rows}")
            elif c.type == "expect_column_values_to_be_between":
                lo = pc.min(column).as_py()
                if lo is not None and lo < c.kwargs["min_value"]:
                    faults.append(f"{name}: min {lo}")
            elif c.type == "expect_column_values_to_be_in_set":
                extra = set(pc.drop_null(column).to_pylist()) - set(c.kwargs["value_set"])
                if extra:
                    faults.append(f"{name}: values {extra}")
            else:
                raise AssertionError(f"unexpected breakage rule {c.type}")
    return faults


def test_200_random_small_splits_of_clean_penguins_break_no_inferred_rule(penguins):
    """200 random splits with 30-60-row eval and test splits: the breakage rules inferred
    from each train split accept every eval and test split (zero false failures)."""
    rng = np.random.default_rng(2026)
    types = {f.name: ("float64" if pa.types.is_floating(f.type) else
                      "int64" if pa.types.is_integer(f.type) else "string")
             for f in penguins.schema}
    sizes, faults = [], []
    for trial in range(200):
        order = rng.permutation(penguins.num_rows)
        n_eval, n_test = int(rng.integers(30, 61)), int(rng.integers(30, 61))
        parts = {"eval": order[:n_eval], "test": order[n_eval:n_eval + n_test],
                 "train": order[n_eval + n_test:]}
        split = {k: penguins.take(pa.array(v)) for k, v in parts.items()}
        train = st.split_statistics(split["train"].to_batches(), penguins.schema, types)
        spec = suites.infer_spec(train, strict_values=("species",))
        for name in ("eval", "test"):
            sizes.append(split[name].num_rows)
            faults += [f"trial {trial} {name}: {f}" for f in breakage_rules_hold(spec, split[name])]
    assert min(sizes) >= 30 and max(sizes) <= 60
    assert faults == []


@pytest.mark.parametrize("seed_", range(6))
def test_small_random_splits_pass_the_whole_validate(tmp_path, penguins, seed_):
    """The same through validate itself (statistics, GX, drift, report), 6 random splits of
    ~35-50-row eval/test splits: nothing broken under policy fail."""
    ds = write_splits(tmp_path / "ds", penguins, np.random.default_rng(100 + seed_),
                      shares=(0.72, 0.14, 0.14))
    result = run(tmp_path, ds, label_column="species", policy="fail")
    assert not result.broken
    assert all(c.success for c in result.checks if c.severity == "breakage")


def test_one_null_in_63_rows_passes_and_half_null_fails():
    spec = suites.SuiteSpec({"x": suites.ColumnRules(type="float64", nulls=(2, 275))})
    (rule,) = [c for c in suites.to_expectations(spec, 63)
               if c.type == "expect_column_values_to_not_be_null"]
    limit = round(63 * (1 - rule.kwargs["mostly"]), 6)
    assert 1 <= limit < 31
    # a column never null in a large baseline still allows a stray NULL in a small split
    assert suites.null_limit((0, 275), 63, 0.001) >= 1
    assert suites.null_limit((0, 10_000_000), 10_000_000, 0.001) < 100


def test_binomial_limit_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for n, p in [(63, 0.0466), (30, 0.2), (1000, 0.01), (5000, 0.5), (40_000, 0.3), (7, 0.9),
                 (2_000_000, 0.25)]:
        k = suites.binomial_limit(n, p, 0.001)
        assert scipy_stats.binom.sf(k, n, p) < 0.001  # P(X > k) is improbable
        if k > 0 and n * p <= 200_000:
            assert scipy_stats.binom.sf(k - 1, n, p) >= 0.001  # and k is the smallest such
        else:
            assert scipy_stats.binom.sf(k - 3, n, p) >= 0.001  # approximated: within 2
    lo = scipy_stats.beta.ppf(0.999, 3, 273)  # Clopper-Pearson, a cousin of Wilson
    assert suites.wilson_upper(2, 275, 0.001) == pytest.approx(lo, rel=0.35)


# -- natural domains -----------------------------------------------------------------------

def test_inferred_bounds_keep_natural_domains():
    table = pa.table({
        "mass": pa.array([0.5, 3.0, 7.0, None], pa.float64()),
        "count": pa.array([0, 1, 5, 3], pa.int64()),
        "share": pa.array([0.0, 0.2, 0.95, 1.0], pa.float64()),
        "delta": pa.array([-1.5, 0.0, 2.5, 1.0], pa.float64()),
    })
    types = {"mass": "float64", "count": "int64", "share": "float64", "delta": "float64"}
    spec = suites.infer_spec(st.split_statistics(table.to_batches(), table.schema, types),
                             margin=0.5)
    mass, count, share, delta = (spec.columns[n] for n in ("mass", "count", "share", "delta"))
    assert mass.min == 0 and mass.expected_min == 0 and mass.expected_max > 7
    assert count.min == 0 and count.expected_min == 0
    assert isinstance(count.expected_max, int) and count.expected_max >= 5
    assert share.expected_min == 0 and share.expected_max == 1
    assert delta.min is None and delta.expected_min < -1.5
    assert mass.nulls == (1, 4) and mass.finite
    again = suites.SuiteSpec.from_dict(spec.to_dict(), "round trip")
    assert again.to_dict() == spec.to_dict()


# -- any column name, any type ---------------------------------------------------------------

NAMES = ["Species", "from", "class", "1st_visit", "a-b", "km/h", "with space", "prix €",
         "ünïcödé", "SELECT", "yes"]


def awkward_table(rows: int, rng: np.random.Generator) -> pa.Table:
    def nulls(values, share=0.1):
        mask = rng.random(rows) < share
        return [None if m else v for v, m in zip(values, mask)]

    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    columns = {
        "Species": pa.array(nulls(rng.choice(["Adélie", "Gentoo", "Chin strap"], rows).tolist(),
                                  0.0), pa.string()),
        "from": pa.array(nulls(rng.integers(0, 100, rows).tolist()), pa.int64()),
        "class": pa.array(nulls(rng.normal(5, 2, rows).tolist()), pa.float64()),
        "1st_visit": pa.array(nulls([dt.date(2024, 1, 1) + dt.timedelta(days=int(d))
                                     for d in rng.integers(0, 365, rows)]), pa.date32()),
        "a-b": pa.array(nulls(rng.random(rows).tolist()), pa.float64()),
        "km/h": pa.array(nulls((rng.random(rows) < 0.3).tolist()), pa.bool_()),
        "with space": pa.array(nulls([start + dt.timedelta(minutes=int(m))
                                      for m in rng.integers(0, 10**5, rows)]),
                               pa.timestamp("us", tz="UTC")),
        "prix €": pa.array(nulls(rng.gamma(2.0, 10.0, rows).round(2).tolist()), pa.float64()),
        "ünïcödé": pa.array(nulls(rng.choice(["ja", "nein", "🙂"], rows).tolist()), pa.string()),
        "SELECT": pa.array([None] * rows, pa.float64()),  # all NULL
        "yes": pa.array(nulls(rng.choice(["no", "on", "null", "1"], rows).tolist()), pa.string()),
    }
    return pa.table(columns)


def test_awkward_names_and_every_type_go_through_validate(tmp_path):
    rng = np.random.default_rng(11)
    first = write_splits(tmp_path / "first", awkward_table(3000, rng), rng)
    base = run(tmp_path / "base", first, label_column="Species", policy="fail")
    assert not base.broken
    suite_text = (tmp_path / "base" / "suite" / "suite.yaml").read_text()
    loaded = suites.load_suite(tmp_path / "base" / "suite")
    assert list(loaded.spec.columns) == NAMES  # names survive YAML (yes/on/null/1 included)
    assert "1st_visit" in suite_text
    # the second run: the written suite and statistics as inputs, data a little shifted
    table = awkward_table(2000, rng)
    table = replace(table, "prix €", pc.multiply(table.column("prix €"), 1.6))
    second = write_splits(tmp_path / "second", table, rng)
    result = run(tmp_path / "run", second, suite=tmp_path / "base" / "suite",
                 baseline_statistics=tmp_path / "base" / "stats", label_column="Species",
                 policy="fail")
    assert not result.broken, result.breakage
    assert "prix €" in {d.column for _, d in result.drift if d.exceeded}
    verdict = json.loads((tmp_path / "run" / "stats" / "validation.json").read_text())
    assert "prix €" in verdict["drift"]["drifted_columns"]
    stats_json = json.loads((tmp_path / "run" / "stats" / "statistics.json").read_text())
    assert set(stats_json["splits"]["train"]["columns"]) == set(NAMES)
    html = (tmp_path / "run" / "report.html").read_text()
    for name in ("prix €", "km/h", "with space", "ünïcödé"):
        assert name in html
    # breakage on these names is named too: a NULL flood in `from`, a negative `prix €`
    values = table.column("prix €").to_pylist()
    values[0] = -3.0
    broken = replace(replace(table, "from", pa.nulls(table.num_rows, pa.int64())), "prix €",
                     pa.array(values, pa.float64()))
    with pytest.raises(ValidationFailed) as err:
        run(tmp_path / "broken", write_splits(tmp_path / "b", broken, rng),
            suite=tmp_path / "base" / "suite", baseline_statistics=tmp_path / "base" / "stats")
    assert "column 'from': expect_column_values_to_not_be_null" in str(err.value)
    assert "column 'prix €': expect_column_values_to_be_between(min_value=0" in str(err.value)
    assert Dataset(second).splits  # the inputs are untouched
