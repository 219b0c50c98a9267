"""The work behind `train_tfjob`: conveyor's train as a Kubeflow TFJob, launched by a pipeline task.

The task (one small pod, KFP's launcher around it) builds the TFJob's executor input from its
own: the same input artifacts (URIs, metadata) and parameters, so every replica trains on
exactly the task's inputs; its outputs, though, point to a **staging** folder beside the task's
own outputs, `<task folder>/tfjob-staging/{model,metrics,tensorboard}` with the chief's
`executor_output.json` there too. The replicas reach it through GKE's Cloud Storage FUSE
driver at `/gcs`, as they reach their inputs. When the job has succeeded, the task copies the
staged model and TensorBoard logs into its own local output paths and takes the chief's
output metadata (metrics, model metadata) with the staging paths in it rewritten to its own;
KFP's executor then writes the task's executor output and KFP's launcher uploads the outputs
as after any task. Nothing relies on what KFP's launcher does with an output URI that another
pod wrote to (it uploads the task's local output folders after the body returns).

The staging folder is the same on every attempt of the task (KFP gives a retry the same output
URIs), and so is the job's name (from the model's URI): a retry resumes from train's
checkpoints (`<staged model>.checkpoints`); one that finds the job still there follows it
instead of starting a second; one that finds the staged outputs of a job that succeeded just
collects them; and one that finds train's fail-fast marker (`conveyor.failfast`, written by a
replica that failed on bad input) fails at once with the same error. The job is deleted when
the task ends, whatever the outcome (also on SIGTERM, when the run is cancelled).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from conveyor import errors, failfast
from conveyor.errors import InputError, SourceNotFoundError
from conveyor.io.location import LocalLocation, Location

#: The staging folder's name, beside the task's own outputs.
STAGING = "tfjob-staging"
INPUTS = ("dataset", "preprocessing")
OUTPUTS = ("model", "metrics", "tensorboard")
EXECUTOR_OUTPUT = "executor_output.json"
#: The namespace file of a pod's service account token (in-cluster).
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
GCS_MOUNT = "/gcs/"


def _check_uri(name: str, uri: str) -> str:
    if isinstance(uri, str) and (uri.startswith("gs://") or os.path.isabs(uri)):
        return uri.rstrip("/")
    raise InputError(f"{name}: artifact URI {uri!r} is neither gs:// nor a local path; the "
                     "TFJob's pods reach artifacts through GKE's Cloud Storage FUSE driver at "
                     "/gcs, so the pipeline root must be a gs:// bucket (not MinIO or S3)")


def local_path(uri: str) -> str:
    """Where a pod (KFP's executor) sees `uri`: /gcs/<bucket>/... for gs://, else the path."""
    return GCS_MOUNT + uri[len("gs://"):] if uri.startswith("gs://") else uri


def staging_uri(model_uri: str) -> str:
    """The staging folder of a task whose model output is `model_uri`: beside it."""
    uri = _check_uri("model", model_uri)
    parent = uri.rsplit("/", 1)[0]
    if parent.count("/") < (3 if uri.startswith("gs://") else 1):  # gs://bucket/model, /model
        raise InputError(f"model: output URI {model_uri!r} is not inside a task's folder; "
                         "expected <pipeline root>/.../<task>/model")
    return f"{parent}/{STAGING}"


def job_name(model_uri: str) -> str:
    """The TFJob's name: the same for every attempt of one task, different for any other
    (from its model output URI); short enough for the operator's pod and service names."""
    return "conveyor-train-" + hashlib.sha256(model_uri.rstrip("/").encode()).hexdigest()[:12]


def _runtime_artifact(artifact, uri: str | None = None, metadata: bool = True) -> dict:
    out = {"name": getattr(artifact, "name", "") or "",
           "type": {"schemaTitle": artifact.schema_title,
                    "schemaVersion": getattr(artifact, "schema_version", "0.0.1")},
           "uri": artifact.uri if uri is None else uri}
    if metadata:
        out["metadata"] = json.loads(json.dumps(dict(artifact.metadata or {})))
    return out


def replica_executor_input(inputs: Mapping[str, Any], outputs: Mapping[str, Any],
                           parameters: Mapping[str, Any], staging: str) -> dict:
    """The executor input every replica runs train's executor with: the task's input
    artifacts and parameters, its outputs moved to `staging`."""
    for name, artifact in inputs.items():
        _check_uri(name, artifact.uri)
    return {
        "inputs": {
            "parameterValues": json.loads(json.dumps(dict(parameters))),
            "artifacts": {name: {"artifacts": [_runtime_artifact(a)]}
                          for name, a in inputs.items()},
        },
        "outputs": {
            "artifacts": {name: {"artifacts": [_runtime_artifact(a, f"{staging}/{name}",
                                                                 metadata=False)]}
                          for name, a in outputs.items()},
            "outputFile": local_path(f"{staging}/{EXECUTOR_OUTPUT}"),
        },
    }


# -- the staging folder: a local path or gs:// (conveyor.io.location)

def read_text(uri: str) -> str | None:
    """The text of a file (local or gs://), None when it does not exist."""
    location = Location.parse(uri)
    if isinstance(location, LocalLocation) and not location.path.is_file():
        return None
    try:
        return location.read_text()
    except (FileNotFoundError, SourceNotFoundError):  # no such object, or no such bucket
        return None


def copy_tree(uri: str, target: str) -> int:
    """Copy the folder `uri` (local or gs://) into the local folder `target`: the number of
    files copied (0 when there is no such folder)."""
    source = Location.parse(uri)
    if isinstance(source, LocalLocation):  # a tree copy: empty folders and metadata kept
        if not source.path.is_dir():
            return 0
        shutil.copytree(source.path, target, dirs_exist_ok=True)
        return sum(1 for p in source.path.rglob("*") if p.is_file())
    names = source.list()  # files only: folder placeholders are left out
    for rel in names:
        source.child(rel).download(Path(target) / rel)
    return len(names)


def remove_tree(uri: str) -> None:
    """Remove the folder `uri` (local or gs://) and everything in it, if it exists. Locally a
    folder that cannot be removed is left (the next attempt writes over it), as before."""
    location = Location.parse(uri)
    if isinstance(location, LocalLocation):
        shutil.rmtree(location.path, ignore_errors=True)
        return
    location.delete()


# -- collecting the chief's outputs

def _rewrite(value: Any, moves: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for old in sorted(moves, key=len, reverse=True):
            if value.startswith(old):
                return moves[old] + value[len(old):]
        return value
    if isinstance(value, dict):
        return {k: _rewrite(v, moves) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, moves) for v in value]
    return value


def collect(staging: str, outputs: Mapping[str, Any]) -> dict[str, int]:
    """Copy the staged outputs into `outputs`' local paths and take the chief's output
    metadata (staging paths and URIs in it rewritten to the outputs' own); then remove the
    staging folder. Returns the files copied per output."""
    text = read_text(f"{staging}/{EXECUTOR_OUTPUT}")
    if text is None:
        raise RuntimeError(f"the TFJob succeeded but its chief wrote no executor output at "
                           f"{staging}/{EXECUTOR_OUTPUT}: do the replicas see the pipeline "
                           "root under /gcs (GKE's Cloud Storage FUSE CSI driver)?")
    record = json.loads(text).get("artifacts", {})
    copied = {}
    for name, artifact in outputs.items():
        source = f"{staging}/{name}"
        copied[name] = copy_tree(source, artifact.path)
        staged = (record.get(name, {}).get("artifacts") or [{}])[0].get("metadata", {})
        moves = {source: artifact.uri, local_path(source): artifact.path}
        artifact.metadata.update(_rewrite(staged, moves))
    if not copied.get("model"):
        raise RuntimeError(f"the TFJob succeeded but {staging}/model holds no files: the "
                           "chief exported no model")
    remove_tree(staging)
    return copied


def recorded_failure(staging: str) -> InputError | None:
    """The InputError a replica recorded (train's fail-fast marker of the staged model)."""
    text = read_text(f"{staging}/model{failfast.MARKER_SUFFIX}")
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = {}
    cls = getattr(errors, str(record.get("type", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, InputError)):
        cls = InputError
    return cls(str(record.get("message") or "a replica failed on bad input"))


# -- the launcher

def own_namespace() -> str:
    """The namespace this pod runs in, else the kubeconfig's current one."""
    if NAMESPACE_FILE.is_file():
        return NAMESPACE_FILE.read_text().strip()
    try:
        from kubernetes import config

        # KUBECONFIG as it is now (the client reads it once, when first imported)
        _, active = config.list_kube_config_contexts(os.environ.get("KUBECONFIG") or None)
        namespace = (active or {}).get("context", {}).get("namespace", "")
    except Exception:  # no kubeconfig: the message below says what to give
        namespace = ""
    if not namespace:
        raise InputError("namespace: not given, and neither the pod's service account nor a "
                         "kubeconfig context names one; give the namespace where the Training "
                         "Operator runs TFJobs")
    return namespace


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM (the run cancelled, the pod evicted) as an exception, so the job is deleted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _problems(job: Mapping[str, Any], api_client) -> str:
    from conveyor.train import tfjob

    try:
        lines = tfjob.replica_problems(job, api_client)
    except Exception as exc:  # the job's own error must still be raised
        return f"\n(the replicas' pods could not be read: {exc})"
    return "".join(f"\n  {line}" for line in lines)


def launch(dataset, preprocessing, model, metrics, tensorboard, *, hyperparameters: dict,
           module_file: str = "", log_dir_uri: str = "", train_split: str = "train",
           eval_split: str = "eval", train_replicas: int = 2, namespace: str = "",
           service_account: str = "pipeline-runner", gpus: int = 0,
           gpu_resource: str = "nvidia.com/gpu", cpu: str = "2", memory: str = "4G",
           image: str = "", timeout_seconds: float = 7 * 86400, poll_seconds: float = 10.0,
           api_client=None, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Run train as a TFJob of `train_replicas` pods with the task's inputs, wait for it,
    collect its outputs into `model`, `metrics`, `tensorboard`, delete it. Returns the
    finished job (what the API last said of it). A job that fails raises RuntimeError with
    the operator's message and each failed replica's exit code and last log lines; a replica
    that failed on bad input raises its InputError (fail-fast: the task's retries end)."""
    from kubernetes.client.rest import ApiException

    from conveyor.gcp.kubernetes import custom_objects_api
    from conveyor.train import tfjob

    tfjob.check_replicas(train_replicas)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise InputError(f"gpus: {gpus!r} is not a count >= 0")
    if gpus and "/" not in str(gpu_resource):
        raise InputError(f"gpu_resource: {gpu_resource!r} is not a Kubernetes extended "
                         "resource name such as nvidia.com/gpu (the pipeline's "
                         "train_accelerator on Kubeflow)")
    outputs = {"model": model, "metrics": metrics, "tensorboard": tensorboard}
    staging = staging_uri(model.uri)
    name = job_name(model.uri)

    earlier = recorded_failure(staging)
    if earlier is not None:
        raise type(earlier)(f"{earlier} [train: not retried; an earlier TFJob of this task "
                            "failed on this input, which a retry cannot change]")
    if read_text(f"{staging}/{EXECUTOR_OUTPUT}") is not None:  # an earlier job succeeded
        print(f"train_tfjob: an earlier TFJob of this task succeeded; collecting {staging}",
              flush=True)
        collect(staging, outputs)
        return {}

    namespace = namespace or own_namespace()
    parameters = {"hyperparameters": dict(hyperparameters or {}), "module_file": module_file,
                  "log_dir_uri": log_dir_uri, "train_split": train_split,
                  "eval_split": eval_split}
    given = replica_executor_input({"dataset": dataset, "preprocessing": preprocessing},
                                   outputs, parameters, staging)
    body = tfjob.tfjob(name, given, train_replicas, namespace=namespace, gpu=gpus > 0,
                             gpus=gpus, gpu_resource=gpu_resource, cpu=cpu, memory=memory,
                             service_account=service_account, image=image or None)
    api = custom_objects_api(api_client)  # loads the in-cluster config or kubeconfig once
    client = api.api_client
    with _sigterm_raises():
        try:
            try:
                tfjob.submit_tfjob(body, client)
                print(f"train_tfjob: TFJob {namespace}/{name} created: 1 chief, "
                      f"{train_replicas - 1} worker(s); staging {staging}", flush=True)
            except ApiException as exc:
                if exc.status != 409:
                    raise RuntimeError(f"TFJob {namespace}/{name}: the API refused it: "
                                       f"{exc.status} {exc.reason}: {exc.body}") from None
                print(f"train_tfjob: TFJob {namespace}/{name} exists (an earlier attempt of "
                      "this task): following it", flush=True)
            try:
                job = tfjob.wait_tfjob(namespace, name, client, poll_seconds=poll_seconds,
                                             timeout_seconds=timeout_seconds, sleep=sleep)
            except (RuntimeError, TimeoutError) as exc:
                details = _problems(body, client)
                bad_input = recorded_failure(staging)
                if bad_input is not None:
                    raise type(bad_input)(f"{bad_input} (TFJob {namespace}/{name}){details}") \
                        from None
                raise type(exc)(f"{exc}{details}") from None
            copied = collect(staging, outputs)
            print(f"train_tfjob: TFJob {namespace}/{name} succeeded; copied {copied}",
                  flush=True)
            return job
        finally:
            with contextlib.suppress(Exception):  # the outcome above is what the task reports
                if tfjob.delete_tfjob(namespace, name, client):
                    print(f"train_tfjob: TFJob {namespace}/{name} deleted", flush=True)


def task(dataset, preprocessing, model, metrics, tensorboard, **settings) -> dict:
    """`launch` as the component's body: an InputError is recorded beside the model output
    (`conveyor.failfast`), so a retry of the task in the same place fails at once."""
    with failfast.fail_once(model.path, "train_tfjob"):
        return launch(dataset, preprocessing, model, metrics, tensorboard, **settings)
