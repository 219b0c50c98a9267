"""Submitting and scheduling pipelines on Kubeflow Pipelines or Vertex AI.

Each takes a pipeline as `conveyor.pipelines.resolve` reads it: a reference pipeline's name
(`conveyor.pipelines.PIPELINES`), your own `path/to/module.py:function` or
`package.module:function`, or a compiled YAML. Its arguments are checked against its inputs
first (`check_params`: names, types, the required ones), then it is compiled to a temporary
package (its images pointed at the registry asked for) and handed to the real client:
`kfp.Client` for a Kubeflow Pipelines host, `google.cloud.aiplatform.PipelineJob` for Vertex AI
Pipelines. `kfp_request` is what a Kubeflow Pipelines submission sends, for `--dry-run`.
Schedules run one at a time and do not catch up on missed runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor import images
from conveyor.errors import InputError
from conveyor.pipelines.resolve import check_arguments, resolve


def package(pipeline: str, registry: str = images.DEFAULT_REGISTRY) -> Path:
    """The compiled pipeline, as a file the clients can read."""
    from conveyor.compile import compile_one, compile_pipeline
    from conveyor.pipelines import PIPELINES

    folder = Path(tempfile.mkdtemp(prefix="conveyor-submit-"))
    if pipeline in PIPELINES:
        return compile_one(f"pipeline:{pipeline}", folder / f"{pipeline}.yaml", registry)
    component, _ = resolve(pipeline)
    return compile_pipeline(component, folder / "pipeline.yaml", registry)


def display_name(pipeline: str) -> str:
    """`conveyor-training` for a reference pipeline; the kfp name of your own (`score`)."""
    from conveyor.pipelines import PIPELINES

    if pipeline in PIPELINES:
        return f"conveyor-{pipeline.replace('_', '-')}"
    return resolve(pipeline)[0].name.replace("_", "-")


def kfp_request(pipeline: str, host: str, arguments: Mapping[str, Any], *,
                experiment: str = "conveyor", name: str | None = None,
                registry: str = images.DEFAULT_REGISTRY, cron: str | None = None,
                max_concurrency: int = 1) -> dict[str, Any]:
    """What `submit_kfp` (or, with `cron`, `schedule_kfp`) would send, sending nothing: the
    host, experiment, run or schedule name, arguments and the compiled package's path and
    pipeline name (the package is kept for inspection)."""
    if cron is not None:
        _check_kfp_cron(cron)
    path = package(pipeline, registry)
    import yaml

    spec = next(iter(yaml.safe_load_all(path.read_text())))
    request: dict[str, Any] = {
        "host": host, "experiment": experiment,
        ("job_name" if cron else "run_name"): name or display_name(pipeline),
        "pipeline": spec.get("pipelineInfo", {}).get("name"), "pipeline_package": str(path),
        "arguments": dict(arguments)}
    if cron is not None:
        request.update(cron_expression=cron, max_concurrency=max_concurrency, no_catchup=True)
    return request


def check_params(pipeline: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments checked against the pipeline's inputs (unknown names with the closest
    match, types, the required ones, a reference pipeline's values), before anything is built
    or sent: `conveyor.pipelines.resolve.check_arguments`."""
    component, label = resolve(pipeline)
    return check_arguments(component, arguments, label)


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

    _check_kfp_cron(cron)
    client = client or kfp.Client(host=host)
    run = client.create_recurring_run(
        experiment_id=_experiment(client, experiment), job_name=name or display_name(pipeline),
        cron_expression=cron, max_concurrency=max_concurrency, no_catchup=True,
        params=dict(arguments), pipeline_package_path=str(package(pipeline, registry)))
    return run.recurring_run_id


def _check_kfp_cron(cron: str) -> None:
    if len(cron.split()) != 6:
        raise InputError(f"cron: Kubeflow Pipelines takes 6 fields, seconds first "
                         f"(e.g. '0 0 2 * * *'), got {cron!r}")


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
