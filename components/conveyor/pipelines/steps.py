"""Graph pieces the reference pipelines share: train (on CPU or GPUs), evaluate, push if blessed.

`train_evaluate_push` is called inside a `@dsl.pipeline` function. Training runs on GPUs only when
the pipeline is given a GPU count above zero: the choice is a `dsl.If`/`dsl.Else` at run time, so
the CPU branch carries no accelerator settings at all (nothing for a backend to interpret as
"zero GPUs of no type"). Evaluate and push follow inside each branch: kfp 2.17's local runner
cannot merge the branches' models with `dsl.OneOf` ("Expected 1 artifact in
ArtifactSelectorSpec"), and the local runner is the embedded default.

Retries (2, after 2 s and 4 s) are for preemption, crashed processes and outages longer than
the in-task retries of `conveyor.gcp.retry`; bad input fails once (`conveyor.failfast`). The CPU branch is built
first, so its tasks keep the plain names (train, evaluate, push) and the GPU branch's get a
`-2` suffix.
"""

from __future__ import annotations

from kfp import dsl
from kfp.dsl import pipeline_channel

from conveyor.evaluate.component import evaluate
from conveyor.push.component import push
from conveyor.train.component import train, train_gpu

#: Accelerator used when a pipeline is given GPUs and no type (Vertex AI's name for it; on
#: Kubeflow on GKE use the node's resource name, e.g. nvidia.com/gpu).
DEFAULT_ACCELERATOR = "NVIDIA_TESLA_T4"


def _evaluate_and_push(model, *, dataset, statistics, model_base_path, slices,
                       thresholds, allow_breaking_signature) -> None:
    evaluated = evaluate(
        model=model, dataset=dataset, model_base_path=model_base_path, slices=slices,
        thresholds=thresholds, allow_breaking_signature=allow_breaking_signature,
    ).set_display_name("Evaluate")
    evaluated.set_caching_options(False)  # the baseline is whatever is served now
    with dsl.If(evaluated.outputs["Output"] == True, name="blessed"):  # noqa: E712
        pushed = push(
            model=model, evaluation=evaluated.outputs["evaluation"], dataset=dataset,
            model_base_path=model_base_path, statistics=statistics,
        ).set_display_name("Push")
        pushed.set_retry(num_retries=2, backoff_duration="2s", backoff_factor=2.0)
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
) -> None:
    """Train (on `gpus` accelerators of type `accelerator` when `gpus` > 0), evaluate, push."""
    arguments = dict(dataset=dataset, preprocessing=preprocessing,
                     hyperparameters=hyperparameters, module_file=module_file)
    after = dict(dataset=dataset, statistics=statistics, model_base_path=model_base_path,
                 slices=slices, thresholds=thresholds,
                 allow_breaking_signature=allow_breaking_signature)
    with dsl.If(gpus == 0, name="on-cpu"):
        trained = train(**arguments).set_display_name("Train")
        trained.set_retry(num_retries=2, backoff_duration="2s", backoff_factor=2.0)
        trained.set_cpu_request("2").set_memory_request("4G")
        _evaluate_and_push(trained.outputs["model"], **after)
    with dsl.Else(name="on-gpu"):
        trained = train_gpu(**arguments).set_display_name("Train (GPU)")
        trained.set_retry(num_retries=2, backoff_duration="2s", backoff_factor=2.0)
        trained.set_cpu_request("4").set_memory_request("12G")
        trained.set_accelerator_type(accelerator).set_accelerator_limit(gpus)
        _evaluate_and_push(trained.outputs["model"], **after)
