"""Submitting and scheduling the reference pipelines on Kubeflow Pipelines or Vertex AI.

Each takes a pipeline name (`conveyor.pipelines.PIPELINES`), compiles it to a temporary package
(with the image registry asked for), and hands it to the real client: `kfp.Client` for a Kubeflow
Pipelines host, `google.cloud.aiplatform.PipelineJob` for Vertex AI Pipelines. Schedules run
one at a time and do not catch up on missed runs.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor import images
from conveyor.errors import InputError


def package(pipeline: str, registry: str = images.DEFAULT_REGISTRY) -> Path:
    """The compiled pipeline, as a file the clients can read."""
    from conveyor.compile import compile_one
    from conveyor.pipelines import PIPELINES

    if pipeline not in PIPELINES:
        raise InputError(f"pipeline: {pipeline!r} is not one of {sorted(PIPELINES)}")
    path = Path(tempfile.mkdtemp(prefix="conveyor-submit-")) / f"{pipeline}.yaml"
    return compile_one(f"pipeline:{pipeline}", path, registry)


def display_name(pipeline: str) -> str:
    return f"conveyor-{pipeline.replace('_', '-')}"


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`name=value` pairs; a value that parses as JSON is taken as JSON (numbers, lists, dicts).
    A name given twice is an InputError (naming it), not the last one silently winning."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--param: {pair!r} is not name=value")
        if name in out:  # the last one would silently win
            raise InputError(f"--param: {name} is given twice; give each parameter once")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def check_params(pipeline: str, arguments: Mapping[str, Any], *, values: bool = True) -> None:
    """Every argument names a parameter of the pipeline (a close match named for a misspelt
    one) and, with `values`, every value passes the checks of the parameters' definitions
    (`conveyor.pipelines.checks`); one InputError names every problem."""
    import importlib

    from conveyor.params import did_you_mean
    from conveyor.pipelines import PIPELINES

    if pipeline not in PIPELINES:
        raise InputError(f"pipeline: {pipeline!r} is not one of {sorted(PIPELINES)}")
    known = importlib.import_module(PIPELINES[pipeline]).pipeline.component_spec.inputs or {}
    problems = []
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        problems.append(f"{pipeline} has no parameter(s) {unknown}{did_you_mean(unknown, known)} "
                        f"(parameters: {', '.join(sorted(known))})")
    if values:
        from conveyor.pipelines.checks import problems as value_problems

        problems += value_problems({k: v for k, v in arguments.items() if k in known})
    if problems:
        raise InputError("--param: " + "; ".join(problems))


def _experiment(client, name: str) -> str:
    return client.create_experiment(name).experiment_id


def submit_kfp(pipeline: str, host: str, arguments: Mapping[str, Any], *,
               experiment: str = "conveyor", run_name: str | None = None,
               registry: str = images.DEFAULT_REGISTRY, client=None) -> str:
    """Start a run on a Kubeflow Pipelines host; returns the run id."""
    import kfp

    client = client or kfp.Client(host=host)
    result = client.create_run_from_pipeline_package(
        str(package(pipeline, registry)), arguments=dict(arguments),
        run_name=run_name or display_name(pipeline), experiment_id=_experiment(client, experiment))
    return result.run_id


def schedule_kfp(pipeline: str, host: str, arguments: Mapping[str, Any], *, cron: str,
                 experiment: str = "conveyor", name: str | None = None,
                 max_concurrency: int = 1, registry: str = images.DEFAULT_REGISTRY,
                 client=None) -> str:
    """A recurring run (cron with seconds first, UTC); returns its id."""
    import kfp

    if len(cron.split()) != 6:
        raise InputError(f"cron: Kubeflow Pipelines takes 6 fields, seconds first "
                         f"(e.g. '0 0 2 * * *'), got {cron!r}")
    client = client or kfp.Client(host=host)
    run = client.create_recurring_run(
        experiment_id=_experiment(client, experiment), job_name=name or display_name(pipeline),
        cron_expression=cron, max_concurrency=max_concurrency, no_catchup=True,
        params=dict(arguments), pipeline_package_path=str(package(pipeline, registry)))
    return run.recurring_run_id


def vertex_job(pipeline: str, *, project: str, location: str, pipeline_root: str,
               arguments: Mapping[str, Any], registry: str = images.DEFAULT_REGISTRY,
               credentials=None):
    """The Vertex AI PipelineJob for a pipeline (built, not yet submitted)."""
    from google.cloud import aiplatform

    if not pipeline_root.startswith("gs://"):
        raise InputError(f"pipeline_root: Vertex AI needs a gs:// root, got {pipeline_root!r}")
    return aiplatform.PipelineJob(
        display_name=display_name(pipeline), template_path=str(package(pipeline, registry)),
        pipeline_root=pipeline_root, parameter_values=dict(arguments), project=project,
        location=location, credentials=credentials, enable_caching=False)


def check_vertex_cron(cron: str) -> str:
    """Vertex AI schedules take 5 cron fields, optionally after TZ=..., e.g.
    'TZ=Europe/Paris 0 2 * * *'."""
    fields = [f for f in cron.split() if not f.startswith("TZ=")]
    if len(fields) != 5:
        raise InputError(f"cron: Vertex AI takes 5 fields (optionally after TZ=...), got {cron!r}")
    return cron


def submit_vertex(job, service_account: str | None = None) -> str:
    job.submit(service_account=service_account)
    return job.resource_name


def schedule_vertex(job, *, cron: str, name: str, max_concurrency: int = 1) -> str:
    from google.cloud import aiplatform

    # The job's project, location and credentials, not aiplatform's global defaults.
    schedule = aiplatform.PipelineJobSchedule(pipeline_job=job, display_name=name,
                                              project=job.project, location=job.location,
                                              credentials=job.credentials)
    schedule.create(cron=check_vertex_cron(cron), max_concurrent_run_count=max_concurrency)
    return schedule.resource_name
