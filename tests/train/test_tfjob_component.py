"""`train_tfjob` run by kfp.local as a pipeline task, against the stand-in Training Operator
(tests/support/tfjob_operator.py) on 127.0.0.1: the TFJob the task submits really trains. Its
Chief and Worker run train's own compiled command (`sh -ec ... python3 -m kfp.dsl.executor_main
--executor_input <the replica's> --function_to_execute train`) as two local processes with the
TF_CONFIG the operator sets, through TensorFlow's collective runtime; then the task's own
outputs (model, metrics, TensorBoard logs, in kfp.local's executor output) are the chief's."""

import json
from pathlib import Path

import pytest
from support.tfjob_operator import TrainingOperator

pytestmark = [pytest.mark.local, pytest.mark.slow]

HPARAMS = {"batch_size": 16, "learning_rate": 0.01, "epochs": 3}


@pytest.fixture()
def penguin_inputs(penguin_transform):
    """The session's penguins Dataset and the transform fitted on it (tests/conftest.py)."""
    return penguin_transform / "ds", penguin_transform / "t"


def test_the_tasks_tfjob_trains_on_two_workers_and_its_outputs_are_the_chiefs(
        penguin_inputs, kfp_local, tmp_path, monkeypatch):
    from kfp import dsl

    from conveyor.train.tfjob_component import train_tfjob

    ds, t = penguin_inputs
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):  # never in-cluster
        monkeypatch.delenv(name, raising=False)

    @dsl.pipeline(name="tfjob-train")
    def pipeline():
        dataset = dsl.importer(artifact_uri=str(ds), artifact_class=dsl.Dataset,
                               metadata={"rows": 344}).set_display_name("dataset")
        preprocessing = dsl.importer(artifact_uri=str(t), artifact_class=dsl.Artifact)
        train_tfjob(dataset=dataset.output, preprocessing=preprocessing.output,
                    hyperparameters=HPARAMS, train_replicas=2)

    with TrainingOperator(tmp_path / "pods") as operator:
        # the task's kubernetes client reads this kubeconfig (namespace ml): 127.0.0.1 only
        monkeypatch.setenv("KUBECONFIG", str(operator.kubeconfig(tmp_path / "kubeconfig")))
        pipeline()
        assert operator.jobs == {} and operator.running() == 0  # deleted when done

    (post,) = [p for m, p in operator.requests if m == "POST"]
    assert post == "/apis/kubeflow.org/v1/namespaces/ml/tfjobs"
    assert sum(m == "DELETE" for m, _ in operator.requests) == 1

    # the two pods ran train's executor with the task's inputs; only the chief published
    pods = sorted(p.name for p in (tmp_path / "pods").iterdir())
    assert [p.rsplit("-", 2)[1:] for p in pods] == [["chief", "0"], ["worker", "0"]]
    chief_log, worker_log = [(tmp_path / "pods" / p / "log").read_text() for p in pods]
    assert "train: worker 0 of 2 (chief:0, chief, from TF_CONFIG)" in chief_log, \
        chief_log[-3000:]
    assert "global batch 32" in chief_log  # 16 per replica x 2 replicas
    assert "the chief publishes the outputs" in worker_log, worker_log[-3000:]
    epochs = [x for x in chief_log.splitlines() if x.startswith("epoch ")]
    assert epochs and epochs == [x for x in worker_log.splitlines()
                                 if x.startswith("epoch ")]  # lock-step, all-reduced

    # the task's outputs: under its own folder, the staging folder gone
    (task,) = [p for p in kfp_local.glob("tfjob-train-*/train-tfjob")]
    assert (task / "model" / "saved_model.pb").exists()
    assert (task / "model" / "assets.extra" / "labels.txt").exists()
    assert list((task / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert not (task / "tfjob-staging").exists()
    output = json.loads((task / "executor_output.json").read_text())["artifacts"]
    metrics = output["metrics"]["artifacts"][0]["metadata"]
    assert metrics["workers"] == 2 and metrics["epochs_run"] == len(epochs)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert output["model"]["artifacts"][0]["metadata"]["format"] == "saved_model"
    assert output["tensorboard"]["artifacts"][0]["metadata"]["log_dir"] == \
        str(task / "tensorboard")

    # and the model serves
    import tensorflow as tf

    serve = tf.saved_model.load(str(task / "model")).signatures["serving_default"]
    assert "class_label" in serve.structured_outputs
    assert Path(ds).exists()


def test_outputs_staged_on_cloud_storage_are_collected_and_the_staging_removed(
        bucket, tmp_path):
    """On GKE the staging folder is gs:// (the replicas write it through /gcs); the task reads
    it with the storage client (the GCS emulator here)."""
    from kfp import dsl

    from conveyor import errors, gcp
    from conveyor.train import tfjob_launch

    name = bucket("tfjob-staging")
    task = f"gs://{name}/{tmp_path.name}/run-1/train-tfjob"
    staging = tfjob_launch.staging_uri(f"{task}/model")
    assert staging == f"{task}/tfjob-staging"
    prefix = staging[len(f"gs://{name}/"):]
    store = gcp.storage_client().bucket(name)
    files = {"model/saved_model.pb": "graph", "model/variables/variables.index": "index",
             "model/Ünïcode ².txt": "note", "tensorboard/train/events.out.tfevents.1": "ev"}
    for path, text in files.items():
        store.blob(f"{prefix}/{path}").upload_from_string(text)
    store.blob(f"{prefix}/model/").upload_from_string("")  # a folder placeholder
    assert tfjob_launch.read_text(f"{staging}/executor_output.json") is None
    assert tfjob_launch.recorded_failure(staging) is None
    store.blob(f"{prefix}/executor_output.json").upload_from_string(json.dumps({"artifacts": {
        "metrics": {"artifacts": [{"metadata": {"workers": 2}}]},
        "tensorboard": {"artifacts": [{"metadata": {
            "log_dir": f"/gcs/{name}/{prefix}/tensorboard"}}]}}}))

    out = tmp_path / "out"
    outputs = {"model": dsl.Model(uri=str(out / "model")),
               "metrics": dsl.Metrics(uri=str(out / "metrics")),
               "tensorboard": dsl.Artifact(uri=str(out / "tensorboard"))}
    copied = tfjob_launch.collect(staging, outputs)
    assert copied == {"model": 3, "metrics": 0, "tensorboard": 1}
    for path, text in files.items():
        assert (out / path).read_text() == text
    assert outputs["metrics"].metadata == {"workers": 2}
    assert outputs["tensorboard"].metadata == {"log_dir": str(out / "tensorboard")}
    assert list(store.client.list_blobs(name, prefix=prefix)) == []  # staging removed

    # a replica's fail-fast marker, read from the bucket: the same error class and message
    store.blob(f"{prefix}/model.conveyor-failed.json").upload_from_string(json.dumps(
        {"type": "EmptyDataError", "message": "split 'train' has no rows", "task": "train"}))
    failure = tfjob_launch.recorded_failure(staging)
    assert type(failure) is errors.EmptyDataError and str(failure) == "split 'train' has no rows"
