"""Split luck (issue 25, classes 3 and 7): the verdict on a table must not depend on the split
one row hashes into. Each case writes two Datasets of the same rows that differ only in the
split key of one row, so that it lands in train in one and in eval in the other (ingest's own
hash rule, `support.key_landing_in`), and asserts one verdict for both: validate's, and the
classes transform fits.

Before: one row of a new species failed validate (`expect_column_values_to_be_in_set`) in eval
and went through in train; one body mass of 1e30 went through validate in train (and was
trained on and blessed) and stopped training with a misleading "learning rate too high" in eval.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support import key_landing_in, write_dataset

from conveyor.errors import SchemaError
from conveyor.io import Dataset, DatasetWriter
from conveyor.local import seed
from conveyor.transform.fit import fit
from conveyor.transform.propose import MAX_CATEGORY_CODES, propose_spec
from conveyor.validate import labels
from conveyor.validate import suite as suites
from conveyor.validate.validate import ValidationFailed, validate_dataset

WHERE = ("train", "eval")


def keyed(table: pa.Table) -> pa.Table:
    return table.append_column("key", pa.array(range(table.num_rows), pa.int64()))


def with_row(table: pa.Table, where: str, **values) -> pa.Table:
    """`table` (keyed) and one more row: a copy of its first row with `values`, whose key
    lands in split `where`. Only that key differs between the two placements."""
    row = table.slice(0, 1).to_pylist()[0] | values
    row["key"] = key_landing_in(where, start=10_000)
    return pa.concat_tables([table, pa.Table.from_pylist([row], schema=table.schema)])


def dataset(path: Path, table: pa.Table) -> Path:
    return write_dataset(path, table, key="key")


def run(out: Path, data: Path, label: str, **kw):
    return validate_dataset(data, report_path=out / "report.html", statistics_path=out / "stats",
                            suite_path=out / "suite", label_column=label, **kw)


def split_of(data: Path, column: str, value) -> str:
    ds = Dataset(data)
    return next(s for s in ds.splits
                if value in ds.read_table(s, [column]).column(0).to_pylist())


@pytest.fixture(scope="module")
def penguins() -> pa.Table:
    return keyed(seed.penguins())


def test_one_row_of_a_new_class_gets_one_verdict_in_train_and_in_eval(penguins, tmp_path):
    """One Emperor among the penguins: a warning naming it wherever it lands, never breakage;
    the model gets an output for it both ways (the task and the classes do not move)."""
    verdicts, fitted = [], []
    for where in WHERE:
        data = dataset(tmp_path / where / "ds", with_row(penguins, where, species="Emperor"))
        assert split_of(data, "species", "Emperor") == where
        result = run(tmp_path / where, data, "species", policy="fail")  # before: eval raised
        (warning,) = result.warnings
        assert "'Emperor' 1 row(s)" in warning and "too few rows to learn or judge" in warning
        verdicts.append((result.passed, result.broken, result.drifted, len(result.warnings)))
        # the suite written for the next run allows the classes of every split, both ways
        written = suites.load_suite(tmp_path / where / "suite" / suites.SPEC_FILE)
        assert written.spec.columns["species"].allowed == ["Adelie", "Chinstrap", "Emperor",
                                                           "Gentoo"]
        types = {c.name: c.type for c in Dataset(data).info.columns}
        spec = propose_spec(types, "species", {"a": 1, "b": 1, "c": 1, "d": 1})
        fitted.append(fit(Dataset(data), spec))
    assert verdicts[0] == verdicts[1] == (True, False, False, 1)
    assert fitted[0].label_classes == fitted[1].label_classes == \
        ["Adelie", "Chinstrap", "Emperor", "Gentoo"]
    # in train, one row to learn from; in eval, none: the model learns never to answer it
    assert fitted[0].label_counts[2] == 1 and fitted[1].label_counts[2] == 0


def test_the_task_proposed_does_not_depend_on_where_a_third_class_lands(penguins, tmp_path):
    """A two-class label and one row of a third: multiclass both ways (before: binary when the
    row hashed into eval, then refused)."""
    from kfp import dsl

    from conveyor.transform import tasks

    two = penguins.filter(pc.not_equal(penguins.column("species"), "Chinstrap"))
    for where in WHERE:
        data = dataset(tmp_path / where / "ds", with_row(two, where, species="Chinstrap"))
        run(tmp_path / where, data, "species", policy="fail")
        out = dsl.Artifact(uri=str(tmp_path / where / "pre"))
        done = tasks.transform(dsl.Dataset(uri=str(data)), out, label="species",
                               statistics=str(tmp_path / where / "stats"))
        assert done.spec.task == "multiclass" and len(done.label_classes) == 3, where


def test_a_class_no_random_split_leaves_out_of_train_is_breakage_naming_the_odds(penguins,
                                                                                  tmp_path):
    """All 68 Chinstraps in eval is not the split's luck: broken, with the probability, and
    transform refuses it as before."""
    chinstrap = pc.equal(penguins.column("species"), "Chinstrap")
    path = tmp_path / "ds"
    with DatasetWriter(path, penguins.schema, ["train", "eval"], {"type": "test"}) as w:
        w.write("train", penguins.filter(pc.invert(chinstrap)))
        w.write("eval", penguins.filter(chinstrap))
    with pytest.raises(ValidationFailed) as failed:
        run(tmp_path, path, "species", policy="fail")
    message = str(failed.value)
    assert "[eval] column 'species': label classes are in split 'train'" in message
    assert "'Chinstrap': 68 rows, none in 'train' (train 0, eval 68)" in message
    assert "with probability 1.3e-48" in message and "split by another key" in message
    types = {c.name: c.type for c in Dataset(path).info.columns}
    with pytest.raises(SchemaError, match=r"split 'eval' has label class\(es\) \['Chinstrap'\] "
                                          r"of 'species' not seen in 'train'"):
        fit(Dataset(path), propose_spec(types, "species", {"a": 1, "b": 1, "c": 1}))


@pytest.mark.parametrize("value, words", [
    (1e30, ["1e+30 is ", "e+26 interquartile ranges (", ") from the median (",
            "squared-error metric (RMSE, R2) would measure this value alone"]),
    (-1e30, ["-1e+30 is ", "e+26 interquartile ranges ("]),
    (1e300, ["1e+300 is beyond float32's range"]),
    (math.inf, ["0 NaN and 1 infinite"]),
    (math.nan, ["1 NaN and 0 infinite"]),
])
def test_an_absurd_regression_label_is_broken_wherever_it_lands(penguins, tmp_path, value,
                                                                 words):
    verdicts = []
    for where in WHERE:
        data = dataset(tmp_path / where / "ds", with_row(penguins, where, body_mass_g=value))
        with pytest.raises(ValidationFailed) as failed:  # before: 1e30 in train passed
            run(tmp_path / where, data, "body_mass_g", policy="fail")
        message = str(failed.value)
        assert f"[{where}] column 'body_mass_g': label values are finite" in message
        assert "fix or drop those rows in the query" in message
        for word in words:
            assert word in message, message
        verdicts.append(message.count("\n"))
    assert verdicts[0] == verdicts[1]  # the same one problem, in the split it landed in


def test_heavy_tailed_and_large_labels_are_not_absurd(tmp_path):
    """Real tails pass: the houses' prices, a log-normal of sigma 2.5 and a Pareto of alpha 1
    over 200 k rows (their extremes 2e4-1e6 spreads from the median), a label in units of
    1e20, and a label of 95 % zeros."""
    rng = np.random.default_rng(25)
    n = 200_000
    tables = {
        "houses": seed.houses(6000).rename_columns(
            ["label" if c == "Price" else c for c in seed.houses(10).column_names]),
        "lognormal": pa.table({"x": rng.normal(size=n), "label": rng.lognormal(0, 2.5, n)}),
        "pareto": pa.table({"x": rng.normal(size=n), "label": rng.pareto(1.0, n) + 1}),
        "huge_unit": pa.table({"x": rng.normal(size=n), "label": rng.normal(5e20, 1e20, n)}),
        "zeros": pa.table({"x": rng.normal(size=n),
                           "label": np.where(rng.random(n) < 0.95, 0.0, rng.gamma(2, 1e4, n))}),
    }
    for name, table in tables.items():
        data = write_dataset(tmp_path / name / "ds", table)
        result = run(tmp_path / name, data, "label", policy="warn")
        rules = [c for c in result.checks if c.column == "label" and c.rule.startswith("label")]
        assert rules and all(c.success for c in rules), (name, [c.line() for c in rules])


def test_class_counts_and_their_odds():
    counts = labels.ClassCounts({"train": {"a": 80, "b": 3}, "eval": {"a": 20, "c": 1, "d": 12}},
                                "train")
    assert counts.classes == ["a", "b", "c", "d"]
    assert counts.train_share == pytest.approx(83 / 116)
    assert counts.rare() == ["b", "c"] and counts.unseen() == ["c", "d"]
    assert counts.chance_outside_train("d") == pytest.approx((33 / 116) ** 12)
    assert counts.not_by_chance() == ["d"]  # 12 rows all out of train: p ~ 3e-7
    # one row, or a handful, is never refused, however the split falls
    assert labels.ClassCounts({"train": {"a": 99}, "eval": {"a": 1, "c": 9}},
                              "train").not_by_chance() == []
    assert labels.MAX_CLASS_CODES == MAX_CATEGORY_CODES  # transform's task inference agrees
