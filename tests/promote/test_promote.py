"""Canary promotion and rollback through the emulators and kfp.local, end to end.

Penguins v1 is trained and pushed to the emulated GCS (once for the module), served with
prediction logging to gs:// (the real app and writer) and sent shifted traffic (body mass x1.5,
60% of islands Dream). The monitoring pipeline with `canary` finds the drift, labels v1
champion and its chained continuous-training run retrains and pushes v2 as the challenger:
`conveyor serve` keeps answering with v1 by default, v2 by its label and for its canary share.
Then the promote component decides by the rule of docs/promotion.md on recent labeled data:

- the new data are the shifted penguins with their true species: v2, trained on them, is at
  least as good as v1 on recent rows it never saw (the retraining run's own eval split) and
  is promoted; serve answers with v2 by default;
- the new data are the shifted penguins with their species shuffled (a mislabeled batch):
  v2 is blessed by lenient thresholds, but worse than v1 on the true recent labels, so it is
  rolled back: v1 still served, no challenger label.
"""


import datetime
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from kfp import dsl, local
from support import write_dataset

from conveyor.local import seed
from conveyor.pipelines import monitoring, training

pytestmark = [pytest.mark.local, pytest.mark.slow]

HPARAMS = {"epochs": 5, "batch_size": 32}
# The retraining runs bless v2 whatever it is worth against v1 on their own data (the mislabeled
# batch too): deciding is promote's job here, on the true recent labels.
LENIENT = {"accuracy": {"min": 0.0}, "naive_floor": False}


def shifted_table(table: pa.Table, seed_: int, shuffle_labels: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed_)
    frame = table.to_pandas()
    frame["body_mass_g"] = frame["body_mass_g"] * 1.5
    frame.loc[rng.random(len(frame)) < 0.6, "island"] = "Dream"
    if shuffle_labels:
        frame["species"] = rng.permutation(frame["species"].to_numpy())
    return pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False)


def instances(table: pa.Table) -> list[dict]:
    return [{k: ("" if k == "sex" else None) if v is None or (
        isinstance(v, float) and math.isnan(v)) else v
        for k, v in row.items() if k != "species"} for row in table.to_pylist()]


def iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat()


def newest_run(root: Path) -> Path:
    return max((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def v1(penguins, bucket, tmp_path_factory):
    """Penguins v1, trained and pushed by the training pipeline: its base path and a local
    copy of the version (for another base path to start from the same v1)."""
    from conveyor.registry import ModelBasePath

    name = bucket("promotion-test")
    root = tmp_path_factory.mktemp("promotion-v1")
    base = f"gs://{name}/{root.name}/models/penguins"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "runs"),
               raise_on_error=True)
    training.pipeline(table=penguins, label="species", model_base_path=base,
                      hyperparameters=HPARAMS)
    assert ModelBasePath(base).versions() == [1]
    return base, ModelBasePath(base).fetch(1, root / "copy")


@dsl.pipeline(name="promote-recent")
def promote_recent(dataset_uri: str, model_base_path: str):
    from conveyor.components import promote

    recent = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
    promote(dataset=recent.output, model_base_path=model_base_path, split="eval")


def serve_and_retrain(base: str, logs: str, table: str, tmp_path: Path, monkeypatch):
    """Serve v1 with logging and the drift gauges, send shifted traffic, run the monitoring
    pipeline (canary). Returns (manager, client, the monitoring run's folder)."""
    from starlette.testclient import TestClient

    from conveyor.serving import metrics as serving_metrics
    from conveyor.serving import server
    from conveyor.serving.models import ModelManager
    from conveyor.serving.prediction_log import PredictionLog

    manager = ModelManager(base, "penguins", cache_dir=str(tmp_path / "serve-cache"))
    manager.poll_once()
    log = PredictionLog(logs, flush_rows=100, flush_seconds=0.5)
    log.check()
    log.start()
    monkeypatch.setattr(serving_metrics, "MONITORING_REFRESH", 0.0)
    published = f"{logs.rsplit('/', 1)[0]}/monitoring"
    app = server.create_app(manager, prediction_log=log, canary_percent=50,
                            monitoring_uri=published)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = TestClient(app, raise_server_exceptions=False)
    rows = instances(shifted_table(seed.penguins(), 7))
    start = time.time()
    for i in range(0, len(rows), 20):
        answer = client.post("/v1/models/penguins:predict", json={"instances": rows[i:i + 20]})
        assert answer.status_code == 200 and answer.headers["x-model-version"] == "1"
    end = time.time() + 0.05
    assert log.close()
    root = tmp_path / "runs"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    monitoring.pipeline(traffic=logs, model_base_path=base, label="species", table=table,
                        window_end=iso(end), window_hours=(end - start) / 3600 + 1e-6,
                        hyperparameters=HPARAMS, thresholds=LENIENT, canary=True,
                        monitoring_uri=published)
    run = newest_run(root)
    out = json.loads(next(run.rglob("monitor/executor_output.json")).read_text())
    assert out["parameterValues"]["Output"] is True  # drifted
    result = json.loads(next(run.rglob("monitor/monitoring/monitoring.json")).read_text())
    assert {"body_mass_g", "island"} <= set(result["drifted_features"])
    manager.poll_once()  # serve's gauges show the monitor's newest result
    metrics = client.get("/metrics").text
    assert 'conveyor_feature_drifted{feature="body_mass_g",model="penguins"} 1.0' in metrics
    assert 'conveyor_monitoring_drifted{model="penguins"} 1.0' in metrics
    return manager, client, run


