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

On Kubeflow on GKE, train runs as a TFJob instead: the job, and sending, following and
explaining it, are train's own runtime code (`conveyor.train.tfjob`); the pipeline task that
launches it is `conveyor.train.tfjob_component.train_tfjob` (logic: `conveyor.train.tfjob_launch`).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from conveyor import images
from conveyor.errors import InputError
from conveyor.train.tfjob import EXECUTOR_INPUT, check_replicas, check_text

#: GCPC's launcher image (the version whose CustomJob contract this module follows).
GCPC_VERSION = "2.22.0"
GCPC_IMAGE = f"gcr.io/ml-pipeline/google-cloud-pipeline-components:{GCPC_VERSION}"
LAUNCHER_COMMAND = ["python3", "-u", "-m",
                    "google_cloud_pipeline_components.container.v1.custom_job.launcher"]
#: Machine of every replica unless given (Vertex AI machine type).
DEFAULT_MACHINE_TYPE = "n1-standard-8"
#: The executor input placeholder escaped once for a JSON string (the payload).
EXECUTOR_INPUT_IN_JSON = "{{$.json_escape[1]}}"
#: Vertex AI's placeholders for the project and region the pipeline job runs in.
PROJECT_PLACEHOLDER = "{{$.pipeline_google_cloud_project_id}}"
LOCATION_PLACEHOLDER = "{{$.pipeline_google_cloud_location}}"


def _param(name: str) -> str:
    return f"{{{{$.inputs.parameters['{name}']}}}}"


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
    check_text("machine_type", machine_type)
    check_text("display_name", display_name)
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
