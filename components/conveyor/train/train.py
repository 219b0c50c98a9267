"""Train a Keras model over a Dataset with its fitted transform, and export it for serving.

- Input: `tf.data` pipelines streaming the train split (shuffled) and the eval split.
- Model: `conveyor.train.model` (DNN, wide-and-deep, or a user module), preprocessing inside.
- Distribution: chosen from the devices present (`choose_strategy`).
- Defaults (`Hyperparameters.resolved`): batch size and an epoch bound from the train rows,
  early stopping on the eval loss, the learning rate halved when the eval loss stalls, and the
  weights of the best epoch (lowest eval loss) exported, not the last.
- Callbacks: TensorBoard (to the TensorBoard artifact, and optionally a gs:// log dir),
  `BackupAndRestore` in `checkpoint_dir` so a preempted or retried task resumes from its last
  finished epoch. A NaN or infinite loss stops training at once with a `TrainingError` that
  names the likely cause; nothing is exported then.
- Several workers (`TF_CONFIG` or Vertex AI's `CLUSTER_SPEC`, `conveyor.train.cluster`): the
  same model trained with MultiWorkerMirroredStrategy in a custom loop (`model.fit` fails under
  that strategy in Keras 3, keras-team/keras#20585) that keeps what `model.fit` gives: per-epoch
  eval loss and metrics (all-reduced over the workers' eval shards), early stopping, the best
  epoch exported, the learning rate halved on plateaus, a NaN loss as `TrainingError`,
  TensorBoard scalars, and per-epoch `tf.train.Checkpoint`s in `checkpoint_dir` (the chief's;
  other workers save to a temporary folder, as TensorFlow requires every worker to save) from
  which a restarted cluster resumes. Each worker reads its own part of the split
  (`conveyor.train.data.shard_parts`); the global batch is `batch_size` x replicas, and every
  worker runs the same steps per epoch. Only the chief writes the model, TensorBoard logs and
  removes the checkpoints; others export to a temporary folder they delete.
- Export (`export`): a SavedModel whose `serving_default` signature takes the raw features as
  named inputs of shape [None] and returns named outputs (binary: probability and class;
  multiclass: probabilities, class_id and class_label; regression: value), with `transform.json`,
  `feature_spec.yaml` and `labels.txt` in its `assets.extra/`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from conveyor.errors import EmptyDataError, InputError, TrainingError  # noqa: E402
from conveyor.io.dataset import Dataset  # noqa: E402
from conveyor.train import cluster as clusters  # noqa: E402
from conveyor.train.data import (  # noqa: E402
    labelled_rows, sample_every, sample_parts, shard_rows, tf_dataset)
from conveyor.train.hyperparameters import Hyperparameters  # noqa: E402
from conveyor.train.model import build_model  # noqa: E402
from conveyor.train.preprocess import input_dtype  # noqa: E402
from conveyor.transform.fit import SPEC_FILE, Fitted  # noqa: E402

EXTRA = "assets.extra"


def choose_strategy(gpus: list | None = None) -> tf.distribute.Strategy:
    """MirroredStrategy over several GPUs, OneDeviceStrategy on one, the default on CPU."""
    gpus = tf.config.list_logical_devices("GPU") if gpus is None else gpus
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    return tf.distribute.get_strategy()


@dataclasses.dataclass
class TrainResult:
    model: keras.Model  # the trained Keras model, raw features in (what was exported)
    metrics: dict[str, float]
    first_epoch: int  # > 0 when the run resumed from a checkpoint
    epochs_run: int
    steps_per_epoch: int
    examples_per_second: float  # over all epochs run, tracing and validation included
    steady_examples_per_second: float  # training steps after the first (which traces)
    seconds: float
    best_epoch: int | None = None  # the epoch whose weights were exported (eval loss), from 0
    hyperparameters: Hyperparameters | None = None  # as resolved for this run
    cluster: clusters.Cluster = clusters.SINGLE  # this process's role
    global_batch_size: int = 0  # examples per step over all replicas (multi-worker runs)

    @property
    def is_chief(self) -> bool:
        return self.cluster.is_chief


class _BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest eval loss and puts them back at the end
    (Keras' EarlyStopping restores only when it stops early). After a resume, only the epochs
    of this run are compared."""

    def __init__(self, monitor: str = "val_loss"):
        super().__init__()
        self.monitor = monitor
        self.best = float("inf")
        self.best_epoch: int | None = None
        self.weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(value) and value < self.best:
            self.best, self.best_epoch = float(value), epoch
            self.weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.weights is not None:
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