def check_canary(manager, client) -> None:
    """v2 is the challenger: loaded beside v1, by label and for its share, v1 by default."""
    from conveyor.serving.server import canary

    manager.poll_once()
    status = client.get("/readyz").json()
    assert status["version"] == 1 and status["labels"] == {"champion": 1, "challenger": 2}
    assert status["canary_percent"] == 50 and sorted(status["loaded_versions"]) == [1, 2]
    row = {"instances": instances(seed.penguins().slice(0, 1))}
    for label, version in (("challenger", "2"), ("champion", "1")):
        answer = client.post(f"/v1/models/penguins/labels/{label}:predict", json=row)
        assert answer.status_code == 200 and answer.headers["x-model-version"] == version
    assert client.post("/v1/models/penguins/labels/golden:predict",
                       json=row).status_code == 404
    seen = []
    for i in range(40):
        answer = client.post("/v1/models/penguins:predict", json=row,
                             headers={"X-Request-Id": f"req-{i}"})
        assert answer.status_code == 200
        expected = "2" if canary(answer.headers["x-request-id"], 50) else "1"
        seen.append(answer.headers["x-model-version"])
        assert seen[-1] == expected
    assert set(seen) == {"1", "2"}  # 40 ids at 50%: both (chance of one only: 2e-12)
    assert client.post("/v1/models/penguins/versions/1:predict",
                       json=row).headers["x-model-version"] == "1"  # a version is a version


def run_promote(dataset: Path, base: str, tmp_path: Path) -> tuple[str, dict]:
    root = tmp_path / "promote-runs"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    promote_recent(dataset_uri=str(dataset), model_base_path=base)
    run = newest_run(root)
    out = json.loads(next(run.rglob("promote/executor_output.json")).read_text())
    return out["parameterValues"]["Output"], json.loads(
        next(run.rglob("promote/promotion/promotion.json")).read_text())


def test_a_better_challenger_is_promoted_and_served(v1, bucket, tmp_path, monkeypatch):
    from conveyor.registry import ModelBasePath

    base, _ = v1
    table = f"{seed.DEMO_DATASET}.penguins_shifted"
    seed.load_table(shifted_table(seed.penguins(), 1), table)
    logs = f"gs://promotion-test/{tmp_path.name}/prediction-log"
    manager, client, run = serve_and_retrain(base, logs, table, tmp_path, monkeypatch)
    assert ModelBasePath(base).labels() == {"champion": 1, "challenger": 2}
    check_canary(manager, client)

    # Recent labeled rows v2 never saw: the retraining run's eval split.
    recent = next(p for p in run.rglob("*ingest*/dataset") if p.is_dir())
    action, promotion = run_promote(recent, base, tmp_path)
    accuracy = promotion["decision"]["forward"]["accuracy"]
    assert action == "promote", promotion["decision"]["reasons"]
    assert accuracy["candidate"] >= accuracy["baseline"] and promotion["rows"] > 30
    assert ModelBasePath(base).labels() == {"champion": 2}
    manager.poll_once()
    status = client.get("/readyz").json()
    assert status["version"] == 2 and status["labels"] == {"champion": 2}
    row = {"instances": instances(seed.penguins().slice(0, 1))}
    for i in range(10):  # no canary share any more: every request gets v2
        answer = client.post("/v1/models/penguins:predict", json=row,
                             headers={"X-Request-Id": f"after-{i}"})
        assert answer.headers["x-model-version"] == "2"
    assert client.post("/v1/models/penguins/labels/challenger:predict",
                       json=row).status_code == 404
    client.close()


def test_a_worse_challenger_is_rolled_back_and_v1_stays_served(v1, bucket, tmp_path,
                                                               monkeypatch):
    from conveyor.registry import ModelBasePath

    _, copy = v1
    base = f"gs://promotion-test/{tmp_path.name}/models/penguins"
    assert ModelBasePath(base).publish_model(copy).version == 1  # the same v1, with statistics
    table = f"{seed.DEMO_DATASET}.penguins_mislabeled"
    seed.load_table(shifted_table(seed.penguins(), 2, shuffle_labels=True), table)
    logs = f"gs://promotion-test/{tmp_path.name}/prediction-log"
    manager, client, _ = serve_and_retrain(base, logs, table, tmp_path, monkeypatch)
    assert ModelBasePath(base).labels() == {"champion": 1, "challenger": 2}
    check_canary(manager, client)

    # Recent rows with their true species (the shifted penguins as they are).
    recent = write_dataset(tmp_path / "recent", shifted_table(seed.penguins(), 3))
    action, promotion = run_promote(recent, base, tmp_path)
    accuracy = promotion["decision"]["forward"]["accuracy"]
    assert action == "rollback", promotion["decision"]["reasons"]
    assert accuracy["candidate"] < accuracy["baseline"]
    assert ModelBasePath(base).labels() == {"champion": 1}
    assert ModelBasePath(base).versions() == [1, 2]  # a version is never removed
    manager.poll_once()
    status = client.get("/readyz").json()
    assert status["version"] == 1 and status["labels"] == {"champion": 1}
    row = {"instances": instances(seed.penguins().slice(0, 1))}
    for i in range(10):  # the newest version (v2) is not served: the champion is
        answer = client.post("/v1/models/penguins:predict", json=row,
                             headers={"X-Request-Id": f"after-{i}"})
        assert answer.headers["x-model-version"] == "1"
    assert client.post("/v1/models/penguins/labels/challenger:predict",
                       json=row).status_code == 404
    client.close()
