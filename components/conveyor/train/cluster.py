"""The training process's role in a cluster: read from `TF_CONFIG` or Vertex AI's `CLUSTER_SPEC`.

No TensorFlow here (importable by the pipeline side and by tests without it).

- `TF_CONFIG` (TensorFlow's convention, set by Vertex AI and by Kubeflow's TFJob):
  ``{"cluster": {"chief": ["host:port"], "worker": ["host:port", ...]},
  "task": {"type": "worker", "index": 0}}``.
- `CLUSTER_SPEC` (Vertex AI, set for every replica of a custom job), read when `TF_CONFIG` is
  absent: ``{"cluster": {"workerpool0": [...], "workerpool1": [...]}, "task": {"type":
  "workerpool0", "index": 0}}``; worker pool 0 is the chief, pool 1 the workers; pools 2 and 3
  (parameter or reduction servers, evaluators) take no part in the collective ring.

Workers are numbered chief first (`worker_index` 0), then the workers in order: the order in
which TensorFlow's MultiWorkerMirroredStrategy numbers its input pipelines. The chief is the
`chief` task, or worker 0 when the cluster has no `chief` entry. With neither variable set, or a
cluster of one training task, the run is a single worker, exactly as without a cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from conveyor.errors import InputError

#: Task types that train (take part in the all-reduce), in the order workers are numbered.
TRAINING_TYPES = ("chief", "worker")
#: Task types a cluster may name beside them, which never run conveyor's training.
OTHER_TYPES = ("evaluator", "ps")
#: Vertex AI's worker pools as TensorFlow task types.
VERTEX_POOLS = {"workerpool0": "chief", "workerpool1": "worker", "workerpool2": "ps",
                "workerpool3": "evaluator"}


@dataclasses.dataclass(frozen=True)
class Cluster:
    """One training process's place among the workers."""

    task_type: str = "chief"  # "chief" or "worker"
    task_index: int = 0  # within its type
    num_workers: int = 1  # training tasks: chief and workers
    is_chief: bool = True
    worker_index: int = 0  # 0 .. num_workers - 1, the chief first
    #: the training tasks' addresses by type ({} for a single worker), for the strategy
    spec: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    source: str = ""  # "TF_CONFIG", "CLUSTER_SPEC" or "" (single worker, no variable)

    @property
    def multi_worker(self) -> bool:
        return self.num_workers > 1

    def describe(self) -> str:
        if not self.multi_worker:
            return "single worker"
        role = "chief" if self.is_chief else "non-chief"
        return (f"worker {self.worker_index} of {self.num_workers} ({self.task_type}:"
                f"{self.task_index}, {role}, from {self.source})")


SINGLE = Cluster()


def from_environment(environ: Mapping[str, str] | None = None) -> Cluster:
    """The cluster described by `TF_CONFIG`, else `CLUSTER_SPEC`, else a single worker."""
    environ = os.environ if environ is None else environ
    for name in ("TF_CONFIG", "CLUSTER_SPEC"):
        text = environ.get(name, "").strip()
        if text:
            return parse(text, name)
    return SINGLE


def parse(text: str, source: str = "TF_CONFIG") -> Cluster:
    """Parse the JSON of `TF_CONFIG` or `CLUSTER_SPEC` (`source` names which, in messages)."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{source}: not valid JSON ({exc}); expected {{\"cluster\": {{\"chief\": "
                         "[\"host:port\"], \"worker\": [...]}, \"task\": {\"type\": ..., "
                         "\"index\": ...}}") from None
    if not isinstance(config, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(config).__name__}")
    cluster = config.get("cluster") or {}
    if not isinstance(cluster, dict):
        raise InputError(f"{source}: 'cluster' must be an object of task type -> list of "
                         f"'host:port', got {type(cluster).__name__}")
    if source == "CLUSTER_SPEC":
        cluster = _vertex_pools(cluster, source)
    spec = {kind: _addresses(cluster, kind, source) for kind in cluster}
    unknown = sorted(set(spec) - set(TRAINING_TYPES) - set(OTHER_TYPES))
    if unknown:
        raise InputError(f"{source}: unknown task type(s) {unknown} in 'cluster' (expected "
                         f"{', '.join(TRAINING_TYPES + OTHER_TYPES)})")
    training = {k: spec[k] for k in TRAINING_TYPES if spec.get(k)}
    num_workers = sum(len(v) for v in training.values())
    if len(training.get("chief", ())) > 1:
        raise InputError(f"{source}: the cluster has {len(training['chief'])} 'chief' tasks; "
                         "at most one is allowed")
    if not num_workers:
        if config.get("task"):
            raise InputError(f"{source}: 'cluster' names no chief or worker task")
        return dataclasses.replace(SINGLE, source=source)  # {} or a task-less config
    task_type, task_index = _task(config, source)
    if source == "CLUSTER_SPEC":
        task_type = VERTEX_POOLS.get(task_type, task_type)
    if task_type in OTHER_TYPES:
        raise InputError(f"{source}: this task is {task_type!r}:{task_index}; conveyor trains "
                         "with MultiWorkerMirroredStrategy on chief and worker tasks only (no "
                         "parameter servers or side evaluators): run the train component on "
                         "the chief and worker pools")
    if task_type not in training:
        raise InputError(f"{source}: task type {task_type!r} is not in 'cluster' (types: "
                         f"{', '.join(training) or 'none'})")
    if not 0 <= task_index < len(training[task_type]):
        raise InputError(f"{source}: task index {task_index} is out of range for "
                         f"{task_type!r}, which has {len(training[task_type])} task(s)")
    chiefs = len(training.get("chief", ()))
    worker_index = task_index if task_type == "chief" else chiefs + task_index
    if num_workers == 1:
        return dataclasses.replace(SINGLE, task_type=task_type, task_index=task_index,
                                   source=source)
    return Cluster(task_type=task_type, task_index=task_index, num_workers=num_workers,
                   is_chief=worker_index == 0, worker_index=worker_index,
                   spec={k: tuple(v) for k, v in training.items()}, source=source)


def _vertex_pools(cluster: dict[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pool, addresses in cluster.items():
        if pool not in VERTEX_POOLS:
            raise InputError(f"{source}: unknown worker pool {pool!r} (expected "
                             f"{', '.join(VERTEX_POOLS)})")
        out[VERTEX_POOLS[pool]] = addresses
    return out


def _addresses(cluster: dict[str, Any], kind: str, source: str) -> list[str]:
    value = cluster[kind]
    if not isinstance(value, list) or not all(isinstance(a, str) and a.strip() for a in value):
        raise InputError(f"{source}: cluster[{kind!r}] must be a list of 'host:port' strings, "
                         f"got {value!r}")
    for address in value:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise InputError(f"{source}: cluster[{kind!r}] address {address!r} is not "
                             "'host:port'")
    return value


def _task(config: dict[str, Any], source: str) -> tuple[str, int]:
    task = config.get("task")
    if not isinstance(task, dict):
        raise InputError(f"{source}: 'task' must be an object {{\"type\": ..., \"index\": ...}} "
                         f"naming this process's task, got {task!r}")
    task_type = task.get("type")
    if not isinstance(task_type, str) or not task_type:
        raise InputError(f"{source}: task 'type' must be a task type string, got {task_type!r}")
    index = task.get("index", 0)
    if isinstance(index, str) and index.strip().isdigit():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InputError(f"{source}: task 'index' must be a whole number >= 0, got {index!r}")
    return task_type, index
