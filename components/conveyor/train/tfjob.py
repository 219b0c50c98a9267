"""Training on Kubeflow on GKE: conveyor's `train` as a Kubeflow Training Operator TFJob
(kubeflow.org/v1) of Chief + Worker replicas running train's own compiled command
(docs/distributed-training-pipelines.md).

`tfjob(...)` builds the job, and `submit_tfjob` / `wait_tfjob` / `delete_tfjob` /
`replica_problems` send, follow, remove and explain it with the kubernetes client (RBAC:
manifests/distributed-training/). This is what runs inside the launching task
(`conveyor.train.tfjob_launch`); the pipelines that compose it (`conveyor.pipelines`) import
`check_replicas` from here, never the other way round.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from conveyor import images
from conveyor.errors import InputError
from conveyor.gcp.kubernetes import custom_objects_api

#: The executor input placeholder: KFP replaces it with the task's executor input (JSON).
EXECUTOR_INPUT = "{{$}}"
TFJOB_GROUP, TFJOB_VERSION, TFJOB_PLURAL = "kubeflow.org", "v1", "tfjobs"


def check_replicas(train_replicas: Any) -> int:
    """`train_replicas` as an int >= 1, or an InputError naming it and what was expected."""
    if isinstance(train_replicas, bool) or not isinstance(train_replicas, int):
        raise InputError(f"train_replicas: {train_replicas!r} ({type(train_replicas).__name__}) "
                         "is not an integer; expected the number of training machines, >= 1 "
                         "(1: today's single train task)")
    if train_replicas < 1:
        raise InputError(f"train_replicas: {train_replicas} is below 1; expected the number of "
                         "training machines, >= 1 (1: the chief alone, 2: the chief and 1 worker)")
    return train_replicas


def check_text(name: str, value: Any) -> str:
    """`value` if it is a non-empty string, else an InputError naming the parameter."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name}: {value!r} is not a non-empty string")
    return value


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _replica_pod(image: str, command: list[str], args: list[str], *, service_account: str,
                 cpu: str, memory: str, gpus: int, gpu_resource: str) -> dict:
    """A TFJob replica's pod: the train command, unprivileged on a read-only root (conveyor's
    image runs as 10001), a writable /tmp, the pipeline root's bucket under /gcs through GKE's
    Cloud Storage FUSE CSI driver (every bucket the account may read: `bucketName: _`), which is
    where KFP's executor reads inputs and writes outputs for gs:// URIs. A failed container's
    last log lines become its termination message (`FallbackToLogsOnError`), which the
    launcher quotes when the job fails."""
    limits: dict[str, Any] = {"memory": memory}
    if gpus:
        limits[gpu_resource] = gpus
    return {
        "metadata": {"annotations": {"gke-gcsfuse/volumes": "true"},
                     "labels": {"app.kubernetes.io/part-of": "conveyor",
                                "app.kubernetes.io/component": "train"}},
        "spec": {
            "serviceAccountName": service_account,
            "restartPolicy": "Never",  # the operator restarts by exit code (ExitCode)
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "fsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "tensorflow",  # the Training Operator's default container name
                "image": image,
                "command": command,
                "args": args,
                "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                 {"name": "gcs", "mountPath": "/gcs"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}},
                        {"name": "gcs", "csi": {"driver": "gcsfuse.csi.storage.gke.io",
                                                "volumeAttributes": {"bucketName": "_"}}}],
        },
    }


def train_container() -> dict:
    """train's compiled container (command and args; `train_gpu` has the same, on another
    image), read from the compiled spec shipped in the package (conveyor/train/train.yaml,
    kept fresh by `conveyor compile` and its golden test) rather than compiled here: the
    launcher runs inside KFP's task runtime (`_KFP_RUNTIME=true`), where kfp has no
    `dsl.component` to compile with."""
    from importlib import resources

    import yaml

    spec = yaml.safe_load(resources.files("conveyor.train").joinpath("train.yaml").read_text())
    ((executor,),) = [list(spec["deploymentSpec"]["executors"].values())]
    return executor["container"]


def tfjob(name: str, executor_input: Mapping[str, Any], train_replicas: int, *,
          namespace: str, gpu: bool = False, gpus: int = 0,
          gpu_resource: str = "nvidia.com/gpu", cpu: str = "2", memory: str = "4G",
          service_account: str = "pipeline-runner",
          registry: str = images.DEFAULT_REGISTRY, image: str | None = None,
          ttl_seconds_after_finished: int = 3600) -> dict:
    """A TFJob running conveyor's train on `train_replicas` pods: 1 Chief and
    `train_replicas - 1` Workers, each with train's compiled command and `executor_input` (the
    task's, JSON) as its `--executor_input`, in `image` (default: conveyor's CPU or GPU image
    in `registry`); the operator sets TF_CONFIG in each. Restarts go by exit code
    (`restartPolicy: ExitCode`): a process killed by a signal (exit code >= 128: OOM-killed,
    evicted) is restarted up to `backoffLimit` times, and a process that ended with an error
    (1-127: an exception, bad input) fails the job at once, since running it again would fail
    again. Finished pods are kept (`cleanPodPolicy: None`) so the launcher can quote their
    termination messages before it deletes the job; `ttl_seconds_after_finished` removes a
    job whose launcher was gone before it could."""
    check_replicas(train_replicas)
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        raise InputError(f"TFJob name: {name!r} is not a DNS label (lower-case letters, digits "
                         "and '-', at most 63)")
    if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace):
        raise InputError(f"namespace: {namespace!r} is not a Kubernetes namespace name")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0 or (gpus and not gpu):
        raise InputError(f"gpus: {gpus!r} is not a count >= 0 (GPUs need gpu=True)")
    container = train_container()
    given = json.dumps(dict(executor_input), sort_keys=True)
    args = [given if a == EXECUTOR_INPUT else a for a in container["args"]]
    if image is not None:
        check_text("image", image)
    pod = _replica_pod(image or images.image(registry, "gpu" if gpu else "cpu"),
                       list(container["command"]), args, service_account=service_account,
                       cpu=cpu, memory=memory, gpus=gpus, gpu_resource=gpu_resource)
    replicas = {"Chief": {"replicas": 1, "restartPolicy": "ExitCode",
                          "template": copy.deepcopy(pod)}}
    if train_replicas > 1:
        replicas["Worker"] = {"replicas": train_replicas - 1, "restartPolicy": "ExitCode",
                              "template": copy.deepcopy(pod)}
    return {
        "apiVersion": f"{TFJOB_GROUP}/{TFJOB_VERSION}",
        "kind": "TFJob",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "conveyor"}},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None",
                          "ttlSecondsAfterFinished": ttl_seconds_after_finished,
                          "backoffLimit": 2},
            "tfReplicaSpecs": replicas,
        },
    }


