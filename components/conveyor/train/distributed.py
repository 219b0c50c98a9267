"""Training on several workers: MultiWorkerMirroredStrategy in a custom loop.

`model.fit` fails under that strategy in Keras 3 (keras-team/keras#20585), so this loop keeps
by hand what `model.fit` gives one worker: per-epoch validation loss and metrics (all-reduced over
the workers' validation rows), TensorBoard scalars, and per-epoch `tf.train.Checkpoint`s in
`checkpoint_dir` (the chief's; other workers save to a temporary folder, as TensorFlow requires
every worker to save) from which a restarted cluster resumes. What to do after each epoch (stop
early, keep the best weights, halve the learning rate, a NaN loss as `TrainingError`) is the
same `conveyor.train.epochs.EpochPolicy` as on one worker. Each worker reads its own part of the
train split (`conveyor.train.data.shard_parts`), and of it trains on the rows the holdout keeps
and validates on those it holds out: the same rule on every worker, so together they validate on
the rows one worker would, never on the eval split; the global batch is `batch_size` x replicas, and
every worker runs the same steps per epoch. Only the chief writes the model, TensorBoard logs
and removes the checkpoints; others export to a temporary folder they delete.
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

import keras
import numpy as np
import tensorflow as tf

from conveyor.errors import EmptyDataError
from conveyor.io.dataset import Dataset
from conveyor.train import cluster as clusters
from conveyor.train.data import Validation, shard_rows, tf_dataset
from conveyor.train.epochs import EpochPolicy, divergence_causes, epoch_metrics
from conveyor.train.export import export, smearing
from conveyor.train.hyperparameters import Hyperparameters
from conveyor.train.model import build_model
from conveyor.train.result import TrainResult
from conveyor.transform.fit import Fitted


def multi_worker_strategy(cluster: clusters.Cluster) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy over the cluster's chief and workers (and, on each worker,
    its local GPUs). Call it before any other TensorFlow op of the process: the collective
    runtime is configured when the strategy is made. `TF_CONFIG` is (re)written with the
    training tasks alone (from Vertex AI's `CLUSTER_SPEC` when that was the source)."""
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {kind: list(addresses) for kind, addresses in cluster.spec.items()},
        "task": {"type": cluster.task_type, "index": cluster.task_index}})
    return tf.distribute.MultiWorkerMirroredStrategy()


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
        self._reduce: Any = None  # the compiled tf.function, built on first use

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


