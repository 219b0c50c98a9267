"""train with two local worker processes through TensorFlow's real collective runtime.

Each worker is its own Python process with TF_CONFIG on 127.0.0.1 (its own free port), started
within a second of the other, as Vertex AI starts the replicas of a custom job. The penguins
Dataset is one Parquet file of one row group, so the two workers read striped rows.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from support import free_ports, write_dataset

pytestmark = [pytest.mark.local, pytest.mark.slow]

#: small and fixed: ~6 steps of 2 x 16 training rows an epoch; the learning-rate plateau may fire
HPARAMS = {"batch_size": 16, "learning_rate": 0.01}
TIMEOUT = 300

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
def penguin_data(penguin_transform):
    """The session's penguins Dataset and the transform fitted on it (tests/conftest.py)."""
    return penguin_transform / "ds", penguin_transform / "t"


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


def test_two_workers_killed_resume_train_like_one_and_only_the_chief_publishes(
        penguin_data, tmp_path):
    """One flow, to keep the file short (each TensorFlow process costs ~40 s of start-up
    here): two workers run the KFP task body; the non-chief is killed after the chief's first
    checkpoint; both restart and finish from the last finished epoch; the single-worker
    reference trains at the same time as the restarted pair."""
    ds, t = penguin_data
    epochs = 8
    hparams = dict(HPARAMS, epochs=epochs)

    def artifacts(name):
        out = tmp_path / name
        return {"dataset": ds, "transform": t, "model": out / "model", "hparams": hparams,
                "metrics": out / "metrics", "tensorboard": out / "tb"}

    chief_args, worker_args = artifacts("chief"), artifacts("worker")
    # each worker has its own artifact paths (so that what the non-chief writes shows), and
    # both see the one shared checkpoint folder, as all replicas see one store on Vertex AI
    checkpoints = Path(f"{chief_args['model']}.checkpoints")
    (tmp_path / "worker").mkdir()
    Path(f"{worker_args['model']}.checkpoints").symlink_to(checkpoints)

    # 1. both start; the non-chief is killed once the chief has saved an epoch
    logs = [tmp_path / "chief.log", tmp_path / "worker.log"]
    procs = pair(TASK, [chief_args, worker_args], logs)
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            if (checkpoints / "checkpoint").exists():
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
    assert not chief_args["model"].exists()
    done_before = len(epoch_lines(logs[0].read_text()))
    assert 1 <= done_before < epochs

    # 2. both restart (new ports), beside a single-worker run on the same data (model.fit)
    logs = [tmp_path / "chief-again.log", tmp_path / "worker-again.log",
            tmp_path / "single.log"]
    tmpdirs = (tmp_path / "tmp0", tmp_path / "tmp1")  # each worker's TMPDIR: left empty
    procs = pair(TASK, [chief_args, worker_args], logs[:2], tmpdirs=tmpdirs)
    single_args = artifacts("single")
    procs.append(launch(TASK, single_args, logs[2], None))
    chief_log, worker_log, single_log = finish(procs, logs)

    published = tagged(chief_log, "PUBLISHED")
    assert published is not None, chief_log[-3000:]
    # the workers validate on the rows held out of the train split that one worker holds out
    single = tagged(single_log, "PUBLISHED")
    assert published["validation_rows"] == single["validation_rows"] > 0
    assert published["training_rows"] == single["training_rows"]
    assert tagged(worker_log, "PUBLISHED") is None  # ended before the executor could publish
    assert "the chief publishes the outputs" in worker_log
    first = published["resumed_from_epoch"]
    assert 1 <= first <= done_before, (first, done_before)
    assert published["epochs_run"] == epochs - first and published["workers"] == 2
    # lock-step: the same all-reduced losses and metrics on both, epoch by epoch
    lines = epoch_lines(chief_log)
    assert lines == epoch_lines(worker_log) and len(lines) == epochs - first
    assert lines[0].startswith(f"epoch {first + 1}/{epochs} ")
    assert "global batch 32" in chief_log  # 16 per replica x 2 replicas

    # outputs: the chief's only; the non-chief's temporary export and checkpoints are gone
    out = tmp_path / "chief"
    assert (out / "model" / "saved_model.pb").exists()
    assert (out / "model" / "assets.extra" / "labels.txt").exists()
    assert list((out / "tb" / "train").glob("events.out.tfevents.*"))
    assert list((out / "tb" / "validation").glob("events.out.tfevents.*"))
    assert not checkpoints.exists()
    assert sorted(p.name for p in (tmp_path / "worker").iterdir()) == ["model.checkpoints"]
    assert [list(d.iterdir()) for d in tmpdirs] == [[], []]
    # TensorBoard: the chief's log dir marks the exported epoch, says why, and holds the hparams
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    board = ea.EventAccumulator(str(out / "tb"), size_guidance={ea.TENSORS: 0})
    board.Reload()
    (exported,) = board.Tensors("exported_epoch")
    assert tensor_util.make_ndarray(exported.tensor_proto).item() == published["best_epoch"]
    why = tensor_util.make_ndarray(board.Tensors("exported_epoch/why")[0].tensor_proto)
    assert f"resumed from a checkpoint at epoch {first + 1}" in why.item().decode()
    session = plugin_data_pb2.HParamsPluginData.FromString(
        board.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["workers"].number_value == 2

    # the model predicts like the single-worker one: eval accuracy within 0.05 of it (and of
    # its own validation figure, on rows held out of train), class probabilities within 0.1 of
    # it on average
    features, labels = eval_rows(ds)
    p_multi, c_multi = predict(out / "model", features)
    p_single, c_single = predict(tmp_path / "single" / "model", features)
    acc_multi = float(np.mean(np.array(c_multi) == labels))
    acc_single = float(np.mean(np.array(c_single) == labels))
    assert acc_single > 0.85 and abs(acc_multi - acc_single) <= 0.05, (acc_multi, acc_single)
    assert abs(acc_multi - published["val_accuracy"]) <= 0.05
    difference = float(np.abs(p_multi - p_single).mean())
    assert difference <= 0.1
    print(f"resumed at epoch {first + 1}; eval accuracy: 2 workers {acc_multi:.3f}, 1 worker "
          f"{acc_single:.3f}; mean |p2 - p1| {difference:.4f}")


def test_a_diverging_loss_stops_both_workers_with_its_cause(tmp_path):
    """A NaN loss under two workers: the same TrainingError on both (the loss is all-reduced,
    so both see it at the same epoch), nothing exported, the fail-fast marker beside the model."""
    import pyarrow as pa

    from conveyor.io import Dataset
    from conveyor.transform.fit import fit
    from conveyor.transform.spec import FeatureSpec

    table = pa.table({"x": [float(i) for i in range(200)],
                      "y": [float(i) * 1e17 for i in range(200)]})
    ds = write_dataset(tmp_path / "ds", table)
    spec = FeatureSpec.from_dict({"label": "y", "task": "regression",
                                  "features": {"x": {"kind": "numeric", "transform": "none"}}})
    fit(Dataset(ds), spec).write(tmp_path / "t")
    args = {"dataset": ds, "transform": tmp_path / "t", "model": tmp_path / "out" / "model",
            "metrics": tmp_path / "out" / "metrics", "tensorboard": tmp_path / "out" / "tb",
            "hparams": {"epochs": 3, "batch_size": 16, "learning_rate": 1e6}}
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    procs = pair(TASK, [args, args], logs, kinds=("worker", "worker"))
    for p in procs:
        p.wait(timeout=TIMEOUT)
    errors = []
    for p, log in zip(procs, logs):
        text = log.read_text()
        lines = [x for x in text.splitlines() if x.startswith("conveyor.errors.TrainingError: ")]
        assert p.returncode != 0 and lines, text[-3000:]
        assert "loss became" in lines[-1] and "'y' reaches" in lines[-1]  # the cause, named
        errors.append(lines[-1])
    assert errors[0] == errors[1]  # the same epoch, the same message
    assert not (tmp_path / "out" / "model").exists()
    assert (tmp_path / "out" / "model.conveyor-failed.json").exists()
