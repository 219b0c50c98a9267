"""Train a Keras model over a Dataset with its fitted transform, and export it for serving.

- Input: `tf.data` pipelines streaming the train split (shuffled) less the validation rows held
  out of it (`conveyor.train.data.plan_validation`), and those validation rows. The eval split
  is never read: the scores evaluate reports come from rows no choice of train has seen.
- Model: `conveyor.train.model` (DNN, wide-and-deep, or a user module), preprocessing inside.
- Distribution: chosen from the devices present (`choose_strategy`).
- Defaults (`Hyperparameters.resolved`): batch size and an epoch bound from the training rows,
  early stopping on the validation loss (its patience from the validation rows), the learning
  rate halved when the validation loss stalls, and the weights of the best epoch (lowest
  validation loss) exported, not the last: the rules of `conveyor.train.epochs.EpochPolicy`,
  shared with the multi-worker loop.
- Callbacks: TensorBoard (to the TensorBoard artifact, and optionally a gs:// log dir; once
  trained, the hyper-parameters with the final figures and the exported epoch beside them:
  `conveyor.train.summaries`),
  `BackupAndRestore` in `checkpoint_dir` so a preempted or retried task resumes from its last
  finished epoch. A NaN or infinite loss stops training at once with a `TrainingError` that
  names the likely cause; nothing is exported then.
- Several workers (`TF_CONFIG` or Vertex AI's `CLUSTER_SPEC`, `conveyor.train.cluster`): the
  same model trained with MultiWorkerMirroredStrategy in a custom loop
  (`conveyor.train.distributed`), with the same epoch policy.
- Export (`conveyor.train.export`): a SavedModel whose `serving_default` signature takes the raw
  features and returns named outputs, with the transform in its `assets.extra/`.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from conveyor.errors import InputError, TrainingError
from conveyor.io.dataset import Dataset
from conveyor.train import cluster as clusters
from conveyor.train import summaries
from conveyor.train.data import Validation, plan_validation, tf_dataset
from conveyor.train.distributed import multi_worker_strategy, train_distributed
from conveyor.train.epochs import EpochPolicy, divergence_causes, epoch_metrics
from conveyor.train.export import export, smearing
from conveyor.train.hyperparameters import Hyperparameters
from conveyor.train.model import build_model
from conveyor.train.result import TrainResult
from conveyor.transform.fit import Fitted


def choose_strategy(gpus: list | None = None) -> tf.distribute.Strategy:
    """MirroredStrategy over several GPUs, OneDeviceStrategy on one, the default on CPU."""
    gpus = tf.config.list_logical_devices("GPU") if gpus is None else gpus
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    return tf.distribute.get_strategy()



class _Policy(keras.callbacks.Callback):
    """The epoch policy (`EpochPolicy`) inside `model.fit`: stops early, halves the learning
    rate, keeps the weights of the best epoch and puts them back at the end (Keras'
    EarlyStopping restores only when it stops early). A diverged loss stops training and is
    kept in `error`, raised once `fit` returns, so `fit` ends as it would (its backup removed)."""

    def __init__(self, policy: EpochPolicy):
        super().__init__()
        self.policy = policy
        self.weights = None
        self.error: TrainingError | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        current = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        if self.policy.plateau.patience:  # logged as Keras' ReduceLROnPlateau logs it
            logs["learning_rate"] = current
        self.policy.learning_rate = current  # as restored, or as the optimizer rounds it
        try:
            decision = self.policy.end_epoch(epoch, logs)
        except TrainingError as error:
            self.error = error
            self.model.stop_training = True
            return
        if decision.new_best:
            self.weights = self.model.get_weights()
        if decision.learning_rate != current:
            optimizer.learning_rate = decision.learning_rate
        if decision.stop:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.weights is not None and self.error is None:
            self.model.set_weights(self.weights)


class _Progress(keras.callbacks.Callback):
    """Remembers where training (re)started and how fast it went.

    Steady throughput counts, in each epoch, the steps after its first one (which traces the
    model or restarts the input) up to its last one: validation and start-up are left out."""

    def __init__(self):
        super().__init__()
        self.first_epoch: int | None = None
        self.epoch_seconds: list[float] = []
        self._start = 0.0
        self._first: float | None = None
        self._last = 0.0
        self._steady_steps = 0
        self._steady_seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is None:
            self.first_epoch = epoch
        self._start = time.monotonic()
        self._first = None

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if self._first is None:
            self._first = now
        else:
            self._steady_steps += 1
        self._last = now

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.monotonic() - self._start)
        if self._first is not None:
            self._steady_seconds += self._last - self._first

    def steady_steps_per_second(self) -> float:
        return self._steady_steps / self._steady_seconds if self._steady_seconds > 0 else 0.0


def _compile(model: keras.Model, fitted: Fitted, hp: Hyperparameters) -> None:
    task = fitted.spec.task
    if task == "binary":
        loss = keras.losses.BinaryCrossentropy()
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    elif task == "multiclass":
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        loss = keras.losses.MeanSquaredError()
        metrics = [keras.metrics.RootMeanSquaredError(name="rmse"),
                   keras.metrics.MeanAbsoluteError(name="mae")]
    model.compile(optimizer=keras.optimizers.Adam(hp.learning_rate), loss=loss, metrics=metrics)



def train(dataset_path: str | Path, transform_path: str | Path, model_path: str | Path, *,
          hparams: dict[str, Any] | None = None, tensorboard_path: str | Path | None = None,
          log_dir_uri: str | None = None, checkpoint_dir: str | Path | None = None,
          module_file: str | None = None, train_split: str = "train",
          eval_split: str = "eval") -> TrainResult:
    """Train on `train_split` less its validation rows, validate on those, export to
    `model_path`. `eval_split` names the split the evaluate step scores: never read here, and
    it may not be `train_split`.

    With a cluster of several workers in `TF_CONFIG` / `CLUSTER_SPEC`, every worker calls this
    with the same arguments; only the chief writes `model_path` and the TensorBoard logs."""
    start = time.monotonic()
    cluster = clusters.from_environment()
    strategy = multi_worker_strategy(cluster) if cluster.multi_worker else None  # before any op
    hp = Hyperparameters.from_dict(hparams)
    dataset = Dataset(dataset_path)
    fitted = Fitted.load(transform_path)
    types = {c.name: c.type for c in dataset.info.columns}
    fitted.spec.check_columns(types)
    if train_split not in dataset.splits:
        raise InputError(f"train: the dataset has no {train_split!r} split "
                         f"(splits: {', '.join(dataset.splits)})")
    if eval_split == train_split:
        raise InputError(f"train: train_split and eval_split are both {train_split!r}: the "
                         "scores evaluate reports would come from rows the model trained on; "
                         "name another eval split")
    keras.utils.set_random_seed(hp.seed)
    validation = plan_validation(dataset, train_split, fitted, hp.validation_rows)
    hp = hp.resolved(validation.training_rows, validation.labelled)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else Path(f"{model_path}.checkpoints")
    log_dirs = [str(d) for d in (tensorboard_path, log_dir_uri) if d]
    if strategy is not None:
        result = train_distributed(
            strategy, cluster, dataset, fitted, hp, module_file=module_file,
            model_path=Path(model_path), transform_path=transform_path, log_dirs=log_dirs,
            checkpoint_dir=checkpoint_dir, validation=validation, start=start)
    else:
        result = _train_single(dataset, fitted, hp, module_file=module_file,
                               model_path=Path(model_path), transform_path=transform_path,
                               log_dirs=log_dirs, checkpoint_dir=checkpoint_dir,
                               validation=validation, start=start)
    result.validation = validation.describe()
    result.metrics["validation_rows"] = float(validation.labelled)
    result.metrics["training_rows"] = float(validation.training_rows)
    if result.is_chief and log_dirs:
        summaries.write(log_dirs, result)
    return result


def _validation_input(dataset: Dataset, fitted: Fitted, hp: Hyperparameters,
                      validation: Validation) -> tuple[tf.data.Dataset | None, int | None]:
    """(the validation input, its steps), or (None, None) without validation rows."""
    if validation.holdout is None or not validation.labelled:
        return None, None
    return (tf_dataset(dataset, validation.split, fitted, hp.batch_size, every=validation.every,
                       holdout=validation.holdout, held_out=True),
            math.ceil(validation.labelled / hp.batch_size))


def _train_single(dataset: Dataset, fitted: Fitted, hp: Hyperparameters, *,
                  module_file: str | None, model_path: Path, transform_path: str | Path,
                  log_dirs: list[str], checkpoint_dir: Path, validation: Validation,
                  start: float) -> TrainResult:
    """`model.fit` on this process's devices, the epoch policy as a callback."""
    train_split = validation.split
    if hp.steps:
        steps_per_epoch = max(1, math.ceil(hp.steps / hp.epochs))
    else:
        steps_per_epoch = max(1, validation.training_rows // hp.batch_size)
    train_ds = tf_dataset(dataset, train_split, fitted, hp.batch_size,
                          shuffle_buffer=hp.shuffle_buffer, seed=hp.seed, repeat=True,
                          holdout=validation.holdout)
    eval_ds, eval_steps = _validation_input(dataset, fitted, hp, validation)

    progress = _Progress()
    policy = _Policy(EpochPolicy(hp.early_stopping_patience if eval_ds is not None else 0,
                                 hp.learning_rate, divergence_causes(fitted)))
    callbacks: list = [progress, keras.callbacks.TerminateOnNaN(),
                       keras.callbacks.BackupAndRestore(str(checkpoint_dir))]
    callbacks += [keras.callbacks.TensorBoard(log_dir=d, update_freq="epoch") for d in log_dirs]
    callbacks.append(policy)
    with choose_strategy().scope():
        model = build_model(fitted, hp, module_file)
        _compile(model, fitted, hp)
    history = model.fit(train_ds, epochs=hp.epochs, steps_per_epoch=steps_per_epoch,
                        validation_data=eval_ds, validation_steps=eval_steps,
                        callbacks=callbacks, verbose=2,
                        shuffle=False)  # the input pipeline shuffles
    if policy.error is not None:
        raise policy.error
    label_stats = fitted.label_stats
    if label_stats is not None and label_stats.get("transform") == "log":
        label_stats["smearing"] = smearing(model, dataset, train_split, fitted)
    export(model, fitted, model_path, transform_path)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)

    at = policy.policy.best_epoch
    first = progress.first_epoch or 0
    metrics = epoch_metrics(history.history, at, first)
    metrics["epochs_run"] = float(len(progress.epoch_seconds))
    if at is not None:
        metrics["best_epoch"] = float(at + 1)
    run = progress.epoch_seconds
    examples = len(run) * steps_per_epoch * hp.batch_size
    return TrainResult(
        model=model, metrics=metrics, first_epoch=first, epochs_run=len(run),
        steps_per_epoch=steps_per_epoch,
        examples_per_second=examples / sum(run) if run else 0.0,
        steady_examples_per_second=progress.steady_steps_per_second() * hp.batch_size,
        seconds=time.monotonic() - start, best_epoch=at, hyperparameters=hp,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()})
