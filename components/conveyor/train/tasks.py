"""The work behind the train KFP component, in terms of its artifacts and parameters.

In a cluster of several workers (a Vertex AI custom job whose worker pools all run this task's
executor with the same executor input, or a TFJob), every worker trains, and only the chief
publishes: the model, metrics and TensorBoard outputs, and the executor output that the KFP
executor writes after the component returns (a second one fails with FileExistsError on Vertex,
or overwrites the chief's). A non-chief worker, once training has succeeded, flushes its output
streams and ends its process at once with status 0 (`os._exit`), so the executor never writes
outputs for it. A failure raises on every worker as on one; the fail-fast marker
(`conveyor.failfast`) is checked on every worker and written by whichever fails on bad input.
"""

from __future__ import annotations

from conveyor.gcp.files import local_copy


def train(dataset, preprocessing, model, metrics, tensorboard, *, hyperparameters: dict,
          module_file: str = "", log_dir_uri: str = "", train_split: str = "train",
          eval_split: str = "eval", exit_non_chief: bool = True, tracking_uri: str = "",
          pipeline_run: str = ""):
    """Train and publish. `exit_non_chief`: end a non-chief worker's process after training
    (see the module); False returns its result instead, publishing nothing."""
    from conveyor.failfast import fail_once

    with fail_once(model.path, "train"):
        result = _run(dataset, preprocessing, model, tensorboard, hyperparameters, module_file,
                      log_dir_uri, train_split, eval_split)
    if not result.is_chief:
        if exit_non_chief:
            _end_non_chief(result)
        return result
    _publish(result, model, metrics, tensorboard)
    _track(result, model, tensorboard, tracking_uri, pipeline_run)
    return result


def _end_non_chief(result) -> None:
    """End a non-chief worker's process after training: the executor must not write outputs.
    The interpreter's exit handlers run first (TensorFlow's remove its generated autograph
    files from TMPDIR), then the process ends without returning to the executor."""
    import atexit
    import logging
    import os
    import sys

    print(f"train: {result.cluster.describe()} done; the chief publishes the outputs",
          flush=True)
    try:
        atexit._run_exitfuncs()
    except Exception:  # a failing handler must not fail a finished worker
        pass
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _run(dataset, preprocessing, model, tensorboard, hyperparameters, module_file, log_dir_uri,
         train_split, eval_split):
    from conveyor.train.train import train as run

    return run(
        dataset.path, preprocessing.path, model.path,
        hparams=hyperparameters, tensorboard_path=tensorboard.path,
        log_dir_uri=log_dir_uri or None,
        checkpoint_dir=f"{model.path}.checkpoints",  # the same on a retry of this task
        module_file=str(local_copy(module_file, "module_file")) if module_file else None,
        train_split=train_split, eval_split=eval_split,
    )


def _publish(result, model, metrics, tensorboard) -> None:
    import dataclasses
    import math

    for name, value in result.metrics.items():
        if math.isfinite(value):  # KFP's metrics JSON cannot hold NaN
            metrics.log_metric(name, round(value, 6))
    metrics.log_metric("examples_per_second", round(result.examples_per_second, 1))
    metrics.log_metric("resumed_from_epoch", result.first_epoch)
    model.metadata.update({"framework": "tensorflow", "format": "saved_model",
                           "signature": "serving_default",
                           "hyperparameters": dataclasses.asdict(result.hyperparameters),
                           "validation": result.validation})
    from conveyor.train.summaries import describe

    tensorboard.metadata["log_dir"] = tensorboard.path
    tensorboard.metadata.update(describe(result))  # the exported epoch, and why


def _track(result, model, tensorboard, tracking_uri: str, pipeline_run: str) -> None:
    """The resolved hyper-parameters, each figure per epoch and at the exported epoch, and the
    model's URI, to MLflow when tracking is configured (`conveyor.tracking`)."""
    import dataclasses

    from conveyor import tracking
    from conveyor.tracking.runs import artifact_uri

    figures = {**result.metrics, "examples_per_second": result.examples_per_second,
               "resumed_from_epoch": result.first_epoch}
    hparams = result.hyperparameters
    tracking.log_step(tracking.Step(
        "train", params=dataclasses.asdict(hparams) if hparams is not None else {},
        metrics=figures,
        series={f"epoch_{k}": v for k, v in result.history.items()},
        first_step=result.first_epoch,
        artifacts={"model": artifact_uri(model), "tensorboard": artifact_uri(tensorboard)}),
        tracking_uri=tracking_uri, pipeline_run=pipeline_run)
