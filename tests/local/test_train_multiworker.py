"""train with two local worker processes through TensorFlow's real collective runtime.

Each worker is its own Python process with TF_CONFIG on 127.0.0.1 (its own free port), started
within a second of the other, as Vertex AI starts the replicas of a custom job. The penguins
Dataset is one Parquet file of one row group, so the two workers read striped rows.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_dataset

pytestmark = [pytest.mark.local, pytest.mark.slow]

#: small and fixed: 8 steps of 2 x 16 rows an epoch; the learning-rate plateau may fire
HPARAMS = {"epochs": 6, "batch_size": 16, "learning_rate": 0.01}
TIMEOUT = 300

# a worker that calls the library function (distinct output paths per worker)
TRAIN = textwrap.dedent("""
    import json, sys
    from conveyor.train.train import train
    args = json.loads(sys.argv[1])
    r = train(**args)
    print("RESULT " + json.dumps({"first_epoch": r.first_epoch, "epochs_run": r.epochs_run,
                                  "chief": r.is_chief, "metrics": r.metrics,
                                  "global_batch": r.global_batch_size}), flush=True)
""")

# a worker that runs the KFP task body with the same artifacts on every worker, as every
# replica of a Vertex AI custom job runs the same executor input
TASK = textwrap.dedent("""
    import json, sys
    from kfp import dsl
    from conveyor.train import tasks
    a = json.loads(sys.argv[1])
    metrics = dsl.Metrics(uri=a["metrics"])
    tasks.train(dsl.Dataset(uri=a["dataset"]), dsl.Artifact(uri=a["transform"]),
                dsl.Model(uri=a["model"]), metrics, dsl.Artifact(uri=a["tensorboard"]),
                hyperparameters=a["hparams"])
    print("PUBLISHED " + json.dumps(metrics.metadata), flush=True)
