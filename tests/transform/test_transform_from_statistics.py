"""transform fitted on validate's statistics artifact (no pass over the rows) against transform
fitted on the rows; and the cases where the statistics cannot serve and the rows are read."""

import datetime
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from kfp import dsl
from support import write_dataset

from conveyor.errors import SchemaError
from conveyor.io import Dataset, DatasetWriter
from conveyor.model.inputs import MISSING_INT
from conveyor.model.layout import STATISTICS_FILE
from conveyor.stats.columns import SAMPLE_SIZE, DatasetStatistics, compute_statistics
from conveyor.transform import tasks
from conveyor.transform.fit import fit
from conveyor.transform.spec import FeatureSpec
from conveyor.validate.validate import validate_dataset

ROWS = 14_000  # train holds more finite values than the sample keeps (quantiles from a sample)
RATIOS = {"train": 0.7, "eval": 0.2, "test": 0.1}

CLASSIFICATION = {
    "label": "kind", "task": "multiclass",
    "features": {
        "count": {"kind": "numeric", "transform": "zscore", "impute": "median"},
        "code": {"kind": "categorical", "encoding": "vocabulary", "top_k": 100},
        "size": {"kind": "numeric", "transform": "bucketize", "buckets": 8},
        "weight": {"kind": "numeric", "transform": "log"},
        "city": {"kind": "categorical"},
        "flag": {"kind": "categorical"},
        "day": {"kind": "datetime"},
        "at": {"kind": "datetime"},
        "price": {"kind": "numeric", "transform": "minmax"},
    }}
REGRESSION = {
    "label": "price", "task": "regression", "label_transform": "log",
    "features": {
        "count": {"kind": "numeric"},
        "city": {"kind": "categorical", "encoding": "hash", "hash_buckets": 16},
        "code": {"kind": "numeric", "transform": "bucketize", "buckets": 5},
        "day": {"kind": "datetime", "parts": ["days", "month"]},
        "at": {"kind": "datetime"},
    }}


def rows(n: int = ROWS, seed: int = 0) -> pa.Table:
    """int, float, string, bool, date and timestamp columns, each with NULLs (a float with NaN
    too); `kind` a 3-class label, `price` a non-negative regression label."""
    rng = np.random.default_rng(seed)

    def mask(p):
        return rng.random(n) < p

    size = rng.normal(50, 12, n)
    size[rng.random(n) < 0.01] = np.nan
    day0 = datetime.date(2020, 1, 1)
    at0 = datetime.datetime(2022, 1, 1, tzinfo=datetime.UTC)
    days = rng.integers(0, 1500, n)
    micros = rng.integers(0, 400 * 86_400 * 10**6, n)
    cities = np.array([f"city {i}" for i in range(30)])
    return pa.table({
        "count": pa.array(rng.poisson(4, n), mask=mask(0.05)),
        "code": pa.array(rng.integers(0, 3000, n), mask=mask(0.02)),  # > 1,000 values
        "size": pa.array(size, mask=mask(0.05)),
        "weight": pa.array(rng.lognormal(2, 1, n), mask=mask(0.03)),
        "city": pa.array(cities[rng.zipf(1.5, n) % 30], mask=mask(0.04)),
        "flag": pa.array(rng.random(n) < 0.3, mask=mask(0.06)),
        "day": pa.array([day0 + datetime.timedelta(days=int(d)) for d in days],
                        pa.date32(), mask=mask(0.05)),
        "at": pa.array([at0 + datetime.timedelta(microseconds=int(m)) for m in micros],
                       pa.timestamp("us", tz="UTC"), mask=mask(0.05)),
        "kind": pa.array(np.array(["a", "b", "c"])[rng.integers(0, 3, n)], mask=mask(0.02)),
        "price": pa.array(rng.lognormal(5, 0.8, n), mask=mask(0.03)),
    })


def validated(folder: Path, table: pa.Table) -> tuple[Path, Path]:
    """A Dataset of `table` and validate's statistics artifact of it (small chunks, so its
    batches differ from transform's)."""
    data = write_dataset(folder / "ds", table, RATIOS)
    validate_dataset(data, report_path=folder / "report.html", statistics_path=folder / "stats",
                     suite_path=folder / "suite", policy="warn", chunk_rows=1000)
    return data, folder / "stats"


def load(stats_dir: Path) -> DatasetStatistics:
    return DatasetStatistics.from_dict(json.loads((stats_dir / STATISTICS_FILE).read_text()))


@pytest.fixture(scope="module")
def houses(tmp_path_factory):
    return validated(tmp_path_factory.mktemp("from-stats"), rows())


