"""Keras preprocessing built from a fitted transform: raw features in, model features out.

Raw inputs are one tensor per feature of shape [None] (TensorFlow Serving's row format), named
by the feature's model input (`Fitted.input_of`): float32 for numeric features (NaN means
missing), string for string categorical features, int64 for integer and bool categorical
features (bool: 1 / 0; missing: `conveyor.model.inputs.MISSING_INT`), and ISO strings for
datetime features ("2024-05-01", "2024-05-01 12:34:56"; "" means missing), whose parts are
computed in the graph. A numeric feature may also be a category (its integer value looked up in
a vocabulary) and a position on a cycle (sin, cos); date parts too.
Every layer's state (means, boundaries, vocabularies) comes from
`transform.json`, and the layers are part of the trained and exported model, so training and
serving compute features identically.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from conveyor.model.inputs import MISSING_INT
from conveyor.transform.features import CYCLES
from conveyor.transform.fit import Fitted


def input_dtype(feature: dict[str, Any]) -> tf.DType:
    if feature["kind"] == "numeric":
        return tf.float32
    if feature["kind"] == "datetime":
        return tf.string
    return tf.int64 if feature["dtype"] in ("int64", "bool") else tf.string


def raw_inputs(fitted: Fitted) -> dict[str, keras.KerasTensor]:
    """One Keras input per feature, keyed and named by its model input name."""
    return {f["input"]: keras.Input(shape=(), dtype=input_dtype(f), name=f["input"])
            for f in fitted.features.values()}


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
            if "log_mean" in s:  # transforms fitted before logged values were z-scored lack it
                x = (x - s["log_mean"]) / (s["log_std"] or 1.0)
        return tf.expand_dims(x, -1)

    def get_config(self):
        return {**super().get_config(), "spec": self.spec}


def categorical_index(name: str, f: dict[str, Any], raw) -> tuple[Any, int]:
    """An integer index per row and the number of distinct indices. A vocabulary's first
    `oov_buckets` indices are its out-of-vocabulary ones."""
    if f["dtype"] in ("int64", "bool"):
        raw = keras.layers.Lambda(lambda t: tf.strings.as_string(t), name=f"{name}_as_string")(raw)
    if f["encoding"] == "hash":
        return keras.layers.Hashing(f["hash_buckets"], name=f"{name}_hash")(raw), f["hash_buckets"]
    return _lookup(name, f, raw)


def _lookup(name: str, f: dict[str, Any], words) -> tuple[Any, int]:
    lookup = keras.layers.StringLookup(vocabulary=f["vocabulary"], num_oov_indices=f["oov_buckets"],
                                       name=f"{name}_lookup")
    return lookup(words), len(f["vocabulary"]) + f["oov_buckets"]


class IntegerWords(keras.layers.Layer):
    """float32 values of an integer column [None] -> their decimal strings, as the vocabulary
    of a numeric feature that is also a category has them (NaN: MISSING_INT's, NULL's word)."""

    def call(self, x):
        finite = tf.math.is_finite(x)
        whole = tf.cast(tf.round(tf.where(finite, x, tf.zeros_like(x))), tf.int64)
        return tf.strings.as_string(tf.where(finite, whole, tf.fill(tf.shape(whole), MISSING_INT)))


class Cycle(keras.layers.Layer):
    """A value's position on a cycle of length `period` as (sin, cos): [None] or [None, 1] ->
    [None, 2]. `index`: the value is a date part's index (1-based, 0 missing: (0, 0))."""

    def __init__(self, period: float, index: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.period = float(period)
        self.index = index

    def call(self, x):
        x = tf.reshape(tf.cast(x, tf.float32), [-1, 1])
        present = tf.ones_like(x)
        if self.index:
            present = tf.cast(x > 0, tf.float32)
            x = x - 1.0
        angle = x * (2.0 * math.pi / self.period)
        return tf.concat([tf.sin(angle), tf.cos(angle)], axis=-1) * present

    def get_config(self):
        return {**super().get_config(), "period": self.period, "index": self.index}


class DateParts(keras.layers.Layer):
    """ISO date or timestamp strings [None] -> (days since 1970 z-scored [None, 1], month
    index, weekday index, hour index [None]); a missing or malformed value gets 0 days (the
    training mean after z-scoring) and index 0 in each category."""

    def __init__(self, spec: dict[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.spec = spec

    def call(self, x):
        s = self.spec
        ok = tf.strings.regex_full_match(x, r"[0-9]{4}-[0-9]{2}-[0-9]{2}([ T].*)?")
        x = tf.where(ok, x, tf.fill(tf.shape(x), "1970-01-01 00"))

        def number(start, length):
            return tf.strings.to_number(tf.strings.substr(x, start, length), tf.int64)

        y, m, d = number(0, 4), number(5, 2), number(8, 2)
        ok = ok & (m >= 1) & (m <= 12) & (d >= 1) & (d <= 31)
        days = days_from_civil(y, tf.clip_by_value(m, 1, 12), d)
        hour = _hour(x)
        day_value = tf.cast(days, tf.float32)
        z = (day_value - s["days_mean"]) / (s["days_std"] or 1.0)
        z = tf.where(ok, z, tf.zeros_like(z))
        missing = tf.zeros_like(y)
        month = tf.where(ok, m, missing)  # 1..12, 0 missing
        weekday = tf.where(ok, tf.math.floormod(days + 3, 7) + 1, missing)  # 1 Monday .. 7
        hour = tf.where(ok & (hour >= 0) & (hour <= 23), hour + 1, missing)  # 1..24
        return tf.expand_dims(z, -1), month, weekday, hour

    def get_config(self):
        return {**super().get_config(), "spec": self.spec}


def _hour(x):
    """The hour of "YYYY-MM-DD HH..." strings; -1 where there is none."""
    has = tf.strings.regex_full_match(x, r".{10}[ T][0-9]{2}.*")
    safe = tf.where(has, x, tf.fill(tf.shape(x), "1970-01-01 00"))
    return tf.where(has, tf.strings.to_number(tf.strings.substr(safe, 11, 2), tf.int64),
                    -tf.ones(tf.shape(x), tf.int64))


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm), in int64."""
    y = y - tf.cast(m <= 2, tf.int64)
    era = tf.math.floordiv(y, 400)
    yoe = y - era * 400
    mp = tf.math.floormod(m + 9, 12)  # March = 0
    doy = tf.math.floordiv(153 * mp + 2, 5) + d - 1
    doe = yoe * 365 + tf.math.floordiv(yoe, 4) - tf.math.floordiv(yoe, 100) + doy
    return era * 146097 + doe - 719468


DATE_CARDINALITY = {"month": 13, "weekday": 8, "hour": 25}
CATEGORY = "::category"  # key suffix of the category of a numeric feature (also_categorical)
CYCLE = "::cycle"  # key suffix of a feature's (sin, cos) on its cycle


def preprocess(fitted: Fitted, inputs: dict[str, Any]) -> dict[str, Any]:
    """Model features, keyed by column name (datetime parts by `<column>_<part>`, a numeric
    feature's category by `<column>::category`, sin/cos on a cycle by `<key>::cycle`):
    numeric -> float [None, 1] ([None, 2] for sin/cos); bucketized and categorical -> int index
    [None] with its cardinality in `cardinality`, and, for a vocabulary, its number of
    out-of-vocabulary indices (the first ones) in `oov`; crosses -> hashed int index [None].
    `inputs` is keyed by model input name (`raw_inputs`)."""
    numeric: dict[str, Any] = {}
    indices: dict[str, Any] = {}
    cardinality: dict[str, int] = {}
    oov: dict[str, int] = {}
    for name, f in fitted.features.items():
        raw = inputs[f["input"]]
        layer = f["input"]  # layer names must be valid graph names too
        if f["kind"] == "numeric":
            _numeric(name, f, raw, numeric, indices, cardinality, oov)
        elif f["kind"] == "datetime":
            z, month, weekday, hour = DateParts(f, name=f"{layer}_parts")(raw)
            parts = {"month": month, "weekday": weekday, "hour": hour}
            for part in f["parts"]:
                if part == "days":
                    numeric[f"{name}_days"] = z
                    continue
                indices[f"{name}_{part}"] = parts[part]
                cardinality[f"{name}_{part}"] = DATE_CARDINALITY[part]
                if part in f.get("cyclic", ()):
                    numeric[f"{name}_{part}{CYCLE}"] = Cycle(
                        CYCLES[part], index=True, name=f"{layer}_{part}_cycle")(parts[part])
        else:
            indices[name], cardinality[name] = categorical_index(layer, f, raw)
            if f["encoding"] == "vocabulary":
                oov[name] = f["oov_buckets"]
    crosses = _crosses(fitted, inputs, cardinality)
    return {"numeric": numeric, "indices": indices, "crosses": crosses,
            "cardinality": cardinality, "oov": oov}


def _numeric(name: str, f: dict[str, Any], raw, numeric, indices, cardinality, oov) -> None:
    layer = f["input"]
    if f["transform"] == "bucketize":
        x = Numeric({**f, "transform": "none"}, name=f"{layer}_impute")(raw)
        b = keras.layers.Discretization(bin_boundaries=f["boundaries"],
                                        name=f"{layer}_buckets")(x)
        indices[name] = keras.layers.Reshape(())(b)
        cardinality[name] = len(f["boundaries"]) + 1
    else:
        numeric[name] = Numeric(f, name=f"{layer}_{f['transform']}")(raw)
    if f.get("categories"):
        words = IntegerWords(name=f"{layer}_as_words")(raw)
        key = name + CATEGORY
        indices[key], cardinality[key] = _lookup(f"{layer}_category", f["categories"], words)
        oov[key] = f["categories"]["oov_buckets"]
    if f.get("period"):
        imputed = Numeric({**f, "transform": "none"}, name=f"{layer}_imputed")(raw)
        numeric[name + CYCLE] = Cycle(f["period"], name=f"{layer}_cycle")(imputed)


def _crosses(fitted: Fitted, inputs: dict[str, Any], cardinality: dict[str, int]
             ) -> dict[str, Any]:
    crosses = {}
    for cross in fitted.spec.crosses:
        crossed = []
        for n in cross.features:
            raw = inputs[fitted.features[n]["input"]]
            if fitted.features[n]["dtype"] in ("int64", "bool"):
                raw = keras.layers.Lambda(lambda t: tf.strings.as_string(t))(raw)
            crossed.append(raw)
        key = "_x_".join(cross.features)
        layer = "_x_".join(fitted.features[n]["input"] for n in cross.features)
        crosses[key] = keras.layers.HashedCrossing(cross.buckets, name=f"{layer}_cross")(
            tuple(crossed))
        cardinality[key] = cross.buckets
    return crosses
