"""The TFJob launcher (`conveyor.train.tfjob_launch`) against a stand-in for the Kubernetes API and
the Training Operator on 127.0.0.1: the kubernetes client's real requests create, read and
delete kubeflow.org/v1 TFJobs and read their pods, and each created job's Chief and Worker
commands really run as local processes with the TF_CONFIG the operator would give them.

The stand-in is tests/support/tfjob_operator.py. Here the pods' commands are small Python
programs that read the replica's real executor input (fast failure paths);
tests/train/test_tfjob_component.py runs train's own command in them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from support.tfjob_operator import TrainingOperator

from conveyor import errors, images
from conveyor.errors import InputError
from conveyor.train import tfjob, tfjob_launch

# -- what the stand-in's pods run in these fast tests: Python that reads the replica's real
# executor input (the --executor_input argument train's command is given)

REPLICA = textwrap.dedent("""
    import json, os, sys, time
    executor_input = json.loads(sys.argv[sys.argv.index("--executor_input") + 1])
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    outputs = executor_input["outputs"]
    model = outputs["artifacts"]["model"]["artifacts"][0]["uri"]
    behaviour = executor_input["inputs"]["parameterValues"]["hyperparameters"]["behaviour"]
    {body}
""")

SUCCEED = """
if task["type"] == "chief":
    os.makedirs(model)
    open(os.path.join(model, "saved_model.pb"), "w").write("a model")
    tb = outputs["artifacts"]["tensorboard"]["artifacts"][0]["uri"]
    os.makedirs(os.path.join(tb, "train"))
    open(os.path.join(tb, "train", "events.out.tfevents.1"), "w").write("events")
    open(outputs["outputFile"], "w").write(json.dumps({"artifacts": {
        "model": {"artifacts": [{"uri": model, "metadata": {"framework": "tensorflow"}}]},
        "metrics": {"artifacts": [{"metadata": {"workers": 2, "val_accuracy": 0.97}}]},
        "tensorboard": {"artifacts": [{"metadata": {"log_dir": tb}}]}}}))
