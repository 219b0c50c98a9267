"""transform fitted on statistics validate took from BigQuery (the emulator: one aggregate query,
no Parquet pass for the statistics) against transform fitted on the Parquet rows.

Each split holds fewer finite values than the sample keeps, so both samples are every value and
the fits agree within floating-point summation order (above `SAMPLE_SIZE` the BigQuery sample
is another uniform sample: quantiles then agree within sampling error only)."""

import datetime
import math
import shutil

import numpy as np
import pyarrow as pa
import pytest
from kfp import dsl

from conveyor.io import Dataset
from conveyor.local import seed
from conveyor.stats.columns import SAMPLE_SIZE
from conveyor.transform import tasks
from conveyor.validate.validate import validate_dataset

pytestmark = pytest.mark.local


def close(got, want, where="fitted"):
    if isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (where, got, want)
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for k in want:
            close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            close(g, w, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


def test_the_fit_from_bigquery_statistics_is_the_fit_from_the_rows(stack, tmp_path, capsys):
    from conveyor.ingest.bigquery import ingest_bigquery

    table = seed.houses(4000, seed=21)
    rng = np.random.default_rng(21)
    start = datetime.datetime(2023, 1, 1, tzinfo=datetime.UTC)
    listed = [None if rng.random() < 0.05 else start + datetime.timedelta(
        microseconds=int(rng.integers(0, 3 * 10**13))) for _ in range(table.num_rows)]
    table = table.append_column("Listed At", pa.array(listed, pa.timestamp("us", tz="UTC")))
    seed.load_table(table, "fromstats.houses")
    path = tmp_path / "ds"
    ingest_bigquery(str(path), table="fromstats.houses", split_key="Id",
                    split_ratios={"train": 0.7, "eval": 0.2, "test": 0.1})
    result = validate_dataset(path, report_path=tmp_path / "r.html",
                              statistics_path=tmp_path / "stats", suite_path=tmp_path / "suite",
                              policy="warn", statistics_source="bigquery")
    assert result.statistics_source == "bigquery"
    assert Dataset(path).split("train").rows < SAMPLE_SIZE
    want = tasks.transform(dsl.Dataset(uri=str(path)), dsl.Artifact(uri=str(tmp_path / "p0")),
                           label="Price")
    assert want.spec.task == "regression" and "SoldOn" in want.spec.features
    assert "Listed At" in want.spec.features
    for split in Dataset(path).splits:  # from here on no row can be read
        shutil.rmtree(path / split)
    capsys.readouterr()
    got = tasks.transform(dsl.Dataset(uri=str(path)), dsl.Artifact(uri=str(tmp_path / "p1")),
                          label="Price", statistics=dsl.Artifact(uri=str(tmp_path / "stats")))
    out = capsys.readouterr().out
    assert "no row read (3 splits)" in out and "reading the rows" not in out
    assert got.spec == want.spec
    close(got.to_dict(), want.to_dict())
