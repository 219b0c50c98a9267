"""Graph pieces the reference pipelines share: train (on CPU or GPUs), evaluate, push if blessed.

`preflight_and_ingest` and `train_evaluate_push` are called inside a `@dsl.pipeline` function.
Training runs on GPUs only when the pipeline is given a GPU count above zero: the choice is a
`dsl.If`/`dsl.Else` at run time, so
the CPU branch carries no accelerator settings at all (nothing for a backend to interpret as
"zero GPUs of no type"). Evaluate and push follow inside each branch: kfp 2.17's local runner
cannot merge the branches' models with `dsl.OneOf` ("Expected 1 artifact in
ArtifactSelectorSpec"), and the local runner is the embedded default.

Retries (2, after 2 s and 4 s) are for preemption, crashed processes and outages longer than
the in-task retries of `conveyor.gcp.retry`; bad input fails once (`conveyor.failfast`). The CPU
branch is built first, so its tasks keep the plain names (train, evaluate, push) and the GPU
branch's get a `-2` suffix.

`train_replicas` (compile time, default 1) picks the train op (`train_ops`): 1 is today's single
train task; above 1, train runs on that many machines, 1 chief and the rest workers, as a
Vertex AI custom job (`cluster="vertex"`, `conveyor.pipelines.distributed`) or as a Kubeflow
TFJob launched by a task (`cluster="kubeflow"`, `conveyor.train.tfjob_component`); see
docs/distributed-training-pipelines.md.
"""

from __future__ import annotations

from kfp import dsl
from kfp.dsl import pipeline_channel

from conveyor import images
from conveyor.errors import InputError
from conveyor.evaluate.component import evaluate
from conveyor.ingest.component import bigquery_ingest
from conveyor.pipelines import distributed
from conveyor.pipelines.retry import retried
from conveyor.preflight.component import preflight
from conveyor.push.component import push
from conveyor.train.component import train, train_gpu
from conveyor.train.tfjob import check_replicas
from conveyor.train.tfjob_component import train_tfjob

#: Where training on several machines runs: Vertex AI custom jobs, or Kubeflow TFJobs.
CLUSTERS = ("vertex", "kubeflow")


def check_cluster(cluster) -> str:
    if cluster not in CLUSTERS:
        raise InputError(f"cluster: {cluster!r} is not one of {', '.join(CLUSTERS)} (vertex: a "
                         "Vertex AI custom job; kubeflow: a TFJob on Kubeflow on GKE)")
    return cluster


def preflight_and_ingest(*, label, model_base_path, table, query, split_key, split_ratios,
                         slices, feature_spec_uri, project, location, read_streams):
    """Preflight, then ingest from BigQuery after it (both uncached: the bucket and the table
    change under the same parameters); the ingest task, its `dataset` output for the rest."""
    checked_first = preflight(
        label=label, model_base_path=model_base_path, table=table, query=query,
        split_key=split_key, split_ratios=split_ratios, slices=slices,
        feature_spec_uri=feature_spec_uri, project=project, location=location,
    ).set_display_name("Preflight")
    checked_first.set_caching_options(False)  # the bucket and the table may change
    ingest = bigquery_ingest(
        table=table, query=query, split_key=split_key, split_ratios=split_ratios,
        project=project, location=location, read_streams=read_streams,
    ).set_display_name("Ingest from BigQuery").after(checked_first)
    retried(ingest)
    ingest.set_caching_options(False)  # the table changes under the same parameters
    return ingest


def train_ops(train_replicas: int = 1,
              machine_type: str = distributed.DEFAULT_MACHINE_TYPE,
              cluster: str = "vertex") -> tuple:
    """The (CPU, GPU) train components for `train_replicas` machines: conveyor's `train` and
    `train_gpu` for 1; for more, their Vertex AI custom-job forms (`cluster="vertex"`), or
    `train_tfjob` for both (`cluster="kubeflow"`: the GPU branch gives it GPUs per replica).
    An InputError for anything but an int >= 1, or another cluster."""
    check_replicas(train_replicas)
    check_cluster(cluster)
    if train_replicas == 1:
        return train, train_gpu
    if cluster == "kubeflow":
        return train_tfjob, train_tfjob
    return (distributed.custom_job_train(train_replicas, machine_type=machine_type),
            distributed.custom_job_train(train_replicas, gpu=True, machine_type=machine_type))


def tracked(tracking_uri) -> dict:
    """The arguments a tracked step gets (`conveyor.tracking`): the tracking URI, and the
    pipeline job's name, which names the one MLflow run all its steps log to. None: none
    (a pipeline without the `tracking_uri` parameter)."""
    if tracking_uri is None:
        return {}
    return dict(tracking_uri=tracking_uri, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)


