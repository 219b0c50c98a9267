"""One MLflow run per pipeline run: each step finds it by the tag `conveyor.pipeline_run` (the
pipeline job's name, which the pipelines hand every tracked task), creates it when it is the
first, and logs its own figures, prefixed with its name.

What a step logs (`Step`): parameters as `<step>.<name>` (nested dicts flattened with dots),
figures as metrics `<step>/<name>`, a series (one figure per epoch) as a metric with its epoch
as MLflow's step, tags as `conveyor.<name>`, and the URIs of its outputs as tags
`conveyor.artifact.<step>.<output>` (links: nothing is uploaded). The run is marked FINISHED
after each step, so it never stays RUNNING after the last one.

The experiment is MLFLOW_EXPERIMENT_NAME when set, else `conveyor`. A server that does not
answer costs one attempt with a 10 s timeout (MLflow's own defaults retry for minutes) unless
MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_TIMEOUT say otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from conveyor.errors import one_line

ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT = "conveyor"  # unless MLFLOW_EXPERIMENT_NAME names another
RUN_TAG = "conveyor.pipeline_run"
#: one quick attempt per request unless the environment says otherwise
QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
MAX_PARAM = 6000  # MLflow's limit on a parameter's value

T = TypeVar("T")


@dataclasses.dataclass
class Step:
    """What one step logs: see the module."""

    name: str  # validate, train, evaluate, push, promote
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    series: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    first_step: int = 0  # MLflow step of each series' first figure (the epoch, from 0)
    tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    artifacts: Mapping[str, str] = dataclasses.field(default_factory=dict)  # output -> URI


def configured_uri(tracking_uri: str = "") -> str:
    """The tracking URI: the parameter when given, else MLFLOW_TRACKING_URI, else ""."""
    return (tracking_uri or os.environ.get(ENV, "")).strip()


def artifact_uri(artifact) -> str:
    """A KFP artifact's URI (gs://... in a cluster), else its local path; "" for None."""
    if artifact is None:
        return ""
    return getattr(artifact, "uri", "") or getattr(artifact, "path", "") or ""


def log_step(step: Step, *, tracking_uri: str = "", pipeline_run: str = "") -> str | None:
    """Log `step` into the MLflow run of `pipeline_run` (a run of its own when ""). Returns the
    MLflow run's ID; None when tracking is off or failed (one warning line, never raised)."""
    uri = configured_uri(tracking_uri)
    if not uri:
        return None
    return safely(uri, f"logging {step.name}", lambda: _log(uri, step, pipeline_run))


def safely(uri: str, what: str, work: Callable[[], T]) -> T | None:
    """`work()` with quick HTTP settings; any error is one warning line and None."""
    saved = {name: os.environ.get(name) for name in QUICK}
    for name, value in QUICK.items():
        os.environ.setdefault(name, value)
    try:
        return work()
    except Exception as exc:  # tracking must never fail a run
        print(f"warning: MLflow tracking at {uri}: {what} failed; the run goes on without it "
              f"({one_line(exc)})", file=sys.stderr, flush=True)
        return None
    finally:
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def client(uri: str):
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise ImportError(f"{exc}: install MLflow's client, pip install "
                          "'conveyor-kfp[tracking]' (mlflow-skinny)") from None

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _log(uri: str, step: Step, pipeline_run: str) -> str:
    from mlflow.entities import Metric, Param, RunTag

    mlflow = client(uri)
    run_id = run_for(mlflow, pipeline_run)
    now = int(time.time() * 1000)
    metrics = [Metric(f"{step.name}/{k}", float(v), now, 0)
               for k, v in step.metrics.items() if _finite(v)]
    metrics += [Metric(f"{step.name}/{k}", float(v), now, step.first_step + i)
                for k, values in step.series.items() for i, v in enumerate(values)
                if _finite(v)]
    params = [Param(f"{step.name}.{k}", str(v)[:MAX_PARAM])
              for k, v in sorted(flatten(step.params).items())]
    tags = [RunTag(f"conveyor.{k}", str(v)) for k, v in step.tags.items()]
    tags += [RunTag(f"conveyor.artifact.{step.name}.{k}", v)
             for k, v in step.artifacts.items() if v]
    # log_batch takes at most 1000 metrics, 100 parameters and 100 tags at once
    for kind, part, size in (("metrics", metrics, 1000), ("params", params, 100),
                             ("tags", tags, 100)):
        for chunk in _chunks(part, size):
            mlflow.log_batch(run_id, **{kind: chunk})
    mlflow.set_terminated(run_id, "FINISHED")
    return run_id


def run_for(mlflow, pipeline_run: str) -> str:
    """The ID of the MLflow run tagged `pipeline_run` in the experiment, created if none."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        try:
            experiment_id = mlflow.create_experiment(name)
        except Exception:  # another step created it meanwhile
            experiment_id = mlflow.get_experiment_by_name(name).experiment_id
    else:
        experiment_id = experiment.experiment_id
    if pipeline_run and "'" not in pipeline_run:
        found = mlflow.search_runs([experiment_id],
                                   filter_string=f"tags.`{RUN_TAG}` = '{pipeline_run}'",
                                   max_results=1, order_by=["attributes.start_time ASC"])
        if found:
            return found[0].info.run_id
    tags = {RUN_TAG: pipeline_run} if pipeline_run else {}
    return mlflow.create_run(experiment_id, run_name=pipeline_run or None,
                             tags=tags).info.run_id


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
