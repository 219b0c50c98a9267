"""Export a trained Keras model for serving: a SavedModel whose `serving_default` signature takes
the raw features as named inputs of shape [None] and returns named outputs (binary: probability
and class; multiclass: probabilities, class_id and class_label; regression: value), with
`transform.json`, `feature_spec.yaml` and `labels.txt` in its `assets.extra/`. A log-transformed
label gets its smearing factor (`smearing`) into the exported transform first.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from conveyor.errors import InputError, TrainingError, one_line
from conveyor.io.dataset import Dataset
from conveyor.model.decision import THRESHOLD
from conveyor.model.layout import ASSETS_EXTRA, LABELS_FILE, SPEC_FILE
from conveyor.train.data import chunks
from conveyor.train.preprocess import input_dtype
from conveyor.transform.fit import Fitted


def smearing(model: keras.Model, dataset: Dataset, split: str, fitted: Fitted,
             rows: int = 50_000) -> float:
    """Duan's smearing factor, mean(exp(residual)) on the log scale over (up to `rows`) train
    rows: exp of a predicted mean log is the median, not the mean, of the label; serving
    multiplies by this so predictions are unbiased in label units (what RMSE judges)."""
    scale = fitted.label_stats
    assert scale is not None, "a log-scaled label has its statistics (transform.fit)"
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
                    "class": tf.cast(probability >= THRESHOLD, tf.int64),
                    "class_label": tf.gather(tf.constant(classes),
                                             tf.cast(probability >= THRESHOLD, tf.int64))}
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
    """Write the SavedModel, then its extra files; a failure leaves no partial model.

    Building the serving signature depends only on the model and its inputs, so an error
    there (a TypeError about an argument, a ValueError about names) is the input's, not a
    transient one: it becomes a `TrainingError` (an InputError: not retried). Errors of the
    environment (OSError: a full disk; MemoryError) stay what they are."""
    model_path = Path(model_path)
    staging = model_path.with_name(model_path.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name="serving_default", fn=serving_function(model, fitted))
        archive.write_out(str(staging), verbose=False)
    except (InputError, OSError, MemoryError):
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as exc:  # the model's inputs or its code, not a transient
        shutil.rmtree(staging, ignore_errors=True)
        inputs = sorted(f["input"] for f in fitted.features.values())
        raise TrainingError(f"exporting the model failed ({one_line(exc)}); model inputs: "
                            f"{inputs}") from exc
    extra = staging / ASSETS_EXTRA
    extra.mkdir(exist_ok=True)
    fitted.write(extra)  # transform.json as trained with (a log label's smearing factor added)
    shutil.copy(Path(transform_path) / SPEC_FILE, extra / SPEC_FILE)
    if fitted.label_classes:
        (extra / LABELS_FILE).write_text("".join(f"{c}\n" for c in fitted.label_classes))
    if model_path.exists():
        shutil.rmtree(model_path)
    staging.rename(model_path)
