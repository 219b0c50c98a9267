"""Continuous training on a stranger's weather: a real covariate shift is drift, which retrains;
broken data stops the run with a report naming each fault. Through kfp.local."""

import json
from pathlib import Path

import pytest
from kfp import local

from conveyor.pipelines import continuous_training, training
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]

# Several numeric columns scaled by 1.5 and the island mix changed (most Torgersen rows moved to
# Dream): values past the served model's training range, a new category share.
SHIFTED = """SELECT species,
  IF(MOD(CAST(FARM_FINGERPRINT(CAST(bill_length_mm AS STRING)) AS INT64), 4) = 0 AND
     island = 'Torgersen', 'Dream', island) AS island,
  bill_length_mm * 1.5 AS bill_length_mm, bill_depth_mm,
  flipper_length_mm * 1.5 AS flipper_length_mm, body_mass_g * 1.5 AS body_mass_g, sex, year
FROM conveyor_demo.penguins"""
# A column gone (sex), a type changed (year as STRING), half the rows' bill_depth_mm NULL.
BROKEN = """SELECT species, island, bill_length_mm,
  IF(MOD(CAST(body_mass_g AS INT64), 2) = 0, NULL, bill_depth_mm) AS bill_depth_mm,
  flipper_length_mm, body_mass_g, CAST(year AS STRING) AS year
FROM conveyor_demo.penguins"""


def newest_run(root: Path) -> Path:
    return max((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)


def test_drift_retrains_and_broken_data_stops_naming_each_fault(penguins, tmp_path, bucket):
    base = f"gs://{bucket('ct-shift')}/{tmp_path.name}/penguins"
    root = tmp_path / "runs"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    training.pipeline(table=penguins, label="species", model_base_path=base)
    assert ModelBasePath(base).versions() == [1]

    continuous_training.pipeline(query=SHIFTED, label="species", model_base_path=base)
    shifted = newest_run(root)
    validation = json.loads(next(shifted.rglob("validate/statistics/validation.json")).read_text())
    assert not validation["broken"], validation["breakage"]
    drifted = set(validation["drift"]["drifted_columns"])
    assert {"body_mass_g", "flipper_length_mm"} <= drifted
    assert any(shifted.rglob("transform*/preprocessing/transform.json"))  # retrained
    # The retrain reused the served version's feature spec.
    spec = next(shifted.rglob("transform*/preprocessing/feature_spec.yaml")).read_text()
    served = ModelBasePath(base).fetch(1, tmp_path / "v1")
    assert spec == (served / "assets.extra" / "feature_spec.yaml").read_text()

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=False)
    continuous_training.pipeline(query=BROKEN, label="species", model_base_path=base)
    broken = newest_run(root)
    validation = json.loads(next(broken.rglob("validate/statistics/validation.json")).read_text())
    assert validation["broken"]
    faults = " ".join(json.dumps(b) for b in validation["breakage"])
    for column in ("sex", "year", "bill_depth_mm"):
        assert column in faults, (column, faults)
    assert not any(broken.rglob("transform*/preprocessing/transform.json"))  # nothing retrained