def _validation_sample(dataset: Dataset, split: str, fitted: Fitted, hp: Hyperparameters
                       ) -> tuple[int, int]:
    """(every, labelled): validation reads 1 row group in `every` of `split` (1: all of it),
    which hold `labelled` rows with a label; said when `every` > 1. A sample without a label
    falls back to the whole split."""
    rows, files = dataset.split(split).rows, list(dataset.files(split))
    every = sample_every(rows, hp.validation_rows)
    labelled = labelled_rows(sample_parts(files, every), fitted.spec.label)
    if every > 1 and not labelled:
        every, labelled = 1, labelled_rows(sample_parts(files), fitted.spec.label)
    if every > 1:
        print(f"train: validating each epoch on 1 row group (or row) in {every} of split {split!r} "
              f"({labelled:,} labelled of its {rows:,} rows; hyperparameter validation_rows="
              f"{hp.validation_rows:,}); the evaluate step scores them all")
    return every, labelled


def train(dataset_path: str | Path, transform_path: str | Path, model_path: str | Path, *,
          hparams: dict[str, Any] | None = None, tensorboard_path: str | Path | None = None,
          log_dir_uri: str | None = None, checkpoint_dir: str | Path | None = None,
          module_file: str | None = None, train_split: str = "train",
          eval_split: str = "eval") -> TrainResult:
    """Train on `train_split`, validate on `eval_split` (if present), export to `model_path`.

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
    keras.utils.set_random_seed(hp.seed)
    rows = dataset.split(train_split).rows
    hp = hp.resolved(rows)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else Path(f"{model_path}.checkpoints")
    if strategy is not None:
        return _train_distributed(
            strategy, cluster, dataset, fitted, hp, module_file=module_file,
            model_path=Path(model_path), transform_path=transform_path,
            log_dirs=[str(d) for d in (tensorboard_path, log_dir_uri) if d],
            checkpoint_dir=checkpoint_dir, train_split=train_split, eval_split=eval_split,
            start=start)
    if hp.steps:
        steps_per_epoch = max(1, math.ceil(hp.steps / hp.epochs))
    else:
        steps_per_epoch = max(1, rows // hp.batch_size)
    train_ds = tf_dataset(dataset, train_split, fitted, hp.batch_size,
                          shuffle_buffer=hp.shuffle_buffer, seed=hp.seed, repeat=True)
    eval_ds, eval_steps = None, None
    if eval_split in dataset.splits:
        every, labelled = _validation_sample(dataset, eval_split, fitted, hp)
        eval_steps = math.ceil(labelled / hp.batch_size) if labelled else None
        eval_ds = (tf_dataset(dataset, eval_split, fitted, hp.batch_size, every=every)
                   if labelled else None)

    progress = _Progress()
    callbacks: list = [progress, keras.callbacks.TerminateOnNaN()]
    callbacks.append(keras.callbacks.BackupAndRestore(str(checkpoint_dir)))
    for log_dir in (tensorboard_path, log_dir_uri):
        if log_dir:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir), update_freq="epoch"))
    best = None
    if eval_ds is not None:
        best = _BestWeights()
        callbacks.append(best)
        if hp.early_stopping_patience:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=hp.early_stopping_patience))
            callbacks.append(keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, min_lr=hp.learning_rate / 32,
                patience=max(2, hp.early_stopping_patience // 2), verbose=0))

    with choose_strategy().scope():
        model = build_model(fitted, hp, module_file)
        _compile(model, fitted, hp)
    history = model.fit(train_ds, epochs=hp.epochs, steps_per_epoch=steps_per_epoch,
                        validation_data=eval_ds, validation_steps=eval_steps,
                        callbacks=callbacks, verbose=2,
                        shuffle=False)  # the input pipeline shuffles
    _check_finite(history.history, fitted)
    if (fitted.label_stats or {}).get("transform") == "log":
        fitted.label_stats["smearing"] = _smearing(model, dataset, train_split, fitted)
    export(model, fitted, model_path, transform_path)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)

    at = best.best_epoch if best is not None and best.best_epoch is not None else None
    first = progress.first_epoch or 0
    metrics = {k: float(v[-1] if at is None else v[min(at - first, len(v) - 1)])
               for k, v in history.history.items() if v and k != "learning_rate"}
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
        seconds=time.monotonic() - start, best_epoch=at, hyperparameters=hp)


def multi_worker_strategy(cluster: clusters.Cluster) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy over the cluster's chief and workers (and, on each worker,
    its local GPUs). Call it before any other TensorFlow op of the process: the collective
    runtime is configured when the strategy is made. `TF_CONFIG` is (re)written with the
    training tasks alone (from Vertex AI's `CLUSTER_SPEC` when that was the source)."""
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {kind: list(addresses) for kind, addresses in cluster.spec.items()},
        "task": {"type": cluster.task_type, "index": cluster.task_index}})
    return tf.distribute.MultiWorkerMirroredStrategy()