def assert_same(got, want, where="fitted"):
    """Equal, floats within 1e-9 relative (summation order differs between the passes)."""
    if isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (where, got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (where, got, want)
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


@pytest.mark.parametrize("spec", [CLASSIFICATION, REGRESSION], ids=["multiclass", "regression"])
def test_the_fit_from_validates_statistics_is_the_fit_from_the_rows(houses, spec, capsys):
    data, stats_dir = houses
    ds, spec = Dataset(data), FeatureSpec.from_dict(spec)
    assert ds.split("train").rows * 0.9 > SAMPLE_SIZE  # the sample is a sample, not every value
    want = fit(ds, spec)
    capsys.readouterr()
    got = fit(ds, spec, statistics=load(stats_dir))
    out = capsys.readouterr().out
    assert "no row read (3 splits)" in out and "reading the rows" not in out
    assert_same(got.to_dict(), want.to_dict())
    for name, f in want.features.items():  # the same sample code: the same quantiles, exactly
        if "boundaries" in f:
            assert got.features[name]["boundaries"] == f["boundaries"], name
    if spec.task == "multiclass":
        assert got.label_classes == ["a", "b", "c"] and sum(got.label_counts) > 9000
        assert len(got.features["code"]["vocabulary"]) == 100  # int64 counts of 3,000 values
        # NULL is its own value (6 % of the rows): MISSING_INT's word, as the model sees it
        assert got.features["flag"]["vocabulary"] == ["0", "1", str(MISSING_INT)]
    else:
        assert got.label_stats["transform"] == "log"
    assert {"days_mean", "days_std"} <= got.features["at"].keys()


def test_the_statistics_replace_every_pass_the_parquet_files_can_go(houses, tmp_path, capsys):
    data, stats_dir = houses
    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    want = fit(Dataset(copy), FeatureSpec.from_dict(CLASSIFICATION))
    proposed = tasks.transform(dsl.Dataset(uri=str(copy)), dsl.Artifact(uri=str(tmp_path / "p0")),
                               label="price")
    for shard in copy.glob("*/*.parquet"):
        shard.unlink()
    ds = Dataset(copy)
    with pytest.raises(FileNotFoundError):  # no row can be read any more
        fit(ds, FeatureSpec.from_dict(CLASSIFICATION))
    capsys.readouterr()
    for spec in (CLASSIFICATION, REGRESSION):
        fit(ds, FeatureSpec.from_dict(spec), statistics=load(stats_dir))
    got = fit(ds, FeatureSpec.from_dict(CLASSIFICATION), statistics=load(stats_dir))
    assert_same(got.to_dict(), want.to_dict())
    # the component's body: validate's artifact in, a proposal and its fit from it, no row read
    out = dsl.Artifact(uri=str(tmp_path / "p1"))
    again = tasks.transform(dsl.Dataset(uri=str(copy)), out, label="price",
                            statistics=dsl.Artifact(uri=str(stats_dir)))
    out_text = capsys.readouterr().out
    assert "no row read (3 splits)" in out_text and "reading the rows" not in out_text
    assert again.spec == proposed.spec and again.spec.task == "regression"
    assert_same(again.to_dict(), proposed.to_dict())
    assert (tmp_path / "p1" / "transform.json").exists()
    assert out.metadata["label"] == "price"


def test_statistics_of_another_dataset_are_not_used(houses, tmp_path, capsys):
    data, stats_dir = houses
    other = write_dataset(tmp_path / "other", rows(3000, seed=5), RATIOS)
    ds, spec = Dataset(other), FeatureSpec.from_dict(CLASSIFICATION)
    want = fit(ds, spec)
    capsys.readouterr()
    got = fit(ds, spec, statistics=load(stats_dir))
    out = capsys.readouterr().out
    assert "reading the rows of every split instead of the statistics: the statistics given " \
           f"are not of this Dataset ({other})" in out
    assert Dataset(data).info.fingerprint in out and ds.info.fingerprint in out
    assert got.to_dict() == want.to_dict()
    assert got.rows == ds.split("train").rows


def test_what_the_statistics_lack_is_read_and_said(houses, capsys):
    """A split validate did not cover, and statistics an older conveyor wrote (no day-number
    moments, int64 value counts only up to 1,000 values)."""
    data, stats_dir = houses
    ds, spec = Dataset(data), FeatureSpec.from_dict(CLASSIFICATION)
    want = fit(ds, spec).to_dict()
    capsys.readouterr()

    train_only = compute_statistics(ds, ["train"])
    assert_same(fit(ds, spec, statistics=train_only).to_dict(), want)
    out = capsys.readouterr().out
    assert "reading the rows of 'eval' instead of the statistics: they have no split 'eval' " \
           "(they have: train)" in out
    assert "read the rows of split(s) eval, test" in out

    doc = json.loads((stats_dir / STATISTICS_FILE).read_text())
    for name in ("days_mean", "days_m2", "days_std"):
        del doc["splits"]["train"]["columns"]["day"][name]
    assert_same(fit(ds, spec, statistics=DatasetStatistics.from_dict(doc)).to_dict(), want)
    assert "reading the rows of 'train' instead of the statistics: they have no day-number " \
           "mean and deviation of date column 'day'" in capsys.readouterr().out

    doc = json.loads((stats_dir / STATISTICS_FILE).read_text())
    doc["splits"]["train"]["columns"]["code"]["values"] = []  # as written before: > 1,000 values
    assert doc["splits"]["train"]["columns"]["code"]["distinct"] > 1000
    assert_same(fit(ds, spec, statistics=DatasetStatistics.from_dict(doc)).to_dict(), want)
    assert "they have no value counts of int64 column 'code'" in capsys.readouterr().out


def test_a_truncated_label_is_read_from_the_rows(tmp_path, capsys):
    """eval's label has more values than the statistics track: its rows say which are new."""
    train = pa.table({"x": np.arange(200.0), "y": np.where(np.arange(200) % 2, "yes", "no")})
    labels = [f"v{i}" for i in range(10_050)]
    evaluation = pa.table({"x": np.arange(10_050.0), "y": labels})
    with DatasetWriter(tmp_path / "ds", train.schema, ["train", "eval"], {"type": "test"}) as w:
        w.write("train", train)
        w.write("eval", evaluation)
    ds = Dataset(tmp_path / "ds")
    statistics = DatasetStatistics.from_dict(compute_statistics(ds).to_dict())
    assert statistics.splits["eval"].columns["y"].truncated
    spec = FeatureSpec.from_dict({"label": "y", "task": "binary",
                                  "features": {"x": {"kind": "numeric"}}})
    with pytest.raises(SchemaError) as from_rows:
        fit(ds, spec)
    capsys.readouterr()
    with pytest.raises(SchemaError) as served:
        fit(ds, spec, statistics=statistics)
    assert str(served.value) == str(from_rows.value)
    # every split's classes are the label's (conveyor.validate.labels): 10,050 single rows in
    # eval are the split's luck, not refused one by one, and make the label no binary one
    assert "a binary label needs exactly 2 classes; 'y' has 10052 in the table (2 in 'train')" \
        in str(served.value)
    assert "reading the rows of 'eval' instead of the statistics: the value counts of label " \
           "'y' are truncated (more than 10,000 distinct values)" in capsys.readouterr().out


def test_a_label_the_statistics_show_broken_is_refused_as_from_the_rows(tmp_path):
    """Regression: train's statistics count no NaN or inf (its rows are not read), eval's do
    (its rows are read, for the count and examples of the message)."""
    train, evaluation = rows(2000, seed=2), rows(600, seed=3)
    price = evaluation.column("price").combine_chunks()
    broken = pa.array(np.where(np.arange(600) % 97 == 0, np.inf,
                               price.to_numpy(zero_copy_only=False)),
                      mask=price.is_null().to_numpy(zero_copy_only=False))
    evaluation = evaluation.set_column(evaluation.schema.get_field_index("price"), "price", broken)
    with DatasetWriter(tmp_path / "ds", train.schema, ["train", "eval"], {"type": "test"}) as w:
        w.write("train", train)
        w.write("eval", evaluation)
    ds, spec = Dataset(tmp_path / "ds"), FeatureSpec.from_dict(REGRESSION)
    statistics = DatasetStatistics.from_dict(compute_statistics(ds).to_dict())
    assert statistics.splits["eval"].columns["price"].inf == 6  # one of the 7 is NULL
    assert not statistics.splits["train"].columns["price"].inf
    with pytest.raises(SchemaError) as from_rows:
        fit(ds, spec)
    for shard in ds.files("train"):
        shard.unlink()
    with pytest.raises(SchemaError) as served:
        fit(ds, spec, statistics=statistics)
    assert str(served.value) == str(from_rows.value)
    assert "beyond float32's range (|y| > 3.4e+38) in 6 of 600 rows of split 'eval'" \
        in str(served.value)


def test_an_unreadable_statistics_artifact_falls_back_to_the_rows(houses, tmp_path, capsys):
    data, _ = houses
    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / STATISTICS_FILE).write_text("{not json")
    fitted = tasks.transform(dsl.Dataset(uri=str(data)), dsl.Artifact(uri=str(tmp_path / "p")),
                             feature_spec_uri=_spec_file(tmp_path),
                             statistics=dsl.Artifact(uri=str(tmp_path / "stats")))
    out = capsys.readouterr().out
    assert f"reading the rows instead of the statistics given: {tmp_path / 'stats'}" in out
    assert "is not JSON" in out
    assert fitted.label_classes == ["a", "b", "c"]
    (tmp_path / "stats" / STATISTICS_FILE).write_text('{"format": "conveyor.statistics/v0"}')
    tasks.transform(dsl.Dataset(uri=str(data)), dsl.Artifact(uri=str(tmp_path / "p2")),
                    feature_spec_uri=_spec_file(tmp_path),
                    statistics=dsl.Artifact(uri=str(tmp_path / "stats")))
    assert "format is 'conveyor.statistics/v0', expected 'conveyor.statistics/v1'" \
        in capsys.readouterr().out


def _spec_file(folder: Path) -> str:
    path = folder / "spec.json"
    path.write_text(json.dumps(CLASSIFICATION))
    return str(path)
