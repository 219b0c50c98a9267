"""Training on more than one machine: conveyor's `train` as a Vertex AI custom job with worker
pools, and as a Kubeflow Training Operator TFJob on GKE (docs/distributed-training-pipelines.md).

`custom_job_train(replicas)` turns `train` (or `train_gpu`) into a KFP component that Vertex AI
Pipelines runs as a CustomJob: the task itself is Google Cloud Pipeline Components' launcher
(`gcr.io/ml-pipeline/google-cloud-pipeline-components:<GCPC_VERSION>`, which creates the job and
polls it), and worker pool 0 (the chief, 1 replica) and worker pool 1 (`replicas - 1` workers)
run train's own command and arguments in conveyor's image. The executor input (`{{$}}`,
JSON-escaped once as it sits inside the payload string) is resolved by the backend, so every
replica gets the task's inputs and output URIs; Vertex AI sets `CLUSTER_SPEC` and `TF_CONFIG`
in each replica, and train reads its role from them (only the chief writes outputs). The spec is
built here rather than with GCPC's `create_custom_training_job_from_component` because GCPC
requires google-cloud-aiplatform < 2 and conveyor runs with 2.x; the layout is GCPC's own (its
`v1/custom_job/utils.py`), so the same launcher image interprets it.

`tfjob(...)` builds the TFJob (kubeflow.org/v1) with Chief + Worker replicas running the same
train command for Kubeflow on GKE, and `submit_tfjob` / `wait_tfjob` / `delete_tfjob` /
`replica_problems` send, follow, remove and explain it with the kubernetes client (RBAC:
manifests/distributed-training/). The pipeline task that launches it is
`conveyor.train.tfjob_component.train_tfjob` (logic: `conveyor.train.tfjob_launch`).
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
from conveyor.push.kserve import custom_objects_api

#: GCPC's launcher image (the version whose CustomJob contract this module follows).
GCPC_VERSION = "2.22.0"
GCPC_IMAGE = f"gcr.io/ml-pipeline/google-cloud-pipeline-components:{GCPC_VERSION}"
LAUNCHER_COMMAND = ["python3", "-u", "-m",
                    "google_cloud_pipeline_components.container.v1.custom_job.launcher"]
#: Machine of every replica unless given (Vertex AI machine type).
DEFAULT_MACHINE_TYPE = "n1-standard-8"
#: The executor input placeholder, and the same escaped once for a JSON string (the payload).
EXECUTOR_INPUT = "{{$}}"
EXECUTOR_INPUT_IN_JSON = "{{$.json_escape[1]}}"
#: Vertex AI's placeholders for the project and region the pipeline job runs in.
PROJECT_PLACEHOLDER = "{{$.pipeline_google_cloud_project_id}}"
LOCATION_PLACEHOLDER = "{{$.pipeline_google_cloud_location}}"


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


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name}: {value!r} is not a non-empty string")
    return value


def _param(name: str) -> str:
    return "{{$.inputs.parameters['%s']}}" % name


def _spec_of(component) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(component.pipeline_spec)


def worker_pool_specs(container: Mapping[str, Any], replicas: int, *, machine_type: str,
                      accelerator: bool = False, image: str | None = None) -> list[dict]:
    """Vertex AI WorkerPoolSpecs: pool 0 the chief (1 replica), pool 1 `replicas - 1` workers,
    both running `container`'s command and args (its image unless `image`). With
    `accelerator`, each replica's accelerator type and count are the task's
    `accelerator_type` / `accelerator_count` parameters."""
    check_replicas(replicas)
    machine: dict[str, Any] = {"machine_type": machine_type}
    if accelerator:
        machine["accelerator_type"] = _param("accelerator_type")
        machine["accelerator_count"] = _param("accelerator_count")
    chief = {
        "machine_spec": machine,
        "replica_count": 1,
        "disk_spec": {"boot_disk_type": "pd-ssd", "boot_disk_size_gb": 100},
        "container_spec": {
            "image_uri": image or container["image"],
            "command": [EXECUTOR_INPUT_IN_JSON if c == EXECUTOR_INPUT else c
                        for c in container.get("command", [])],
            "args": [EXECUTOR_INPUT_IN_JSON if a == EXECUTOR_INPUT else a
                     for a in container.get("args", [])],
        },
    }
    pools = [chief]
    if replicas > 1:
        pools.append({**copy.deepcopy(chief), "replica_count": replicas - 1})
    return pools


def _dumps(payload: dict, non_strings: list[str]) -> str:
    """The payload as JSON, with the placeholders of non-string parameters unquoted (the
    backend substitutes them as JSON values: `"accelerator_count": 2`)."""
    text = json.dumps(payload, sort_keys=True)
    for name in non_strings:
        text = text.replace(json.dumps(_param(name)), _param(name))
    return text


def custom_job_train(train_replicas: int, *, gpu: bool = False,
                     machine_type: str = DEFAULT_MACHINE_TYPE,
                     display_name: str = "conveyor-train", timeout: str = "604800s",
                     registry: str = images.DEFAULT_REGISTRY):
    """conveyor's `train` (`train_gpu` with `gpu`) as a component that runs it as a Vertex AI
    CustomJob of `train_replicas` machines: the same inputs and outputs as `train`, plus
    `project`, `location` (default: the pipeline job's), `service_account` (default: Vertex's
    custom-code agent) and, with `gpu`, `accelerator_type` / `accelerator_count` per replica;
    the output parameter `gcp_resources` names the job. A restarted worker restarts the whole
    job (a MultiWorkerMirroredStrategy collective cannot take a worker back), which resumes from
    train's BackupAndRestore checkpoints."""
    from kfp import components

    from conveyor.train.component import train, train_gpu

    check_replicas(train_replicas)
    _check_text("machine_type", machine_type)
    _check_text("display_name", display_name)
    if not re.fullmatch(r"\d+(\.\d{1,9})?s", str(timeout)):
        raise InputError(f"timeout: {timeout!r} is not a duration in seconds such as '3600s'")
    source = train_gpu if gpu else train
    spec = _spec_of(source)
    ((executor_key, executor),) = spec["deploymentSpec"]["executors"].items()
    ((component_key, component),) = spec["components"].items()
    image = images.image(registry, "gpu" if gpu else "cpu")

    extra = {
        "project": {"defaultValue": PROJECT_PLACEHOLDER, "isOptional": True,
                    "parameterType": "STRING",
                    "description": "Project of the custom job; default: the pipeline job's."},
        "location": {"defaultValue": LOCATION_PLACEHOLDER, "isOptional": True,
                     "parameterType": "STRING",
                     "description": "Region of the custom job; default: the pipeline job's."},
        "service_account": {"defaultValue": "", "isOptional": True, "parameterType": "STRING",
                            "description": "Service account the replicas run as; default: "
                                           "Vertex AI's custom code service agent."},
    }
    if gpu:
        extra["accelerator_type"] = {"parameterType": "STRING",
                                     "description": "Accelerator of each replica (Vertex AI "
                                                    "name, e.g. NVIDIA_L4)."}
        extra["accelerator_count"] = {"parameterType": "NUMBER_INTEGER",
                                      "description": "Accelerators per replica."}
    clash = sorted(set(extra) & set(component["inputDefinitions"].get("parameters", {})))
    if clash:  # train grew a parameter of the same name: the payload would be ambiguous
        raise InputError(f"train's parameter(s) {clash} clash with the custom job's")
    component["inputDefinitions"].setdefault("parameters", {}).update(extra)
    component.setdefault("outputDefinitions", {}).setdefault("parameters", {})[
        "gcp_resources"] = {"parameterType": "STRING"}

    payload = {
        "display_name": display_name,
        "job_spec": {
            "worker_pool_specs": worker_pool_specs(executor["container"], train_replicas,
                                                   machine_type=machine_type,
                                                   accelerator=gpu, image=image),
            "scheduling": {"timeout": timeout, "restart_job_on_worker_restart": True},
            "service_account": _param("service_account"),
        },
        "labels": {"conveyor-step": "train", "conveyor-replicas": str(train_replicas)},
    }
    executor["container"] = {
        "image": GCPC_IMAGE,
        "command": list(LAUNCHER_COMMAND),
        "args": ["--type", "CustomJob",
                 "--payload", _dumps(payload, ["accelerator_count"] if gpu else []),
                 "--project", _param("project"), "--location", _param("location"),
                 "--gcp_resources", "{{$.outputs.parameters['gcp_resources'].output_file}}"],
    }
    # The wrapping one-task pipeline of the component spec: same inputs and outputs.
    root = spec["root"]
    root["inputDefinitions"] = copy.deepcopy(component["inputDefinitions"])
    root["outputDefinitions"] = copy.deepcopy(component["outputDefinitions"])
    ((task_key, task),) = root["dag"]["tasks"].items()
    task.setdefault("inputs", {}).setdefault("parameters", {}).update(
        {name: {"componentInputParameter": name} for name in extra})
    root["dag"].setdefault("outputs", {}).setdefault("parameters", {})["gcp_resources"] = {
        "valueFromParameter": {"outputParameterKey": "gcp_resources",
                               "producerSubtask": task_key}}
    spec["deploymentSpec"]["executors"] = {executor_key: executor}
    spec["components"] = {component_key: component}
    import yaml

    loaded = components.load_component_from_text(yaml.safe_dump(spec, sort_keys=True))
    loaded.description = (f"conveyor's train as a Vertex AI CustomJob of {train_replicas} "
                          f"machine(s) ({machine_type}): 1 chief, {train_replicas - 1} "
                          f"worker(s).\n\n{source.description or ''}").strip()
    return loaded


def payload_of(executor: Mapping[str, Any], values: Mapping[str, Any] | None = None) -> dict:
    """The CustomJob request a compiled custom-job executor sends, with the task's parameter
    placeholders replaced by `values` (JSON values) where given."""
    args = list(executor["container"]["args"])
    text = args[args.index("--payload") + 1]
    for name, value in (values or {}).items():
        quoted = json.dumps(_param(name))
        if quoted in text:
            text = text.replace(quoted, json.dumps(value))
        else:
            text = text.replace(_param(name), json.dumps(value))
    return json.loads(text)


# -- Kubeflow on GKE: a TFJob (Kubeflow Training Operator, kubeflow.org/v1)

TFJOB_GROUP, TFJOB_VERSION, TFJOB_PLURAL = "kubeflow.org", "v1", "tfjobs"
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
        _check_text("image", image)
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
