"""Models over the preprocessed features: a DNN and a wide-and-deep model for each task, or a
user's `build_model(hparams, feature_spec)` from a module file. The trained model takes the raw
features: preprocessing (`conveyor.train.preprocess`) is its first layers."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import keras

from conveyor.errors import InputError, TrainingError, one_line
from conveyor.train.hyperparameters import Hyperparameters
from conveyor.train.preprocess import preprocess, raw_inputs
from conveyor.transform.fit import Fitted
from conveyor.transform.spec import input_name  # layer names follow the input-name rules


def output_units(fitted: Fitted) -> int:
    task = fitted.spec.task
    # a multiclass label's transform always has its classes
    return len(fitted.label_classes or []) if task == "multiclass" else 1


def embedding_dim(cardinality: int, rows: int, hyperparameters: Hyperparameters) -> int:
    """`embedding_dim` when set, else from the values and the train rows: the usual
    1.6 * cardinality ** 0.56 (at most 16), and at most log2 of the rows per value (at least
    2), so a column whose values are each seen in few rows gets few weights to fit."""
    if hyperparameters.embedding_dim:
        return hyperparameters.embedding_dim
    by_rows = max(2, math.ceil(math.log2(max(rows, 1) / cardinality))) if rows > cardinality \
        else 2
    return min(16, math.ceil(1.6 * cardinality ** 0.56), by_rows)


def embedding_l2(rows: int, hyperparameters: Hyperparameters) -> float:
    """`embedding_l2` when set, else min(0.01, 1 / rows): a Gaussian prior's weight against
    a loss averaged over `rows` rows, so a value seen once is pulled toward 0 as hard as its
    row pulls it away, and one seen often hardly at all."""
    if hyperparameters.embedding_l2 >= 0:
        return hyperparameters.embedding_l2
    return min(0.01, 1.0 / max(rows, 1))


class OovDropout(keras.layers.Layer):
    """While training only: a share `rate` of in-vocabulary indices (those from `oov`, the
    number of out-of-vocabulary indices, which come first) become out-of-vocabulary (index
    modulo `oov`), so the out-of-vocabulary vector learns even when every training value is
    frequent, and a value never seen in training lands on a trained vector."""

    def __init__(self, rate: float, oov: int = 1, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.oov, self.seed = float(rate), int(oov), int(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or not self.rate:
            return x
        draw = keras.random.uniform(keras.ops.shape(x), seed=self.seed_generator)
        dropped = keras.ops.logical_and(draw < self.rate, x >= self.oov)
        return keras.ops.where(dropped, keras.ops.mod(x, self.oov), x)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "oov": self.oov, "seed": self.seed}


class Embedding(keras.layers.Embedding):
    """An embedding whose L2 penalty (`l2` * the sum of its squared weights) is added to the
    training loss only: evaluation losses (Keras' val_loss, the multi-worker loop's) and every
    reported metric stay the model's own."""

    def __init__(self, *args, l2: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.l2 = float(l2)

    def call(self, inputs, training=None):
        if training and self.l2:
            self.add_loss(self.l2 * keras.ops.sum(keras.ops.square(self.embeddings)))
        return super().call(inputs)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def _head(logits, fitted: Fitted):
    task = fitted.spec.task
    if task == "binary":
        return keras.layers.Activation("sigmoid", name="prediction")(logits)
    if task == "multiclass":
        return keras.layers.Activation("softmax", name="prediction")(logits)
    # regression: the standardized label; the serving signature maps it back to label units
    return keras.layers.Activation("linear", name="prediction")(logits)


def build_model(fitted: Fitted, hyperparameters: Hyperparameters,
                module_file: str | None = None) -> keras.Model:
    """raw features -> preprocessing -> (DNN | wide-and-deep | user model) -> prediction.

    Building depends only on the inputs, the spec and the hyper-parameters, so an error here is
    theirs, not a transient one: a `TrainingError` (an InputError: not retried); OSError and
    MemoryError stay what they are."""
    try:
        return _build(fitted, hyperparameters, module_file)
    except (InputError, OSError, MemoryError):
        raise
    except Exception as exc:  # the model's inputs or spec, not a transient
        raise TrainingError(f"building the model failed ({one_line(exc)}); model inputs: "
                            f"{sorted(f['input'] for f in fitted.features.values())}") from exc


def _build(fitted: Fitted, hyperparameters: Hyperparameters,
           module_file: str | None) -> keras.Model:
    inputs = raw_inputs(fitted)
    features = preprocess(fitted, inputs)
    if module_file:
        return _user_model(module_file, fitted, hyperparameters, inputs, features)
    deep = list(features["numeric"].values())
    stems = _layer_stems(fitted, [*features["indices"], *features["crosses"]])
    l2 = embedding_l2(fitted.rows, hyperparameters)
    for i, (name, index) in enumerate(features["indices"].items()):
        n = features["cardinality"][name]
        if name in features["oov"] and hyperparameters.oov_dropout:  # each its own draws
            index = OovDropout(hyperparameters.oov_dropout, features["oov"][name],
                               hyperparameters.seed + 1 + i,
                               name=f"{stems[name]}_oov_dropout")(index)
        emb = Embedding(n, embedding_dim(n, fitted.rows, hyperparameters), l2=l2,
                        name=f"{stems[name]}_embedding")(index)
        deep.append(emb)
    x = deep[0] if len(deep) == 1 else keras.layers.Concatenate(name="deep_features")(deep)
    for i, units in enumerate(hyperparameters.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        if hyperparameters.dropout:
            x = keras.layers.Dropout(hyperparameters.dropout, seed=hyperparameters.seed)(x)
    logits = keras.layers.Dense(output_units(fitted), name="deep_logits")(x)
    if hyperparameters.model == "wide_deep":
        wide = [keras.layers.CategoryEncoding(features["cardinality"][n], output_mode="one_hot",
                                              name=f"{stems[n]}_one_hot")(i)
                for n, i in {**features["indices"], **features["crosses"]}.items()]
        wide += list(features["numeric"].values())
        w = wide[0] if len(wide) == 1 else keras.layers.Concatenate(name="wide_features")(wide)
        wide_logits = keras.layers.Dense(output_units(fitted), name="wide_logits")(w)
        logits = keras.layers.Add(name="logits")([logits, wide_logits])
    return keras.Model(inputs, _head(logits, fitted), name="conveyor_model")


def _layer_stems(fitted: Fitted, keys: list[str]) -> dict[str, str]:
    """A layer-name stem for each feature key (a column, `<column>_<part>` of a date, a cross),
    distinct in any case: from the model inputs, which are distinct, so that a column named
    like another's date part (`d_month` beside date `d`) cannot clash with it."""
    stems, taken = {}, set()
    for key in keys:
        key, _, suffix = key.partition("::")  # `<column>::category` (preprocess.CATEGORY)
        column, _, part = key.rpartition("_")
        if key in fitted.features:
            base = fitted.features[key]["input"]
        elif column in fitted.features:
            base = f"{fitted.features[column]['input']}_{part}"
        else:
            base = input_name(key)
        base = f"{base}_{suffix}" if suffix else base
        stem, n = base, 1
        while stem.casefold() in taken:
            n += 1
            stem = f"{base}_{n}"
        stems[f"{key}::{suffix}" if suffix else key] = stem
        taken.add(stem.casefold())
    return stems


def _user_model(module_file: str, fitted: Fitted, hyperparameters: Hyperparameters, inputs,
                features):
    path = Path(module_file)
    try:
        spec = importlib.util.spec_from_file_location("conveyor_user_module", path)
        if spec is None or spec.loader is None:  # a name Python does not load as a module
            raise ImportError("not a Python source file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except FileNotFoundError:
        raise InputError(f"module_file: {module_file} does not exist") from None
    except Exception as exc:  # any error in the user's module is bad input
        raise InputError(f"module_file: {module_file} failed to load: "
                         f"{type(exc).__name__}: {exc}") from None
    if not callable(getattr(module, "build_model", None)):
        raise InputError(
            f"module_file: {module_file} defines no build_model(hparams, feature_spec)")
    feature_spec = {**fitted.to_dict(), "cardinality": features["cardinality"],
                    "output_units": output_units(fitted)}
    try:
        core = module.build_model(dataclasses.asdict(hyperparameters), feature_spec)
        flat = {**features["numeric"], **features["indices"], **features["crosses"]}
        out = core(flat)
    except Exception as exc:
        raise InputError(f"module_file: build_model of {module_file} raised "
                         f"{type(exc).__name__}: {exc}") from None
    return keras.Model(inputs, out, name="conveyor_user_model")
