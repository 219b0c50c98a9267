"""Issue 25, classes 3 and 7, through the training pipeline in kfp.local against the emulators:
tables that differ only in the split key of one row (`support.key_landing_in`: ingest's
FARM_FINGERPRINT rule, which the BigQuery emulator computes as BigQuery does).

- One body mass of 1e30 in train: before, validate passed, the log-scale smearing factor and
  the train mean were dragged by that row, and a model at R2 = -5.6e22 was blessed and pushed.
  Now validate stops it under policy fail, and under warn the gate refuses the model.
- One row of a new species: before, the run failed at validate when the row hashed into eval and
  went to the end when it hashed into train; now both run to the end and push, with the class.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from support import key_landing_in

from conveyor.io import Dataset
from conveyor.local import seed
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]


def keyed_penguins(where: str, **values) -> pa.Table:
    """The penguins with a `key` column and one more row, a copy of the first with `values`,
    whose key lands in split `where`."""
    table = seed.penguins()
    table = table.append_column("key", pa.array(range(table.num_rows), pa.int64()))
    row = table.slice(0, 1).to_pylist()[0] | values
    row["key"] = key_landing_in(where, start=10_000)
    return pa.concat_tables([table, pa.Table.from_pylist([row], schema=table.schema)])


def run(tmp_path: Path, name: str, table: pa.Table, label: str, **params) -> Path:
    """The training pipeline on `table` (loaded as `split_luck.<name>`); its run folder."""
    from kfp import local

    from conveyor.pipelines import training

    table_id = f"split_luck.{name}"
    seed.load_table(table, table_id)
    root = tmp_path / name
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    training.pipeline(table=table_id, label=label, split_key="key",
                      model_base_path=str(tmp_path / name / "models"), **params)
    return next(p for p in root.iterdir() if p.is_dir() and p.name != "models")


def evaluation(folder: Path) -> dict:
    return json.loads((folder / "evaluate" / "evaluation" / "evaluation.json").read_text())


def test_a_table_with_one_label_of_1e30_pushes_nothing(stack, tmp_path):
    table = keyed_penguins("train", body_mass_g=1e30)
    # policy fail (the default): validate stops the run, naming the value
    with pytest.raises(RuntimeError):
        run(tmp_path, "absurd_fail", table, "body_mass_g")
    verdict = json.loads(next((tmp_path / "absurd_fail").glob(
        "*/validate/statistics/validation.json")).read_text())
    (broken,) = verdict["breakage"]
    assert broken["split"] == "train" and broken["column"] == "body_mass_g"
    assert "1e+30 is " in broken["observed"] and broken["examples"] == [1e30]
    assert ModelBasePath(str(tmp_path / "absurd_fail" / "models")).versions() == []

    # policy warn: trained on it anyway; the gate refuses the model (before: blessed, pushed)
    done = run(tmp_path, "absurd_warn", table, "body_mass_g", policy="warn")
    data = Dataset(done / "bigquery-ingest" / "dataset")
    assert 1e30 in data.read_table("train", ["body_mass_g"]).column(0).to_pylist()
    result = evaluation(done)
    assert not result["blessed"], result["checks"]
    r2 = next(c for c in result["checks"] if c["metric"] == "r2")
    assert not r2["passed"] and r2["value"] < 0
    median = [c for c in result["checks"] if "train median" in c["rule"]]
    assert median and not median[0]["passed"]
    assert not (done / "push").exists()
    assert ModelBasePath(str(tmp_path / "absurd_warn" / "models")).versions() == []


def test_one_row_of_a_new_class_gets_one_verdict_wherever_it_lands(stack, tmp_path):
    results = {}
    for where in ("train", "eval"):
        done = run(tmp_path, f"emperor_{where}", keyed_penguins(where, species="Emperor"),
                   "species")  # policy fail: before, the eval case stopped here
        data = Dataset(done / "bigquery-ingest" / "dataset")
        landed = [s for s in data.splits
                  if "Emperor" in data.read_table(s, ["species"]).column(0).to_pylist()]
        assert landed == [where]
        verdict = json.loads((done / "validate" / "statistics" / "validation.json").read_text())
        assert not verdict["broken"]
        (warning,) = verdict["warnings"]
        assert "'Emperor' 1 row(s)" in warning["observed"]
        results[where] = evaluation(done)
        versions = ModelBasePath(str(tmp_path / f"emperor_{where}" / "models")).versions()
        assert versions == ([1] if results[where]["blessed"] else [])
    in_train, in_eval = results["train"], results["eval"]
    assert in_train["classes"] == in_eval["classes"] == ["Adelie", "Chinstrap", "Emperor",
                                                         "Gentoo"]
    assert in_train["blessed"] and in_eval["blessed"]
    # in eval, the Emperor is a row the model never learned: scored, as a miss
    emperor = in_eval["confusion"][2]
    assert sum(emperor) == 1 and emperor[2] == 0
