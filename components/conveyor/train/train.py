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
- Export (`export`): a SavedModel whose `serving_default` signature takes the raw features as
  named inputs of shape [None] and returns named outputs (binary: probability and class;
  multiclass: probabilities, class_id and class_label; regression: value), with `transform.json`,
  `feature_spec.yaml` and `labels.txt` in its `assets.extra/`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from conveyor.errors import InputError, TrainingError  # noqa: E402
from conveyor.io.dataset import Dataset  # noqa: E402
from conveyor.train.data import tf_dataset  # noqa: E402
from conveyor.train.model import Hyperparameters, build_model  # noqa: E402
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


def train(dataset_path: str | Path, transform_path: str | Path, model_path: str | Path, *,
          hparams: dict[str, Any] | None = None, tensorboard_path: str | Path | None = None,
          log_dir_uri: str | None = None, checkpoint_dir: str | Path | None = None,
          module_file: str | None = None, train_split: str = "train",
          eval_split: str = "eval") -> TrainResult:
    """Train on `train_split`, validate on `eval_split` (if present), export to `model_path`."""
    start = time.monotonic()
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
    if hp.steps:
        steps_per_epoch = max(1, math.ceil(hp.steps / hp.epochs))
    else:
        steps_per_epoch = max(1, rows // hp.batch_size)
    train_ds = tf_dataset(dataset, train_split, fitted, hp.batch_size,
                          shuffle_buffer=hp.shuffle_buffer, seed=hp.seed, repeat=True)
    eval_ds, eval_steps = None, None
    if eval_split in dataset.splits:
        eval_ds = tf_dataset(dataset, eval_split, fitted, hp.batch_size)
        labelled = sum(b.num_rows - b.column(0).null_count for b in dataset.iter_batches(
            eval_split, columns=[fitted.spec.label]))
        eval_steps = math.ceil(labelled / hp.batch_size) if labelled else None
        eval_ds = eval_ds if labelled else None

    progress = _Progress()
    callbacks: list = [progress, keras.callbacks.TerminateOnNaN()]
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else Path(f"{model_path}.checkpoints")
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


def _check_finite(history: dict[str, list], fitted: Fitted) -> None:
    """A NaN or infinite loss means the model learned nothing usable: say why, export nothing."""
    for key in ("loss", "val_loss"):
        values = history.get(key) or []
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
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
            f"{values[bad[0]]} at epoch {bad[0] + 1}; stopped, nothing exported. Likely cause: "
            + "; ".join(causes))


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