def submit_tfjob(body: Mapping[str, Any], api_client=None) -> dict:
    """Create the TFJob in its namespace (in-cluster credentials, else the kubeconfig)."""
    namespace = body["metadata"]["namespace"]
    return custom_objects_api(api_client).create_namespaced_custom_object(
        TFJOB_GROUP, TFJOB_VERSION, namespace, TFJOB_PLURAL, dict(body))


def tfjob_state(job: Mapping[str, Any]) -> str:
    """The newest true condition of a TFJob's status (Created, Running, Restarting,
    Succeeded, Failed), '' before the operator has seen it."""
    conditions = [c for c in job.get("status", {}).get("conditions", [])
                  if str(c.get("status")) == "True"]
    return conditions[-1]["type"] if conditions else ""


def wait_tfjob(namespace: str, name: str, api_client=None, *, poll_seconds: float = 10.0,
               sleep: Callable[[float], None] = time.sleep, timeout_seconds: float = 7 * 86400,
               clock: Callable[[], float] = time.monotonic) -> dict:
    """Poll the TFJob until it succeeds (returns it) or fails (RuntimeError with the
    operator's message); TimeoutError after `timeout_seconds`."""
    api = custom_objects_api(api_client)
    start = clock()
    while True:
        job = api.get_namespaced_custom_object(TFJOB_GROUP, TFJOB_VERSION, namespace,
                                               TFJOB_PLURAL, name)
        state = tfjob_state(job)
        if state == "Succeeded":
            return job
        if state == "Failed":
            message = next((c.get("message", "") for c in reversed(job["status"]["conditions"])
                            if c.get("type") == "Failed"), "")
            raise RuntimeError(f"TFJob {namespace}/{name} failed: {message}")
        if clock() - start > timeout_seconds:
            raise TimeoutError(f"TFJob {namespace}/{name} still {state or 'pending'} after "
                               f"{timeout_seconds:.0f} s")
        sleep(poll_seconds)


def delete_tfjob(namespace: str, name: str, api_client=None) -> bool:
    """Delete the TFJob and, through their owner references, its pods and services (in the
    background); False when it was already gone."""
    from kubernetes import client as k8s
    from kubernetes.client.rest import ApiException

    try:
        custom_objects_api(api_client).delete_namespaced_custom_object(
            TFJOB_GROUP, TFJOB_VERSION, namespace, TFJOB_PLURAL, name,
            body=k8s.V1DeleteOptions(propagation_policy="Background"))
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def replica_pod_names(job: Mapping[str, Any]) -> list[str]:
    """The pods the Training Operator makes for a TFJob: `<job>-<replica type>-<index>`."""
    name = job["metadata"]["name"]
    out = []
    for kind, replica in job.get("spec", {}).get("tfReplicaSpecs", {}).items():
        out += [f"{name}-{kind.lower()}-{i}" for i in range(int(replica.get("replicas", 1)))]
    return out


def replica_problems(job: Mapping[str, Any], api_client=None) -> list[str]:
    """One line per replica pod that failed or never started: its exit code and reason and
    the tail of its termination message (its last log lines, `FallbackToLogsOnError`), or why
    it is waiting or unscheduled. Pods already gone are skipped; reading them needs only
    `get` on pods (pipeline-runner's own Role)."""
    from kubernetes import client as k8s
    from kubernetes.client.rest import ApiException

    namespace = job["metadata"]["namespace"]
    core = k8s.CoreV1Api(custom_objects_api(api_client).api_client)
    out = []
    for pod_name in replica_pod_names(job):
        try:
            pod = core.read_namespaced_pod(pod_name, namespace)
        except ApiException as exc:
            if exc.status in (403, 404):
                continue
            raise
        status = pod.status
        for container in (status.container_statuses if status else None) or []:
            state = container.state
            ended = (state.terminated if state else None) or (
                container.last_state.terminated if container.last_state else None)
            if ended is not None and ended.exit_code:
                message = (ended.message or "").strip()
                tail = "\n    ".join(message.splitlines()[-20:])
                out.append(f"{pod_name}: exit code {ended.exit_code} ({ended.reason or 'Error'})"
                           + (f":\n    {tail}" if tail else ""))
            elif state is not None and state.waiting is not None and state.waiting.reason:
                out.append(f"{pod_name}: waiting, {state.waiting.reason}: "
                           f"{state.waiting.message or ''}".rstrip(": "))
        if status and not status.container_statuses:
            for condition in status.conditions or []:
                if condition.type == "PodScheduled" and condition.status == "False":
                    out.append(f"{pod_name}: not scheduled, {condition.reason}: "
                               f"{condition.message or ''}".rstrip(": "))
    return out