def _steps_per_epoch(hp: Hyperparameters, rows: int, global_batch: int) -> int:
    """Training rows // global batch (or `steps / epochs`): the same on every worker."""
    if hp.steps:
        return max(1, math.ceil(hp.steps / hp.epochs))
    return max(1, rows // global_batch)


def _check_shards(dataset: Dataset, split: str, cluster: clusters.Cluster) -> None:
    """Every worker must have rows to read; decided alike on every worker, from the Parquet
    footers, so none waits for another."""
    rows = dataset.split(split).rows
    files = list(dataset.files(split))
    empty = [i for i in range(cluster.num_workers) if not shard_rows(files, i, cluster.num_workers)]
    if empty:
        raise EmptyDataError(
            f"train: split {split!r} ({rows} rows in {len(files)} file(s)) leaves worker(s) "
            f"{empty} of {cluster.num_workers} without rows; use fewer workers or more data")


def _inputs(strategy: tf.distribute.Strategy, cluster: clusters.Cluster, dataset: Dataset,
            fitted: Fitted, hp: Hyperparameters, global_batch: int, validation: Validation):
    """(the distributed train input, this worker's validation shard or None): each worker
    reads its own part of the train split, and keeps from it the rows to train on, or those
    held out for validation: the same holdout on every worker."""
    shard = (cluster.worker_index, cluster.num_workers)
    train_split, holdout = validation.split, validation.holdout

    def train_input(context: tf.distribute.InputContext) -> tf.data.Dataset:
        if (context.input_pipeline_id, context.num_input_pipelines) != shard:
            raise RuntimeError(f"train: the strategy numbers this worker's input "
                               f"{context.input_pipeline_id} of {context.num_input_pipelines}, "
                               f"the cluster {shard[0]} of {shard[1]}")
        return tf_dataset(dataset, train_split, fitted,
                          context.get_per_replica_batch_size(global_batch),
                          shuffle_buffer=hp.shuffle_buffer, seed=hp.seed + shard[0],
                          repeat=True, shard=shard, holdout=holdout)

    train_data = strategy.distribute_datasets_from_function(train_input)
    eval_ds = None
    if holdout is not None and validation.labelled:  # all workers' count, alike on each
        eval_ds = tf_dataset(dataset, train_split, fitted, hp.batch_size, shard=shard,
                             every=validation.every, holdout=holdout, held_out=True)
    return train_data, eval_ds


@dataclasses.dataclass
class _Loop:
    """The model, its optimizer and the compiled train and eval steps over the strategy, with
    the sums they add to."""

    strategy: tf.distribute.Strategy
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    task: str
    global_batch: int
    steps_per_epoch: int
    eval_ds: tf.data.Dataset | None

    def __post_init__(self):
        self.loss_fn, metrics = _loss_and_metrics(self.task)
        self.train_sums = _Summed(self.strategy, metrics)
        self.eval_sums = _Summed(self.strategy, _loss_and_metrics(self.task)[1])
        self.train_step = self._train_step()
        self.eval_step = self._eval_step()

    def _train_step(self):
        strategy, model, optimizer, task = self.strategy, self.model, self.optimizer, self.task
        loss_fn, train_sums, global_batch = self.loss_fn, self.train_sums, self.global_batch

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
        return train_step

    def _eval_step(self):
        model, task, loss_fn, eval_sums = self.model, self.task, self.loss_fn, self.eval_sums

        @tf.function(reduce_retracing=True)
        def eval_step(x, y):
            prediction = model(x, training=False)
            y = _shaped(y, prediction, task)
            per_example = loss_fn(y, prediction)
            eval_sums.update(y, prediction, tf.reduce_sum(per_example), tf.size(per_example))
        return eval_step

    def epoch(self, iterator) -> tuple[dict[str, float], int, float]:
        """Train one epoch, then validate: (the all-reduced logs, steady steps, their seconds).
        Steady steps are those after the epoch's first (which traces or restarts the input)."""
        self.train_sums.reset()
        first_done = None
        steady_steps, steady_seconds = 0, 0.0
        for s in range(self.steps_per_epoch):
            self.train_step(iterator)
            if s == 0:
                self.train_sums.loss.numpy()  # wait for the first (tracing) step
                first_done = time.monotonic()
        self.train_sums.loss.numpy()
        if first_done is not None and self.steps_per_epoch > 1:
            steady_steps += self.steps_per_epoch - 1
            steady_seconds += time.monotonic() - first_done
        self.train_sums.all_reduce()
        logs = self.train_sums.results(steps=self.steps_per_epoch)
        if self.eval_ds is not None:
            self.eval_sums.reset()
            for x, y in self.eval_ds:
                self.eval_step(x, y)
            self.eval_sums.all_reduce()
            logs.update(self.eval_sums.results("val_"))
        return logs, steady_steps, steady_seconds


class _Checkpoints:
    """Per-epoch checkpoints: every worker restores the chief's (in `checkpoint_dir`); the chief
    saves there, the others to `scratch`, as TensorFlow wants every worker to save."""

    def __init__(self, loop: _Loop, cluster: clusters.Cluster, checkpoint_dir: Path,
                 scratch: Path):
        self.epoch_done = tf.Variable(0, dtype=tf.int64, trainable=False)
        checkpoint = tf.train.Checkpoint(model=loop.model, optimizer=loop.optimizer,
                                         epoch=self.epoch_done)
        write_dir = checkpoint_dir if cluster.is_chief else scratch / "checkpoints"
        self.manager = tf.train.CheckpointManager(checkpoint, str(write_dir), max_to_keep=1)
        latest = tf.train.latest_checkpoint(str(checkpoint_dir))
        if latest:
            checkpoint.restore(latest).assert_existing_objects_matched()
        self.first_epoch = int(self.epoch_done.numpy())

    def save(self, epoch: int) -> None:
        """After `epoch` (from 0) is done."""
        self.epoch_done.assign(epoch + 1)
        self.manager.save()


class _Scalars:
    """The chief's TensorBoard logs: `epoch_<metric>` scalars in `<log_dir>/train` and
    `<log_dir>/validation`, as Keras' callback names them."""

    def __init__(self, log_dirs: list[str], is_chief: bool):
        self.writers = {}
        if is_chief:
            self.writers = {(d, kind): tf.summary.create_file_writer(f"{d.rstrip('/')}/{kind}")
                            for d in log_dirs for kind in ("train", "validation")}

    def write(self, epoch: int, logs: dict[str, float]) -> None:
        for (_log_dir, kind), writer in self.writers.items():
            with writer.as_default(step=epoch):
                for key, value in logs.items():
                    if kind == "validation" and key.startswith("val_"):
                        tf.summary.scalar(f"epoch_{key[4:]}", value)
                    elif kind == "train" and not key.startswith("val_"):
                        tf.summary.scalar(f"epoch_{key}", value)
                writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


@dataclasses.dataclass
class _Epochs:
    """What the epochs of this run left: their logs, timings and the best weights."""

    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    seconds: list[float] = dataclasses.field(default_factory=list)
    steady_steps: int = 0
    steady_seconds: float = 0.0
    best_weights: list | None = None


def _run_epochs(loop: _Loop, train_data, policy: EpochPolicy, checkpoints: _Checkpoints,
                scalars: _Scalars, epochs: int) -> _Epochs:
    """Train from the checkpoint's epoch to `epochs`, or until the policy stops it."""
    done = _Epochs()
    iterator = iter(train_data)
    for epoch in range(checkpoints.first_epoch, epochs):
        began = time.monotonic()
        logs, steady_steps, steady_seconds = loop.epoch(iterator)
        done.steady_steps += steady_steps
        done.steady_seconds += steady_seconds
        logs["learning_rate"] = policy.learning_rate
        for key, value in logs.items():
            done.history.setdefault(key, []).append(value)
        done.seconds.append(time.monotonic() - began)
        print(f"epoch {epoch + 1}/{epochs} " + " ".join(
            f"{k}={v:.4g}" for k, v in logs.items()), flush=True)
        decision = policy.end_epoch(epoch, logs)  # a NaN loss raises, on every worker alike
        scalars.write(epoch, logs)
        if decision.new_best:
            done.best_weights = loop.model.get_weights()
        if decision.learning_rate != float(loop.optimizer.learning_rate.numpy()):
            loop.optimizer.learning_rate.assign(decision.learning_rate)
        checkpoints.save(epoch)
        if decision.stop:
            break
    return done


def train_distributed(strategy: tf.distribute.Strategy, cluster: clusters.Cluster,
                      dataset: Dataset, fitted: Fitted, hp: Hyperparameters, *,
                      module_file: str | None, model_path: Path, transform_path: str | Path,
                      log_dirs: list[str], checkpoint_dir: Path, validation: Validation,
                      start: float) -> TrainResult:
    """The custom training loop under MultiWorkerMirroredStrategy (see the module)."""
    replicas = strategy.num_replicas_in_sync
    global_batch = hp.batch_size * replicas
    train_split = validation.split
    steps_per_epoch = _steps_per_epoch(hp, validation.training_rows, global_batch)
    _check_shards(dataset, train_split, cluster)
    train_data, eval_ds = _inputs(strategy, cluster, dataset, fitted, hp, global_batch,
                                  validation)
    with strategy.scope():
        model = build_model(fitted, hp, module_file)
        optimizer = keras.optimizers.Adam(hp.learning_rate)
        optimizer.build(model.trainable_variables)
    loop = _Loop(strategy, model, optimizer, fitted.spec.task, global_batch, steps_per_epoch,
                 eval_ds)
    scratch = Path(tempfile.mkdtemp(prefix=f"conveyor-train-worker{cluster.worker_index}-"))
    checkpoints = _Checkpoints(loop, cluster, checkpoint_dir, scratch)
    first_epoch = checkpoints.first_epoch
    scalars = _Scalars(log_dirs, cluster.is_chief)
    policy = EpochPolicy(hp.early_stopping_patience if eval_ds is not None else 0,
                         hp.learning_rate, divergence_causes(fitted))
    if first_epoch:  # the learning rate as it was when the checkpoint was written
        policy.learning_rate = float(optimizer.learning_rate.numpy())
    print(f"train: {cluster.describe()}, {replicas} replica(s), global batch {global_batch}, "
          f"{steps_per_epoch} steps per epoch, from epoch {first_epoch + 1}", flush=True)
    try:
        done = _run_epochs(loop, train_data, policy, checkpoints, scalars, hp.epochs)
        scalars.close()
        if done.best_weights is not None:
            model.set_weights(done.best_weights)
        _export(strategy, cluster, model, dataset, fitted, model_path, transform_path,
                checkpoint_dir, scratch, train_split)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    best_epoch = policy.best_epoch
    metrics = epoch_metrics(done.history, best_epoch, first_epoch)
    metrics["epochs_run"] = float(len(done.seconds))
    metrics["workers"] = float(cluster.num_workers)
    if best_epoch is not None:
        metrics["best_epoch"] = float(best_epoch + 1)
    examples = len(done.seconds) * steps_per_epoch * global_batch
    return TrainResult(
        model=model, metrics=metrics, first_epoch=first_epoch, epochs_run=len(done.seconds),
        steps_per_epoch=steps_per_epoch,
        examples_per_second=examples / sum(done.seconds) if done.seconds else 0.0,
        steady_examples_per_second=(done.steady_steps * global_batch / done.steady_seconds
                                    if done.steady_seconds > 0 else 0.0),
        seconds=time.monotonic() - start, best_epoch=best_epoch, hyperparameters=hp,
        cluster=cluster, global_batch_size=global_batch, history=done.history)


def _export(strategy: tf.distribute.Strategy, cluster: clusters.Cluster, model: keras.Model,
            dataset: Dataset, fitted: Fitted, model_path: Path, transform_path: str | Path,
            checkpoint_dir: Path, scratch: Path, train_split: str) -> None:
    """Every worker exports (saving may run collectives); only the chief's is kept, and the
    chief then removes the checkpoints."""
    label_stats = fitted.label_stats
    if cluster.is_chief and label_stats is not None and label_stats.get("transform") == "log":
        label_stats["smearing"] = smearing(model, dataset, train_split, fitted)
    export(model, fitted, model_path if cluster.is_chief else scratch / "model", transform_path)
    # a barrier: no worker leaves (the chief hosts the coordination service) before all have
    # exported
    _Summed(strategy, []).all_reduce()
    if cluster.is_chief:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
