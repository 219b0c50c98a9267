"""The work behind the train KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

from conveyor.gcp.files import local_copy


def train(dataset, preprocessing, model, metrics, tensorboard, *, hyperparameters: dict,
          module_file: str = "", log_dir_uri: str = "", train_split: str = "train",
          eval_split: str = "eval"):
    from conveyor.failfast import fail_once

    with fail_once(model.path, "train"):
        result = _run(dataset, preprocessing, model, tensorboard, hyperparameters, module_file,
                      log_dir_uri, train_split, eval_split)
    _publish(result, model, metrics, tensorboard)
    return result


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
                           "hyperparameters": dataclasses.asdict(result.hyperparameters)})
    tensorboard.metadata["log_dir"] = tensorboard.path
