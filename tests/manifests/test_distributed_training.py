"""Distributed training on Kubeflow on GKE, offline: the RBAC kustomization renders and
validates, the TFJob conveyor builds is a valid, hardened job of 1 Chief + N-1 Workers running
train's command, and the kubernetes client sends it and follows it to the end (against a
loopback recorder standing in for the API server)."""

import json

import kubernetes_validate
import pytest
from google.protobuf import json_format
from support import loopback_api
from test_manifests import KUBERNETES, pod_security_problems, rbac_problems, render

from conveyor import images
from conveyor.errors import InputError
from conveyor.train import tfjob
from conveyor.train.component import train, train_gpu

EXECUTOR_INPUT = {
    "inputs": {"parameterValues": {"hyperparameters": {"épocas": 3, "note": 'a "quoted" \\ value'},
                                   "module_file": ""},
               "artifacts": {"dataset": {"artifacts": [{"uri": "gs://acme-ml/root/run/ds",
                                                        "metadata": {"rows": 344}}]}}},
    "outputs": {"artifacts": {"model": {"artifacts": [{"uri": "gs://acme-ml/root/run/model"}]}},
                "outputFile": "/gcs/acme-ml/root/run/train/executor_output.json"},
}


def client(url):
    from kubernetes import client as k8s

    return k8s.ApiClient(k8s.Configuration(host=url))


def test_the_rbac_grants_only_creating_following_and_deleting_tfjobs():
    docs = render("distributed-training")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    assert rbac_problems(docs) == []
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["rules"] == [{"apiGroups": ["kubeflow.org"], "resources": ["tfjobs"],
                              "verbs": ["create", "get", "list", "watch", "delete"]}]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner"}]


@pytest.mark.parametrize("replicas, gpu", [(2, False), (4, True)])
def test_the_tfjob_runs_train_on_a_chief_and_workers(replicas, gpu):
    body = tfjob.tfjob("penguins-train-7f3a", EXECUTOR_INPUT, replicas, namespace="ml",
                       gpu=gpu, gpus=2 if gpu else 0)
    assert (body["apiVersion"], body["kind"]) == ("kubeflow.org/v1", "TFJob")
    specs = body["spec"]["tfReplicaSpecs"]
    assert {k: v["replicas"] for k, v in specs.items()} == {"Chief": 1, "Worker": replicas - 1}
    compiled = json_format.MessageToDict((train_gpu if gpu else train).pipeline_spec)
    (want,) = compiled["deploymentSpec"]["executors"].values()
    for kind, replica in specs.items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{kind.lower()}-0"},
               "spec": replica["template"]["spec"]}
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)
        assert pod_security_problems(pod) == []
        (container,) = pod["spec"]["containers"]
        assert container["name"] == "tensorflow"  # where the operator puts TF_CONFIG and ports
        assert container["image"] == images.image(variant="gpu" if gpu else "cpu")
        assert container["command"] == want["container"]["command"]
        args = container["args"]
        assert json.loads(args[args.index("--executor_input") + 1]) == EXECUTOR_INPUT
        assert args[args.index("--function_to_execute") + 1] == "train"
        limits = container["resources"]["limits"]
        assert limits.get("nvidia.com/gpu") == (2 if gpu else None)
        assert replica["template"]["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"
    assert body["spec"]["runPolicy"]["cleanPodPolicy"] == "None"
    assert body["spec"]["runPolicy"]["ttlSecondsAfterFinished"] > 0


def test_one_replica_is_a_chief_alone():
    body = tfjob.tfjob("t1", EXECUTOR_INPUT, 1, namespace="ml")
    assert list(body["spec"]["tfReplicaSpecs"]) == ["Chief"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="Penguins_Train"), "TFJob name: 'Penguins_Train' is not a DNS label"),
    (dict(name="x" * 64), "is not a DNS label"),
    (dict(namespace="ML team"), "namespace: 'ML team'"),
    (dict(train_replicas=0), "train_replicas: 0 is below 1"),
    (dict(train_replicas="2"), "train_replicas: '2' .* is not an integer"),
    (dict(gpus=2), "GPUs need gpu=True"),
    (dict(gpu=True, gpus=-1), "gpus: -1"),
])
def test_bad_tfjob_arguments_are_named(kwargs, message):
    args = {"name": "t", "executor_input": EXECUTOR_INPUT, "train_replicas": 2,
            "namespace": "ml", **kwargs}
    with pytest.raises(InputError, match=message):
        tfjob.tfjob(**args)


def test_the_tfjob_is_created_and_followed_to_success():
    body = tfjob.tfjob("penguins-train", EXECUTOR_INPUT, 2, namespace="ml")
    states = iter([[], [{"type": "Created", "status": "True"}],
                   [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}],
                   [{"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
                    {"type": "Succeeded", "status": "True"}]])

    def answer(method, path, sent):
        if method == "POST":
            return sent
        return {**body, "status": {"conditions": next(states)}}

    slept = []
    with loopback_api(answer) as (url, seen):
        created = tfjob.submit_tfjob(body, client(url))
        done = tfjob.wait_tfjob("ml", "penguins-train", client(url), sleep=slept.append,
                                poll_seconds=5)
    assert created["metadata"]["name"] == "penguins-train"
    method, path, sent, content_type = seen[0]
    assert (method, path) == ("POST", "/apis/kubeflow.org/v1/namespaces/ml/tfjobs")
    assert content_type == "application/json"
    assert sent == body
    assert [(m, p) for m, p, _, _ in seen[1:]] == \
        [("GET", "/apis/kubeflow.org/v1/namespaces/ml/tfjobs/penguins-train")] * 4
    assert tfjob.tfjob_state(done) == "Succeeded"
    assert slept == [5, 5, 5]


def test_a_failed_tfjob_fails_the_task_with_the_operators_message():
    def answer(method, path, sent):
        return {"status": {"conditions": [
            {"type": "Running", "status": "False"},
            {"type": "Failed", "status": "True",
             "message": "TFJob ml/t has failed because 1 Worker replica(s) failed."}]}}

    with loopback_api(answer) as (url, _):
        with pytest.raises(RuntimeError, match="TFJob ml/t failed: .*1 Worker replica"):
            tfjob.wait_tfjob("ml", "t", client(url), sleep=lambda s: None)


def test_a_tfjob_that_never_ends_times_out():
    ticks = iter(range(0, 10_000, 100))

    def answer(method, path, sent):
        return {"status": {"conditions": [{"type": "Running", "status": "True"}]}}

    with loopback_api(answer) as (url, _):
        with pytest.raises(TimeoutError, match="still Running after 250 s"):
            tfjob.wait_tfjob("ml", "t", client(url), sleep=lambda s: None,
                             timeout_seconds=250, clock=lambda: next(ticks))
