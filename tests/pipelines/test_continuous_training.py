"""Continuous training through kfp.local: no drift, no retraining; drift or a plain schedule
retrains against the served model's training statistics."""

import json
from pathlib import Path

import pytest
from kfp import local

from conveyor.pipelines import continuous_training, training
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]
# The same penguins with Gentoo three times over: every value within the served model's ranges,
# but the species mix drifts (L-infinity ~0.27).
DRIFTED = """SELECT * FROM conveyor_demo.penguins
UNION ALL SELECT * FROM conveyor_demo.penguins WHERE species = 'Gentoo'
UNION ALL SELECT * FROM conveyor_demo.penguins WHERE species = 'Gentoo'"""


def newest_run(root: Path) -> Path:
    return max((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)


def retrained(run: Path) -> bool:
    return any(run.rglob("transform*/preprocessing/transform.json"))


def validation(run: Path) -> tuple[bool, dict]:
    out = json.loads(next(run.rglob("validate/executor_output.json")).read_text())
    metrics = out["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    return out["parameterValues"]["Output"], metrics


def test_retrains_on_drift_or_schedule_only(penguins, tmp_path, bucket):
    base = f"gs://{bucket('ct-test')}/{tmp_path.name}/penguins"
    root = tmp_path / "runs"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    training.pipeline(table=penguins, label="species", model_base_path=base,
                      hyperparameters={"epochs": 5, "batch_size": 32})
    served = ModelBasePath(base)
    assert served.versions() == [1]
    stats = served.fetch(1, tmp_path / "cache") / "assets.extra" / "statistics.json"
    assert json.loads(stats.read_text())["format"] == "conveyor.statistics/v1"

    continuous_training.pipeline(table=penguins, label="species", model_base_path=base)
    calm = newest_run(root)
    passed, metrics = validation(calm)
    assert passed and metrics["drifted_features"] == 0
    assert "PASSED" in next(calm.rglob("validate/report")).read_text()
    assert not retrained(calm)

    continuous_training.pipeline(query=DRIFTED, table="", label="species", model_base_path=base)
    drifted = newest_run(root)
    passed, metrics = validation(drifted)
    assert not passed and metrics["drifted_features"] >= 1 and metrics["failed_expectations"] == 0
    assert retrained(drifted)

    continuous_training.pipeline(table=penguins, label="species", model_base_path=base,
                                 retrain_always=True)
    assert retrained(newest_run(root))