@dataclasses.dataclass
class Plateau:
    """Early stopping and learning-rate halving on the eval loss, as Keras' `EarlyStopping`
    (min_delta 0) and `ReduceLROnPlateau` (min_delta 1e-4, factor 0.5) decide them: the custom
    loop's copy of those callbacks. `patience` 0 turns both off."""

    patience: int
    learning_rate: float
    min_learning_rate: float
    lr_patience: int = 0  # 0: max(2, patience // 2), as the single-worker path
    best: float = math.inf
    wait: int = 0
    lr_best: float = math.inf
    lr_wait: int = 0

    def __post_init__(self):
        if not self.lr_patience:
            self.lr_patience = max(2, self.patience // 2)

    def update(self, epoch: int, loss: float) -> bool:
        """Record `epoch`'s eval loss; True when training should stop. May lower
        `learning_rate`."""
        if not self.patience:
            return False
        if loss < self.lr_best - 1e-4:
            self.lr_best, self.lr_wait = loss, 0
        else:
            self.lr_wait += 1
            if self.lr_wait >= self.lr_patience:
                if self.learning_rate > self.min_learning_rate:
                    self.learning_rate = max(self.learning_rate * 0.5, self.min_learning_rate)
                self.lr_wait = 0
        if loss < self.best:
            self.best, self.wait = loss, 0
            return False
        self.wait += 1
        return self.wait >= self.patience and epoch > 0


def _loss_and_metrics(task: str):
    """The per-example loss (no reduction) and fresh metrics, named as `_compile` names them."""
    if task == "binary":
        return keras.losses.BinaryCrossentropy(reduction=None), [
            keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    if task == "multiclass":
        return keras.losses.SparseCategoricalCrossentropy(reduction=None), [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return keras.losses.MeanSquaredError(reduction=None), [
        keras.metrics.RootMeanSquaredError(name="rmse"),
        keras.metrics.MeanAbsoluteError(name="mae")]


class _Summed:
    """Sums kept on this worker (a loss total, a count, the metrics' states, all sums) and
    added up over the workers once an epoch with one all-reduce."""

    def __init__(self, strategy: tf.distribute.Strategy, metrics: list):
        self.strategy = strategy
        self.metrics = metrics
        self.loss = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.count = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self._reduce = None

    def reset(self) -> None:
        self.loss.assign(0.0)
        self.count.assign(0.0)
        for m in self.metrics:
            m.reset_state()

    def update(self, y, prediction, loss_sum, count) -> None:
        self.loss.assign_add(tf.cast(loss_sum, tf.float64))
        self.count.assign_add(tf.cast(count, tf.float64))
        for m in self.metrics:
            m.update_state(y, prediction)

    def _state(self) -> list:
        return [self.loss, self.count] + [v for m in self.metrics for v in m.variables]

    def all_reduce(self) -> None:
        """Replace every sum by its total over the workers."""
        state = self._state()
        values = [np.asarray(v.numpy()) for v in state]
        flat = np.concatenate([a.astype(np.float64).reshape(-1) for a in values])
        local = len(self.strategy.extended.worker_devices)
        if self._reduce is None:
            @tf.function
            def reduce(values):
                # one copy per worker: the first local replica carries it, the others zeros
                per_replica = self.strategy.experimental_distribute_values_from_function(
                    lambda ctx: values if ctx.replica_id_in_sync_group % local == 0
                    else tf.zeros_like(values))
                return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            self._reduce = reduce
        total = self._reduce(tf.constant(flat)).numpy()
        at = 0
        for v, a in zip(state, values):
            v.assign(total[at:at + a.size].reshape(a.shape).astype(a.dtype))
            at += a.size

    def results(self, prefix: str = "", steps: int = 0) -> dict[str, float]:
        """The mean loss (per step when `steps`, else per example) and the metrics."""
        denominator = steps or float(self.count.numpy())
        out = {f"{prefix}loss": float(self.loss.numpy()) / denominator if denominator
               else math.nan}
        for m in self.metrics:
            out[f"{prefix}{m.name}"] = float(m.result())
        return out


def _shaped(y, prediction, task: str):
    """A label as the loss and metrics compare it with the prediction: [b] with [b, k] classes,
    [b, 1] with a [b, 1] output."""
    return y if task == "multiclass" else tf.reshape(tf.cast(y, prediction.dtype), [-1, 1])


def _train_distributed(strategy: tf.distribute.Strategy, cluster: clusters.Cluster,
                       dataset: Dataset, fitted: Fitted, hp: Hyperparameters, *,
                       module_file: str | None, model_path: Path, transform_path: str | Path,
                       log_dirs: list[str], checkpoint_dir: Path, train_split: str,
                       eval_split: str, start: float) -> TrainResult:
    """The custom training loop under MultiWorkerMirroredStrategy (see the module)."""
    task = fitted.spec.task
    rows = dataset.split(train_split).rows
    replicas = strategy.num_replicas_in_sync
    global_batch = hp.batch_size * replicas
    if hp.steps:
        steps_per_epoch = max(1, math.ceil(hp.steps / hp.epochs))
    else:
        steps_per_epoch = max(1, rows // global_batch)
    files = list(dataset.files(train_split))
    empty = [i for i in range(cluster.num_workers) if not shard_rows(files, i, cluster.num_workers)]
    if empty:  # decided alike on every worker, from the Parquet footers: none waits for another
        raise EmptyDataError(
            f"train: split {train_split!r} ({rows} rows in {len(files)} file(s)) leaves worker(s) "
            f"{empty} of {cluster.num_workers} without rows; use fewer workers or more data")
    shard = (cluster.worker_index, cluster.num_workers)

    def train_input(context: tf.distribute.InputContext) -> tf.data.Dataset:
        if (context.input_pipeline_id, context.num_input_pipelines) != shard:
            raise RuntimeError(f"train: the strategy numbers this worker's input "
                               f"{context.input_pipeline_id} of {context.num_input_pipelines}, "
                               f"the cluster {shard[0]} of {shard[1]}")
        return tf_dataset(dataset, train_split, fitted,
                          context.get_per_replica_batch_size(global_batch),
                          shuffle_buffer=hp.shuffle_buffer, seed=hp.seed + shard[0],
                          repeat=True, shard=shard)

    train_data = strategy.distribute_datasets_from_function(train_input)
    eval_ds = None
    if eval_split in dataset.splits:
        every, labelled = _validation_sample(dataset, eval_split, fitted, hp)
        if labelled:  # all workers' count, alike on every worker
            eval_ds = tf_dataset(dataset, eval_split, fitted, hp.batch_size, shard=shard,
                                 every=every)

    with strategy.scope():
        model = build_model(fitted, hp, module_file)
        optimizer = keras.optimizers.Adam(hp.learning_rate)
        optimizer.build(model.trainable_variables)
    loss_fn, train_metrics = _loss_and_metrics(task)
    train_sums = _Summed(strategy, train_metrics)
    eval_sums = _Summed(strategy, _loss_and_metrics(task)[1])

    @tf.function
    def train_step(iterator):
        def step(x, y):
            with tf.GradientTape() as tape:
                prediction = model(x, training=True)
                per_example = loss_fn(_shaped(y, prediction, task), prediction)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss, y, prediction
        loss, y, prediction = strategy.run(step, args=next(iterator))
        for loss_i, y_i, p_i in zip(strategy.experimental_local_results(loss),
                                    strategy.experimental_local_results(y),
                                    strategy.experimental_local_results(prediction)):
            train_sums.update(_shaped(y_i, p_i, task), p_i, loss_i, 1)

    @tf.function(reduce_retracing=True)
    def eval_step(x, y):
        prediction = model(x, training=False)
        y = _shaped(y, prediction, task)
        per_example = loss_fn(y, prediction)
        eval_sums.update(y, prediction, tf.reduce_sum(per_example), tf.size(per_example))

    # checkpoints: every worker restores the chief's; the chief saves there, others to a temp dir
    epoch_done = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_done)
    scratch = Path(tempfile.mkdtemp(prefix=f"conveyor-train-worker{cluster.worker_index}-"))
    write_dir = checkpoint_dir if cluster.is_chief else scratch / "checkpoints"
    manager = tf.train.CheckpointManager(checkpoint, str(write_dir), max_to_keep=1)
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    first_epoch = int(epoch_done.numpy())
    writers = {}
    if cluster.is_chief:
        writers = {(d, kind): tf.summary.create_file_writer(f"{d.rstrip('/')}/{kind}")
                   for d in log_dirs for kind in ("train", "validation")}

    plateau = Plateau(hp.early_stopping_patience if eval_ds is not None else 0,
                      hp.learning_rate, hp.learning_rate / 32)
    if first_epoch:  # the learning rate as it was when the checkpoint was written
        plateau.learning_rate = float(optimizer.learning_rate.numpy())
    history: dict[str, list[float]] = {}
    best_loss, best_epoch, best_weights = math.inf, None, None
    epoch_seconds: list[float] = []
    steady_steps, steady_seconds = 0, 0.0
    iterator = iter(train_data)
    print(f"train: {cluster.describe()}, {replicas} replica(s), global batch {global_batch}, "
          f"{steps_per_epoch} steps per epoch, from epoch {first_epoch + 1}", flush=True)
    try:
        for epoch in range(first_epoch, hp.epochs):
            began = time.monotonic()
            train_sums.reset()
            first_done = None
            for s in range(steps_per_epoch):
                train_step(iterator)
                if s == 0:
                    train_sums.loss.numpy()  # wait for the first (tracing) step
                    first_done = time.monotonic()
            train_sums.loss.numpy()
            if first_done is not None and steps_per_epoch > 1:
                steady_steps += steps_per_epoch - 1
                steady_seconds += time.monotonic() - first_done
            train_sums.all_reduce()
            logs = train_sums.results(steps=steps_per_epoch)
            if eval_ds is not None:
                eval_sums.reset()
                for x, y in eval_ds:
                    eval_step(x, y)
                eval_sums.all_reduce()
                logs.update(eval_sums.results("val_"))
            logs["learning_rate"] = plateau.learning_rate
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            epoch_seconds.append(time.monotonic() - began)
            print(f"epoch {epoch + 1}/{hp.epochs} " + " ".join(
                f"{k}={v:.4g}" for k, v in logs.items()), flush=True)
            _check_finite(history, fitted, first_epoch)
            for (d, kind), writer in writers.items():
                with writer.as_default(step=epoch):
                    for key, value in logs.items():
                        if kind == "validation" and key.startswith("val_"):
                            tf.summary.scalar(f"epoch_{key[4:]}", value)
                        elif kind == "train" and not key.startswith("val_"):
                            tf.summary.scalar(f"epoch_{key}", value)
                    writer.flush()
            val_loss = logs.get("val_loss")
            if val_loss is not None and val_loss < best_loss:
                best_loss, best_epoch, best_weights = val_loss, epoch, model.get_weights()
            stop = plateau.update(epoch, val_loss) if val_loss is not None else False
            if plateau.learning_rate != float(optimizer.learning_rate.numpy()):
                optimizer.learning_rate.assign(plateau.learning_rate)
            epoch_done.assign(epoch + 1)
            manager.save()
            if stop:
                break
        for writer in writers.values():
            writer.close()
        if best_weights is not None:
            model.set_weights(best_weights)
        if cluster.is_chief and (fitted.label_stats or {}).get("transform") == "log":
            fitted.label_stats["smearing"] = _smearing(model, dataset, train_split, fitted)
        # every worker exports (saving may run collectives); only the chief's is kept
        export(model, fitted, model_path if cluster.is_chief else scratch / "model",
               transform_path)
        # a barrier: no worker leaves (the chief hosts the coordination service) before all
        # have exported
        _Summed(strategy, []).all_reduce()
        if cluster.is_chief:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    metrics = {k: float(v[-1] if best_epoch is None else v[best_epoch - first_epoch])
               for k, v in history.items() if v and k != "learning_rate"}
    metrics["epochs_run"] = float(len(epoch_seconds))
    metrics["workers"] = float(cluster.num_workers)
    if best_epoch is not None:
        metrics["best_epoch"] = float(best_epoch + 1)
    examples = len(epoch_seconds) * steps_per_epoch * global_batch
    return TrainResult(
        model=model, metrics=metrics, first_epoch=first_epoch, epochs_run=len(epoch_seconds),
        steps_per_epoch=steps_per_epoch,
        examples_per_second=examples / sum(epoch_seconds) if epoch_seconds else 0.0,
        steady_examples_per_second=(steady_steps * global_batch / steady_seconds
                                    if steady_seconds > 0 else 0.0),
        seconds=time.monotonic() - start, best_epoch=best_epoch, hyperparameters=hp,
        cluster=cluster, global_batch_size=global_batch)


def _smearing(model: keras.Model, dataset: Dataset, split: str, fitted: Fitted,
              rows: int = 50_000) -> float:
    """Duan's smearing factor, mean(exp(residual)) on the log scale over (up to `rows`) train
    rows: exp of a predicted mean log is the median, not the mean, of the label; serving
    multiplies by this so predictions are unbiased in label units (what RMSE judges)."""
    import numpy as np

    from conveyor.train.data import chunks

    scale = fitted.label_stats
    total, seen = 0.0, 0
    for x, y in chunks(dataset, split, fitted, 8192):
        z = model({k: tf.constant(v) for k, v in x.items()}, training=False).numpy().reshape(-1)
        residual = (y.astype(np.float64) - z) * (scale["std"] or 1.0)  # log units
        total += float(np.exp(np.clip(residual, -30, 30)).sum())
        seen += len(y)
        if seen >= rows:
            break
    factor = total / seen if seen else 1.0
    return float(factor) if math.isfinite(factor) and factor > 0 else 1.0


def _check_finite(history: dict[str, list], fitted: Fitted, first_epoch: int = 0) -> None:
    """A NaN or infinite loss means the model learned nothing usable: say why, export nothing.
    (`first_epoch`: the epoch `history` starts at, after a resume.)"""
    for key in ("loss", "val_loss"):
        values = history.get(key) or []
        bad = [i + first_epoch for i, v in enumerate(values) if not math.isfinite(v)]
        if not bad:
            continue
        causes = []
        scale = fitted.label_stats
        if scale and max(abs(scale.get("max", 0.0)), abs(scale.get("min", 0.0))) > 1e15:
            causes.append(f"the label {fitted.spec.label!r} reaches {scale['max']:.3g}: rescale "
                          "it (e.g. divide by a power of ten) or set label_transform: log")
        for name, f in fitted.features.items():
            if f["kind"] == "numeric" and f["transform"] in ("none", "minmax") and \
                    max(abs(f["min"]), abs(f["max"])) > 1e6:
                causes.append(f"feature {name!r} reaches {max(abs(f['min']), abs(f['max'])):.3g} "
                              f"with transform {f['transform']}: use zscore or log")
        if not causes:
            causes.append("a learning_rate too high for this data (try 10x lower)")
        raise TrainingError(
            f"train: the {'training' if key == 'loss' else 'eval'} loss became "
            f"{values[bad[0] - first_epoch]} at epoch {bad[0] + 1}; stopped, nothing "
            "exported. Likely cause: " + "; ".join(causes))


def serving_function(model: keras.Model, fitted: Fitted):
    """The `serving_default` function: raw features [None] in (named by model input), named
    outputs out; a regression output is mapped back to label units."""
    spec = {f["input"]: tf.TensorSpec([None], input_dtype(f), name=f["input"])
            for f in fitted.features.values()}
    task = fitted.spec.task
    classes = [str(c) for c in fitted.label_classes or []]
    scale = fitted.label_stats or {}

    @tf.function(input_signature=[spec])
    def serve(features):
        prediction = model(features, training=False)
        if task == "binary":
            probability = tf.reshape(prediction, [-1])
            return {"probability": probability,
                    "class": tf.cast(probability >= 0.5, tf.int64),
                    "class_label": tf.gather(tf.constant(classes),
                                             tf.cast(probability >= 0.5, tf.int64))}
        if task == "multiclass":
            class_id = tf.argmax(prediction, axis=-1)
            return {"probabilities": prediction, "class_id": class_id,
                    "class_label": tf.gather(tf.constant(classes), class_id)}
        value = tf.reshape(prediction, [-1]) * scale.get("std", 1.0) + scale.get("mean", 0.0)
        if scale.get("transform") == "log":  # log1p -> label units, unbiased (smearing)
            value = tf.math.exp(value) * scale.get("smearing", 1.0) - 1.0
        return {"value": value}

    return serve


def export(model: keras.Model, fitted: Fitted, model_path: str | Path,
           transform_path: str | Path) -> None:
    """Write the SavedModel, then its extra files; a failure leaves no partial model."""
    model_path = Path(model_path)
    staging = model_path.with_name(model_path.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serving_function(model, fitted))
    archive.write_out(str(staging), verbose=False)
    extra = staging / EXTRA
    extra.mkdir(exist_ok=True)
    fitted.write(extra)  # transform.json as trained with (a log label's smearing factor added)
    shutil.copy(Path(transform_path) / SPEC_FILE, extra / SPEC_FILE)
    if fitted.label_classes:
        (extra / "labels.txt").write_text("".join(f"{c}\n" for c in fitted.label_classes))
    if model_path.exists():
        shutil.rmtree(model_path)
    staging.rename(model_path)