"""


def replica(body: str):
    code = REPLICA.format(body=textwrap.dedent(body).strip())
    return lambda kind, index, container: [sys.executable, "-c", code] + container["args"]


def artifacts(root: Path, prefix: str = ""):
    from kfp import dsl

    task = f"{prefix}{root}/run-1/train-tfjob"
    dataset = dsl.Dataset(uri=f"{prefix}{root}/run-1/ingest/dataset", metadata={"rows": 344})
    preprocessing = dsl.Artifact(uri=f"{prefix}{root}/run-1/transform/preprocessing")
    return (dataset, preprocessing, dsl.Model(uri=f"{task}/model"),
            dsl.Metrics(uri=f"{task}/metrics"), dsl.Artifact(uri=f"{task}/tensorboard"))


def launch(operator, arts, behaviour="succeed", **kwargs):
    settings = {"hyperparameters": {"behaviour": behaviour, "epochs": 2}, "train_replicas": 2,
                "namespace": "ml", "poll_seconds": 0.05, "api_client": operator.client()}
    settings.update(kwargs)
    return tfjob_launch.launch(*arts, **settings)


def posts(operator) -> int:
    return sum(m == "POST" for m, _ in operator.requests)


def deletes(operator) -> int:
    return sum(m == "DELETE" for m, _ in operator.requests)


def test_the_replicas_get_the_tasks_inputs_and_write_to_staging_beside_its_outputs(tmp_path):
    dataset, preprocessing, model, metrics, tensorboard = artifacts(Path("/bucket"), "gs:/")
    staging = tfjob_launch.staging_uri(model.uri)
    assert staging == "gs://bucket/run-1/train-tfjob/tfjob-staging"
    given = tfjob_launch.replica_executor_input(
        {"dataset": dataset, "preprocessing": preprocessing},
        {"model": model, "metrics": metrics, "tensorboard": tensorboard},
        {"hyperparameters": {"épocas": 3}, "module_file": ""}, staging)
    assert given["inputs"]["parameterValues"] == {"hyperparameters": {"épocas": 3},
                                                  "module_file": ""}
    (ds,) = given["inputs"]["artifacts"]["dataset"]["artifacts"]
    assert ds == {"name": "", "type": {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"},
                  "uri": "gs://bucket/run-1/ingest/dataset", "metadata": {"rows": 344}}
    outs = given["outputs"]["artifacts"]
    assert {n: a["artifacts"][0]["uri"] for n, a in outs.items()} == {
        n: f"{staging}/{n}" for n in ("model", "metrics", "tensorboard")}
    assert outs["metrics"]["artifacts"][0]["type"]["schemaTitle"] == "system.Metrics"
    assert given["outputs"]["outputFile"] == \
        "/gcs/bucket/run-1/train-tfjob/tfjob-staging/executor_output.json"
    # the same job name on every attempt of one task, another for another task
    assert tfjob_launch.job_name(model.uri) == tfjob_launch.job_name(model.uri + "/")
    assert tfjob_launch.job_name(model.uri) != tfjob_launch.job_name("gs://bucket/run-2/t/model")
    assert tfjob._DNS_LABEL.match(tfjob_launch.job_name(model.uri))


@pytest.mark.parametrize("uri, message", [
    ("minio://mlpipeline/run-1/train/model",
     "model: artifact URI 'minio://.*pipeline root must be a gs:// bucket"),
    ("gs://bucket/model", "not inside a task's folder"),
])
def test_a_pipeline_root_the_pods_cannot_reach_is_named(uri, message):
    with pytest.raises(InputError, match=message):
        tfjob_launch.staging_uri(uri)


def test_a_successful_job_is_collected_into_the_tasks_outputs_and_deleted(tmp_path):
    arts = artifacts(tmp_path / "root")
    model, metrics, tensorboard = arts[2:]
    with TrainingOperator(tmp_path / "pods", replica(SUCCEED)) as operator:
        job = launch(operator, arts)
        assert operator.jobs == {} and operator.running() == 0
    assert tfjob.tfjob_state(job) == "Succeeded"
    assert (Path(model.path) / "saved_model.pb").read_text() == "a model"
    assert (Path(tensorboard.path) / "train" / "events.out.tfevents.1").exists()
    assert metrics.metadata == {"workers": 2, "val_accuracy": 0.97}
    assert model.metadata == {"framework": "tensorflow"}
    assert tensorboard.metadata == {"log_dir": tensorboard.path}  # its own, not the staging's
    assert not Path(tfjob_launch.staging_uri(model.uri)).exists()
    assert (posts(operator), deletes(operator)) == (1, 1)


def test_a_failed_replica_fails_the_task_with_its_last_log_lines_and_the_job_is_deleted(
        tmp_path):
    arts = artifacts(tmp_path / "root")
    fail = """
        if task["type"] == "worker":
            print("reading shard 1 of 2")
            raise OSError("No space left on device: /tmp/conveyor-shard")
        time.sleep(120)  # the chief waits for the collective; killed with the job
    """
    with TrainingOperator(tmp_path / "pods", replica(fail)) as operator:
        with pytest.raises(RuntimeError) as caught:
            launch(operator, arts)
        assert operator.jobs == {} and operator.running() == 0  # deleted, the chief killed
    name = tfjob_launch.job_name(arts[2].uri)
    message = str(caught.value)
    assert message.startswith(f"TFJob ml/{name} failed: TFJob ml/{name} has failed because 1 "
                              "Worker replica(s) failed.")
    assert f"{name}-worker-0: exit code 1 (Error):" in message
    assert "OSError: No space left on device: /tmp/conveyor-shard" in message
    assert f"{name}-chief-0" not in message  # still running when the job failed: not blamed
    assert deletes(operator) == 1
    assert not Path(arts[2].path).exists()  # no outputs


def test_bad_input_on_a_replica_fails_the_task_once_and_a_retry_at_once(tmp_path):
    arts = artifacts(tmp_path / "root")
    # a replica fails as train does on bad input: through conveyor.failfast, beside its model
    bad = """
        from conveyor import errors, failfast
        with failfast.fail_once(model, "train"):
            raise errors.SchemaError("label 'species': column not in the dataset")
    """
    with TrainingOperator(tmp_path / "pods", replica(bad)) as operator:
        with pytest.raises(errors.SchemaError, match=r"^label 'species': column not in the "
                           r"dataset \(TFJob ml/conveyor-train-\w+\)"):
            launch(operator, arts)
        assert operator.jobs == {}
        with pytest.raises(errors.SchemaError, match="not retried; an earlier TFJob"):
            launch(operator, arts)  # the retry: no second job
    assert (posts(operator), deletes(operator)) == (1, 1)


def test_a_job_left_by_an_earlier_attempt_is_followed_not_started_twice(tmp_path):
    arts = artifacts(tmp_path / "root")
    with TrainingOperator(tmp_path / "pods", replica(SUCCEED)) as operator:
        dataset, preprocessing, model, metrics, tensorboard = arts
        staging = tfjob_launch.staging_uri(model.uri)
        given = tfjob_launch.replica_executor_input(
            {"dataset": dataset, "preprocessing": preprocessing},
            {"model": model, "metrics": metrics, "tensorboard": tensorboard},
            {"hyperparameters": {"behaviour": "succeed"}}, staging)
        tfjob.submit_tfjob(tfjob.tfjob(tfjob_launch.job_name(model.uri), given, 2,
                                       namespace="ml"), operator.client())
        launch(operator, arts)
        assert operator.jobs == {}
    assert posts(operator) == 2  # the second one answered 409 AlreadyExists
    assert (Path(model.path) / "saved_model.pb").exists()
    assert metrics.metadata["workers"] == 2


def test_outputs_staged_by_an_earlier_successful_job_are_collected_without_a_new_one(tmp_path):
    arts = artifacts(tmp_path / "root")
    model, metrics = arts[2], arts[3]
    staging = Path(tfjob_launch.staging_uri(model.uri))
    (staging / "model").mkdir(parents=True)
    (staging / "model" / "saved_model.pb").write_text("a model")
    (staging / "executor_output.json").write_text(json.dumps({"artifacts": {
        "metrics": {"artifacts": [{"metadata": {"workers": 2}}]}}}))
    with TrainingOperator(tmp_path / "pods") as operator:
        launch(operator, arts)
    assert operator.requests == []
    assert (Path(model.path) / "saved_model.pb").exists() and metrics.metadata == {"workers": 2}
    assert not staging.exists()


def test_a_job_that_never_ends_times_out_and_is_deleted(tmp_path):
    arts = artifacts(tmp_path / "root")
    with TrainingOperator(tmp_path / "pods", replica("time.sleep(120)")) as operator:
        with pytest.raises(TimeoutError, match=r"still Running after 1 s"):
            launch(operator, arts, timeout_seconds=1)
        assert operator.jobs == {} and operator.running() == 0
    assert deletes(operator) == 1


def test_a_refused_job_names_the_apis_answer(tmp_path):
    arts = artifacts(tmp_path / "root")
    with TrainingOperator(tmp_path / "pods") as operator:
        with pytest.raises(RuntimeError, match=r"TFJob no-such/conveyor-train-\w+: the API "
                           r"refused it: 404 Not Found: .*namespaces .*no-such.* not found"):
            launch(operator, arts, namespace="no-such")
    assert operator.jobs == {}


def test_the_namespace_defaults_to_the_kubeconfigs_and_a_missing_one_is_named(
        tmp_path, monkeypatch):
    arts = artifacts(tmp_path / "root")
    with TrainingOperator(tmp_path / "pods", replica(SUCCEED)) as operator:
        monkeypatch.setenv("KUBECONFIG", str(operator.kubeconfig(tmp_path / "kubeconfig",
                                                                 namespace="team-a")))
        assert tfjob_launch.own_namespace() == "team-a"
        job = launch(operator, arts, namespace="")
    assert job["metadata"]["namespace"] == "team-a"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    with pytest.raises(InputError, match="namespace: not given"):
        tfjob_launch.own_namespace()


@pytest.mark.parametrize("kwargs, message", [
    ({"train_replicas": 0}, "train_replicas: 0 is below 1"),
    ({"gpus": 1, "gpu_resource": "NVIDIA_TESLA_T4"},
     "gpu_resource: 'NVIDIA_TESLA_T4' is not a Kubernetes extended resource name"),
    ({"gpus": -1}, "gpus: -1"),
])
def test_bad_settings_are_named_before_anything_is_sent(tmp_path, kwargs, message):
    with TrainingOperator(tmp_path / "pods") as operator:
        with pytest.raises(InputError, match=message):
            launch(operator, artifacts(tmp_path / "root"), **kwargs)
    assert operator.requests == []


def test_the_replicas_run_the_image_given_and_restart_only_when_killed():
    body = tfjob.tfjob("t", {}, 3, namespace="ml", image="eu.gcr.io/acme/conveyor:9")
    for replica_spec in body["spec"]["tfReplicaSpecs"].values():
        assert replica_spec["restartPolicy"] == "ExitCode"
        (container,) = replica_spec["template"]["spec"]["containers"]
        assert container["image"] == "eu.gcr.io/acme/conveyor:9"
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert tfjob.replica_pod_names(body) == ["t-chief-0", "t-worker-0", "t-worker-1"]


# -- the pipelines: train_replicas > 1 on Kubeflow compiles to the launcher

def test_train_ops_on_kubeflow_give_the_launcher_and_bad_clusters_are_named():
    from conveyor.pipelines import steps
    from conveyor.train.component import train, train_gpu
    from conveyor.train.tfjob_component import train_tfjob

    assert steps.train_ops(1, cluster="kubeflow") == (train, train_gpu)
    assert steps.train_ops(3, cluster="kubeflow") == (train_tfjob, train_tfjob)
    with pytest.raises(InputError, match="cluster: 'gke' is not one of vertex, kubeflow"):
        steps.train_ops(2, cluster="gke")


def test_the_kubeflow_spec_launches_tfjobs_with_conveyors_images(tmp_path):
    from kfp import compiler

    from conveyor.pipelines import training

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(training.make_pipeline(3, cluster="kubeflow"), str(path))
    spec = yaml.safe_load(path.read_text())
    assert spec["pipelineInfo"]["name"] == "conveyor-training-kubeflow-distributed"
    tasks = {name: task for c in spec["components"].values()
             for name, task in c.get("dag", {}).get("tasks", {}).items()
             if name.startswith("train")}
    assert sorted(tasks) == ["train-tfjob", "train-tfjob-2"]
    constants = {name: {k: v["runtimeValue"]["constant"]
                        for k, v in task["inputs"]["parameters"].items() if "runtimeValue" in v}
                 for name, task in tasks.items()}
    assert constants["train-tfjob"] == {"train_replicas": 3, "image": images.image()}
    assert constants["train-tfjob-2"] == {"train_replicas": 3, "cpu": "4", "memory": "12G",
                                          "image": images.image(variant="gpu")}
    gpu_inputs = tasks["train-tfjob-2"]["inputs"]["parameters"]
    assert gpu_inputs["gpus"]["componentInputParameter"] == "pipelinechannel--train_gpus"
    assert gpu_inputs["gpu_resource"]["componentInputParameter"] == \
        "pipelinechannel--train_accelerator"
    for executor in spec["deploymentSpec"]["executors"].values():
        assert executor["container"]["image"] == images.image()  # the launcher: CPU, no GPU
    moved = yaml.safe_dump(images.retarget(spec, "eu.gcr.io/acme"))
    assert images.DEFAULT_REGISTRY not in moved  # --registry moves the replicas' images too


LAUNCHER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from kubernetes import client as k8s
    from kfp import dsl
    from conveyor.train import tfjob_launch
    url, root = sys.argv[1], Path(sys.argv[2])
    task = root / "run-1" / "train-tfjob"
    tfjob_launch.launch(dsl.Dataset(uri=str(root / "ds")), dsl.Artifact(uri=str(root / "t")),
                        dsl.Model(uri=str(task / "model")), dsl.Metrics(uri=str(task / "m")),
                        dsl.Artifact(uri=str(task / "tb")), hyperparameters={}, namespace="ml",
                        poll_seconds=0.05, api_client=k8s.ApiClient(k8s.Configuration(host=url)))
""")


def test_a_cancelled_task_deletes_its_job(tmp_path):
    """KFP stops a cancelled run's task pods with SIGTERM: the job goes with the task."""
    with TrainingOperator(tmp_path / "pods", lambda kind, index, container: [
            sys.executable, "-c", "import time; time.sleep(120)"]) as operator:
        task = subprocess.Popen([sys.executable, "-c", LAUNCHER, operator.url,
                                 str(tmp_path / "root")], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while operator.running() < 2 and time.monotonic() < deadline:  # started in turn
                assert task.poll() is None, task.stdout.read()
                time.sleep(0.05)
            assert operator.running() == 2  # the chief and the worker
            task.send_signal(signal.SIGTERM)
            output, _ = task.communicate(timeout=30)
        finally:
            if task.poll() is None:
                task.kill()
                task.wait()
        assert task.returncode == 128 + signal.SIGTERM, output
        assert operator.jobs == {} and operator.running() == 0
    assert deletes(operator) == 1
    assert "deleted" in output
