"""The loop after push, through the emulators and kfp.local: train and push penguins v1 on the
emulated GCS, serve it with prediction logging to gs:// (the real app and writer), send calm
traffic and then shifted traffic, and run the monitoring pipeline on each window: the calm one
reports no drift and retrains nothing; the shifted one names the drifted features and runs the
continuous-training retrain. `conveyor serve --monitoring-uri`'s gauges show the newest result."""

from __future__ import annotations

import datetime
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from kfp import local

from conveyor.local import seed
from conveyor.pipelines import monitoring, training

pytestmark = [pytest.mark.local, pytest.mark.slow]


def instances(table) -> list[dict]:
    out = []
    for row in table.to_pylist():
        out.append({k: ("" if k == "sex" else None) if v is None or (
            isinstance(v, float) and math.isnan(v)) else v
            for k, v in row.items() if k != "species"})
    return out


def shifted(rows: list[dict], rng) -> list[dict]:
    out = []
    for r in rows:
        r = dict(r)
        if r["body_mass_g"] is not None:
            r["body_mass_g"] *= 1.5
        if rng.random() < 0.6:
            r["island"] = "Dream"
        out.append(r)
    return out


def newest_run(root: Path) -> Path:
    return max((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)


def monitor_output(run: Path) -> tuple[bool, dict]:
    out = json.loads(next(run.rglob("monitor/executor_output.json")).read_text())
    return out["parameterValues"]["Output"], json.loads(
        next(run.rglob("monitor/monitoring/monitoring.json")).read_text())


def retrained(run: Path) -> bool:
    return any(run.rglob("train*/model/saved_model.pb"))


def iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat()


def test_shifted_serving_traffic_is_reported_and_retrains_calm_traffic_does_not(
        penguins, bucket, tmp_path, monkeypatch):
    from conveyor.registry import ModelBasePath
    from conveyor.serving import metrics as serving_metrics
    from conveyor.serving import server
    from conveyor.serving.models import ModelManager
    from conveyor.serving.prediction_log import PredictionLog

    name = bucket("monitoring-test")
    base = f"gs://{name}/{tmp_path.name}/models/penguins"
    logs = f"gs://{name}/{tmp_path.name}/prediction-log"
    published = f"gs://{name}/{tmp_path.name}/monitoring"
    root = tmp_path / "runs"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    training.pipeline(table=penguins, label="species", model_base_path=base,
                      hyperparameters={"epochs": 5, "batch_size": 32})
    assert ModelBasePath(base).versions() == [1]

    # Serve v1 with logging to gs:// and the drift gauges, as `conveyor serve` composes them.
    monkeypatch.setattr(serving_metrics, "MONITORING_REFRESH", 0.0)
    manager = ModelManager(base, "penguins", cache_dir=str(tmp_path / "serve-cache"))
    manager.poll_once()
    log = PredictionLog(logs, flush_rows=100, flush_seconds=0.5)
    log.check()
    log.start()
    app = server.create_app(manager, prediction_log=log, monitoring_uri=published)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    client = TestClient(app, raise_server_exceptions=False)
    rows = instances(seed.penguins())
    rng = np.random.default_rng(0)

    def send(batch: list[dict]) -> None:
        for i in range(0, len(batch), 20):
            answer = client.post("/v1/models/penguins:predict",
                                 json={"instances": batch[i:i + 20]})
            assert answer.status_code == 200, answer.text

    calm_start = time.time()
    send([rows[i] for i in rng.permutation(len(rows))])
    time.sleep(0.05)
    boundary = time.time()
    send(shifted([rows[i] for i in rng.permutation(len(rows))], rng))
    end = time.time() + 0.05
    assert log.close()
    hours = (boundary - calm_start) / 3600 + 1e-6

    # A calm window: nothing drifted, nothing retrained.
    monitoring.pipeline(traffic=logs, model_base_path=base, label="species", table=penguins,
                        window_end=iso(boundary), window_hours=hours, monitoring_uri=published,
                        hyperparameters={"epochs": 3, "batch_size": 32})
    calm = newest_run(root)
    drifted, result = monitor_output(calm)
    assert result["rows"] == len(rows) and result["served"]["version"] == 1
    assert not drifted and result["drifted_features"] == [], result["features"]
    assert len(result["features"]) == 7 and result["prediction"]["distance"] is not None
    assert not retrained(calm)
    manager.poll_once()  # the gauges follow the newest published result
    metrics = client.get("/metrics").text
    assert 'conveyor_feature_drifted{feature="island",model="penguins"} 0.0' in metrics

    # The shifted window: body mass and island drift, the retrain runs.
    monitoring.pipeline(traffic=logs, model_base_path=base, label="species", table=penguins,
                        window_end=iso(end), window_hours=(end - boundary) / 3600,
                        monitoring_uri=published,
                        hyperparameters={"epochs": 3, "batch_size": 32})
    shifted_run = newest_run(root)
    drifted, result = monitor_output(shifted_run)
    assert drifted and result["drifted"] and result["rows"] == len(rows)
    assert {"body_mass_g", "island"} <= set(result["drifted_features"]) <= {
        "body_mass_g", "island", "flipper_length_mm", "bill_length_mm", "bill_depth_mm"}
    mass = next(f for f in result["features"] if f["column"] == "body_mass_g")
    assert "mean" in mass["figures"]["summary"]
    report = next(shifted_run.rglob("monitor/report")).read_text()
    assert "DRIFTED" in report and "body_mass_g" in report
    assert retrained(shifted_run)
    manager.poll_once()
    metrics = client.get("/metrics").text
    assert 'conveyor_feature_drifted{feature="body_mass_g",model="penguins"} 1.0' in metrics
    assert 'conveyor_monitoring_drifted{model="penguins"} 1.0' in metrics
    client.close()
