"""Keras preprocessing built from a fitted transform: raw features in, model features out.

Raw inputs are one tensor per feature of shape [None] (TensorFlow Serving's row format): float32
for numeric features (NaN means missing), string for string categorical features, int64 for
integer categorical features. Every layer's state (means, boundaries, vocabularies) comes from
`transform.json`, and the layers are part of the trained and exported model, so training and
serving compute features identically.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from conveyor.transform.fit import Fitted

MISSING_INT = -(2**62)  # NULL in an integer categorical column (out of every vocabulary)


def input_dtype(feature: dict[str, Any]) -> tf.DType:
    if feature["kind"] == "numeric":
        return tf.float32
    return tf.int64 if feature["dtype"] == "int64" else tf.string


def raw_inputs(fitted: Fitted) -> dict[str, keras.KerasTensor]:
    return {name: keras.Input(shape=(), dtype=input_dtype(f), name=name)
            for name, f in fitted.features.items()}


class Numeric(keras.layers.Layer):
    """Impute NaN, then zscore / minmax / log / none; shape [None] -> [None, 1]."""

    def __init__(self, spec: dict[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.spec = spec

    def call(self, x):
        s = self.spec
        x = tf.cast(x, tf.float32)
        x = tf.where(tf.math.is_finite(x), x, tf.fill(tf.shape(x), float(s["impute"])))
        if s["transform"] == "zscore":
            x = (x - s["mean"]) / (s["std"] or 1.0)
        elif s["transform"] == "minmax":
            width = (s["max"] - s["min"]) or 1.0
            x = (x - s["min"]) / width
        elif s["transform"] == "log":
            x = tf.math.log1p(tf.maximum(x - s["min"], 0.0))
        return tf.expand_dims(x, -1)

    def get_config(self):
        return {**super().get_config(), "spec": self.spec}


def categorical_index(name: str, f: dict[str, Any], raw) -> tuple[Any, int]:
    """An integer index per row and the number of distinct indices."""
    if f["dtype"] == "int64":
        raw = keras.layers.Lambda(lambda t: tf.strings.as_string(t), name=f"{name}_as_string")(raw)
    if f["encoding"] == "hash":
        return keras.layers.Hashing(f["hash_buckets"], name=f"{name}_hash")(raw), f["hash_buckets"]
    lookup = keras.layers.StringLookup(vocabulary=f["vocabulary"], num_oov_indices=f["oov_buckets"],
                                       name=f"{name}_lookup")
    return lookup(raw), len(f["vocabulary"]) + f["oov_buckets"]


def preprocess(fitted: Fitted, inputs: dict[str, Any]) -> dict[str, Any]:
    """Model features: numeric -> float [None, 1]; bucketized and categorical -> int index
    [None] with its cardinality in `cardinality`; crosses -> hashed int index [None]."""
    numeric, indices, cardinality = {}, {}, {}
    for name, f in fitted.features.items():
        if f["kind"] == "numeric":
            if f["transform"] == "bucketize":
                x = Numeric({**f, "transform": "none"}, name=f"{name}_impute")(inputs[name])
                b = keras.layers.Discretization(bin_boundaries=f["boundaries"],
                                                name=f"{name}_buckets")(x)
                indices[name] = keras.layers.Reshape(())(b)
                cardinality[name] = len(f["boundaries"]) + 1
            else:
                numeric[name] = Numeric(f, name=f"{name}_{f['transform']}")(inputs[name])
        else:
            indices[name], cardinality[name] = categorical_index(name, f, inputs[name])
    crosses = {}
    for cross in fitted.spec.crosses:
        parts = []
        for n in cross.features:
            raw = inputs[n]
            if fitted.features[n]["dtype"] == "int64":
                raw = keras.layers.Lambda(lambda t: tf.strings.as_string(t))(raw)
            parts.append(raw)
        key = "_x_".join(cross.features)
        crosses[key] = keras.layers.HashedCrossing(cross.buckets, name=f"{key}_cross")(tuple(parts))
        cardinality[key] = cross.buckets
    return {"numeric": numeric, "indices": indices, "crosses": crosses, "cardinality": cardinality}