""")


@pytest.fixture(scope="module")
def penguin_data(tmp_path_factory):
    from conveyor.io import Dataset
    from conveyor.local.seed import penguins
    from conveyor.transform.fit import fit
    from conveyor.transform.spec import propose_spec

    root = tmp_path_factory.mktemp("mw-penguins")
    ds = write_dataset(root / "ds", penguins())
    types = {c.name: c.type for c in Dataset(ds).info.columns}
    fit(Dataset(ds), propose_spec(types, "species", {"a": 1, "b": 1, "c": 1})).write(root / "t")
    return root / "ds", root / "t"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch(code: str, args: dict, log: Path, tf_config: dict | None,
           tmpdir: Path | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "CLUSTER_SPEC")}
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    out = open(log, "w")
    try:
        return subprocess.Popen([sys.executable, "-c", code, json.dumps(args, default=str)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    finally:
        out.close()


def pair(code: str, args: list[dict], logs: list[Path], kinds=("chief", "worker"),
         tmpdirs=(None, None)) -> list[subprocess.Popen]:
    """Two workers started together: `kinds` ("chief", "worker"): a chief and worker 0;
    ("worker", "worker"): workers 0 and 1 (worker 0 is the chief)."""
    ports = free_ports(2)
    cluster: dict[str, list[str]] = {}
    tasks = []
    for kind, port in zip(kinds, ports):
        cluster.setdefault(kind, []).append(f"127.0.0.1:{port}")
        tasks.append({"type": kind, "index": len(cluster[kind]) - 1})
    return [launch(code, a, log, {"cluster": cluster, "task": t}, tmp)
            for a, log, t, tmp in zip(args, logs, tasks, tmpdirs)]


def finish(procs: list[subprocess.Popen], logs: list[Path]) -> list[str]:
    deadline = time.monotonic() + TIMEOUT
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [log.read_text() for log in logs]
    for p, log, text in zip(procs, logs, texts):
        assert p.returncode == 0, f"{log.name} exited {p.returncode}:\n{text[-4000:]}"
    return texts


def tagged(text: str, tag: str) -> dict | None:
    lines = [line for line in text.splitlines() if line.startswith(tag + " ")]
    return json.loads(lines[-1][len(tag) + 1:]) if lines else None


def epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("epoch ")]


def eval_rows(ds: Path) -> tuple[dict, np.ndarray]:
    import pyarrow as pa

    from conveyor.io import Dataset

    table = pa.Table.from_batches(list(Dataset(ds).iter_batches("eval")))
    table = table.filter(table.column("species").is_valid())
    return {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names
            if n != "species"}, np.array(table.column("species").to_pylist())


def predict(model: Path, features: dict) -> tuple[np.ndarray, list[str]]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(model)).signatures["serving_default"]
    spec = serve.structured_input_signature[1]
    inputs = {}
    for name, s in spec.items():
        values = features[name]
        if s.dtype == tf.string:
            values = np.array(["" if v is None else str(v) for v in values], dtype=object)
        else:
            values = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        inputs[name] = tf.constant(values, dtype=s.dtype)
    out = serve(**inputs)
    return out["probabilities"].numpy(), [s.decode() for s in out["class_label"].numpy()]


def test_two_workers_train_in_lock_step_and_only_the_chief_writes(penguin_data, tmp_path):
    ds, t = penguin_data
    common = {"dataset_path": ds, "transform_path": t, "hparams": HPARAMS,
              "checkpoint_dir": tmp_path / "shared.checkpoints"}
    args = [dict(common, model_path=tmp_path / name / "model",
                 tensorboard_path=tmp_path / name / "tb") for name in ("chief", "worker")]
    logs = [tmp_path / "chief.log", tmp_path / "worker.log", tmp_path / "single.log"]
    procs = pair(TRAIN, args, logs[:2], tmpdirs=(tmp_path / "tmp0", tmp_path / "tmp1"))
    # the single-worker reference on the same data, at the same time (model.fit path)
    procs.append(launch(TRAIN, dict(common, model_path=tmp_path / "single" / "model",
                                    checkpoint_dir=tmp_path / "single.checkpoints"),
                        logs[2], None))
    chief_log, worker_log, single_log = finish(procs, logs)

    chief, worker, single = (tagged(x, "RESULT") for x in (chief_log, worker_log, single_log))
    assert chief["chief"] and not worker["chief"]
    assert chief["global_batch"] == 32  # 16 per replica x 2 replicas
    # lock-step: the same all-reduced losses and metrics on both, epoch by epoch
    assert epoch_lines(chief_log) == epoch_lines(worker_log)
    assert len(epoch_lines(chief_log)) == HPARAMS["epochs"] == chief["epochs_run"]
    assert chief["metrics"] == worker["metrics"]

    # outputs: the chief's only; the non-chief's temporary export and checkpoints are gone
    assert (tmp_path / "chief" / "model" / "saved_model.pb").exists()
    assert (tmp_path / "chief" / "model" / "assets.extra" / "labels.txt").exists()
    assert list((tmp_path / "chief" / "tb" / "train").glob("events.out.tfevents.*"))
    assert list((tmp_path / "chief" / "tb" / "validation").glob("events.out.tfevents.*"))
    assert not (tmp_path / "worker").exists()
    assert not list((tmp_path / "tmp1").iterdir()) and not list((tmp_path / "tmp0").iterdir())
    assert not (tmp_path / "shared.checkpoints").exists()

    # the model predicts like the single-worker one: eval accuracy within 0.05 of it (and of
    # the training run's own figure), class probabilities within 0.1 on average
    features, labels = eval_rows(ds)
    p_multi, c_multi = predict(tmp_path / "chief" / "model", features)
    p_single, c_single = predict(tmp_path / "single" / "model", features)
    acc_multi = float(np.mean(np.array(c_multi) == labels))
    acc_single = float(np.mean(np.array(c_single) == labels))
    assert acc_single > 0.85 and abs(acc_multi - acc_single) <= 0.05, (acc_multi, acc_single)
    assert abs(acc_multi - chief["metrics"]["val_accuracy"]) <= 0.05
    assert float(np.abs(p_multi - p_single).mean()) <= 0.1
    print(f"eval accuracy: 2 workers {acc_multi:.3f}, 1 worker {acc_single:.3f}; mean |dp| "
          f"{float(np.abs(p_multi - p_single).mean()):.4f}; single {single['metrics']}")


def test_a_killed_worker_resumes_from_the_last_finished_epoch(penguin_data, tmp_path):
    ds, t = penguin_data
    epochs = 12
    shared = {"dataset": ds, "transform": t, "model": tmp_path / "out" / "model",
              "metrics": tmp_path / "out" / "metrics", "tensorboard": tmp_path / "out" / "tb",
              "hparams": dict(HPARAMS, epochs=epochs, early_stopping_patience=0)}
    checkpoints = Path(f"{shared['model']}.checkpoints")
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    procs = pair(TASK, [shared, shared], logs, kinds=("worker", "worker"))
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            if (checkpoints / "checkpoint").exists():  # the chief saved an epoch
                break
            time.sleep(0.2)
        assert all(p.poll() is None for p in procs), \
            "a worker ended before the first checkpoint:\n" + logs[0].read_text()[-3000:]
        procs[1].send_signal(signal.SIGKILL)  # the non-chief dies; the chief cannot go on
        procs[1].wait()
        time.sleep(1.0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not shared["model"].exists()
    done_before = len(epoch_lines(logs[0].read_text()))
    assert done_before < epochs

    logs = [tmp_path / "w0-again.log", tmp_path / "w1-again.log"]
    chief_log, worker_log = finish(pair(TASK, [shared, shared], logs, kinds=("worker", "worker")),
                                   logs)
    published = tagged(chief_log, "PUBLISHED")
    assert published is not None, chief_log[-3000:]
    assert tagged(worker_log, "PUBLISHED") is None  # the non-chief ended before publishing
    assert "the chief publishes the outputs" in worker_log
    first = published["resumed_from_epoch"]
    assert 1 <= first <= done_before, (first, done_before)
    assert published["epochs_run"] == epochs - first
    assert epoch_lines(chief_log) == epoch_lines(worker_log)
    assert epoch_lines(chief_log)[0].startswith(f"epoch {first + 1}/{epochs} ")
    assert (shared["model"] / "saved_model.pb").exists()
    assert not checkpoints.exists()