def _evaluate_and_push(model, *, dataset, statistics, model_base_path, slices,
                       thresholds, allow_breaking_signature, tracking_uri=None) -> None:
    evaluated = evaluate(
        model=model, dataset=dataset, model_base_path=model_base_path, slices=slices,
        thresholds=thresholds, allow_breaking_signature=allow_breaking_signature,
        **tracked(tracking_uri),
    ).set_display_name("Evaluate")
    evaluated.set_caching_options(False)  # the baseline is whatever is served now
    with dsl.If(evaluated.outputs["Output"] == True, name="blessed"):  # noqa: E712
        pushed = push(
            model=model, evaluation=evaluated.outputs["evaluation"], dataset=dataset,
            model_base_path=model_base_path, statistics=statistics, **tracked(tracking_uri),
        ).set_display_name("Push")
        retried(pushed)
        pushed.set_caching_options(False)


def train_evaluate_push(
    *,
    dataset: pipeline_channel.PipelineChannel,
    preprocessing: pipeline_channel.PipelineChannel,
    statistics: pipeline_channel.PipelineChannel,
    hyperparameters,
    module_file,
    model_base_path,
    slices,
    thresholds,
    gpus: pipeline_channel.PipelineChannel,
    accelerator: pipeline_channel.PipelineChannel,
    allow_breaking_signature=False,
    train_replicas: int = 1,
    machine_type: str = distributed.DEFAULT_MACHINE_TYPE,
    cluster: str = "vertex",
    tracking_uri=None,
) -> None:
    """Train (on `gpus` accelerators of type `accelerator` when `gpus` > 0; on
    `train_replicas` machines of `machine_type` (Vertex AI) or pods (Kubeflow) when above 1),
    evaluate, push; each logs to MLflow when given a `tracking_uri` channel (the single-machine
    train task too; a train on several machines does not)."""
    on_cpu, on_gpu = train_ops(train_replicas, machine_type, cluster)
    many = train_replicas > 1
    arguments = dict(dataset=dataset, preprocessing=preprocessing,
                     hyperparameters=hyperparameters, module_file=module_file)
    after = dict(dataset=dataset, statistics=statistics, model_base_path=model_base_path,
                 slices=slices, thresholds=thresholds,
                 allow_breaking_signature=allow_breaking_signature, tracking_uri=tracking_uri)
    if not many:
        arguments.update(tracked(tracking_uri))
    if many and cluster == "kubeflow":
        _train_tfjob_evaluate_push(on_cpu, train_replicas, gpus, accelerator,
                                   arguments=arguments, after=after)
        return
    with dsl.If(gpus == 0, name="on-cpu"):
        if many:  # the task is the custom job's launcher; the machines are in the job
            trained = on_cpu(**arguments).set_display_name(f"Train ({train_replicas} machines)")
        else:
            trained = on_cpu(**arguments).set_display_name("Train")
            trained.set_cpu_request("2").set_memory_request("4G")
        retried(trained)
        _evaluate_and_push(trained.outputs["model"], **after)
    with dsl.Else(name="on-gpu"):
        if many:
            trained = on_gpu(**arguments, accelerator_type=accelerator,
                             accelerator_count=gpus).set_display_name(
                f"Train (GPU, {train_replicas} machines)")
        else:
            trained = on_gpu(**arguments).set_display_name("Train (GPU)")
            trained.set_cpu_request("4").set_memory_request("12G")
            trained.set_accelerator_type(accelerator).set_accelerator_limit(gpus)
        retried(trained)
        _evaluate_and_push(trained.outputs["model"], **after)


def _train_tfjob_evaluate_push(launcher, train_replicas: int, gpus, accelerator, *,
                               arguments: dict, after: dict) -> None:
    """The Kubeflow form: the train task launches a TFJob of `train_replicas` pods (on CPU, or
    with `gpus` GPUs of resource `accelerator` each) and waits; it asks for little itself.
    The replicas' images are arguments, so `conveyor compile --registry` moves them too."""
    with dsl.If(gpus == 0, name="on-cpu"):
        trained = launcher(**arguments, train_replicas=train_replicas,
                           image=images.image(variant="cpu")).set_display_name(
            f"Train ({train_replicas} pods, TFJob)")
        trained.set_cpu_request("0.5").set_memory_request("1G")
        retried(trained)
        _evaluate_and_push(trained.outputs["model"], **after)
    with dsl.Else(name="on-gpu"):
        trained = launcher(**arguments, train_replicas=train_replicas,
                           image=images.image(variant="gpu"), cpu="4", memory="12G",
                           gpus=gpus, gpu_resource=accelerator).set_display_name(
            f"Train (GPU, {train_replicas} pods, TFJob)")
        trained.set_cpu_request("0.5").set_memory_request("1G")
        retried(trained)
        _evaluate_and_push(trained.outputs["model"], **after)
