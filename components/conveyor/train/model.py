"""Models over the preprocessed features: a DNN and a wide-and-deep model for each task, or a
user's `build_model(hparams, feature_spec)` from a module file. The trained model takes the raw
features: preprocessing (`conveyor.train.preprocess`) is its first layers."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from conveyor.errors import InputError
from conveyor.train.preprocess import preprocess, raw_inputs
from conveyor.transform.fit import Fitted
from conveyor.transform.spec import input_name  # layer names follow the input-name rules

MODELS = ("dnn", "wide_deep")


@dataclasses.dataclass
class Hyperparameters:
    model: str = "dnn"
    hidden_units: list[int] = dataclasses.field(default_factory=lambda: [64, 32])
    embedding_dim: int = 0  # 0: min(16, ceil(1.6 * cardinality ** 0.56))
    dropout: float = 0.0
    learning_rate: float = 1e-3
    batch_size: int = 0  # 0: from the train rows (`auto_batch_size`)
    epochs: int = 0  # 0: from the train rows (`auto_epochs`), stopped early on the eval loss
    steps: int = 0  # total training steps; 0: `epochs` full passes over the train split
    #: epochs without eval-loss improvement before stopping; 0: off; -1: automatic (on, 5 or
    #: 10 epochs, unless `steps` fixes the budget)
    early_stopping_patience: int = -1
    shuffle_buffer: int = 65536
    seed: int = 0
    #: eval rows validated on after each epoch; a bigger eval split gives an evenly spread
    #: sample of its row groups (`data.sample_every`); 0: every row. The evaluate step always
    #: scores the whole split.
    validation_rows: int = 1_000_000

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Hyperparameters":
        data = dict(data or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise InputError(f"hyperparameters: unknown name(s) {unknown} "
                             f"(known: {', '.join(fields)})")
        hp = cls()
        for name, value in data.items():
            default = getattr(hp, name)
            try:
                if isinstance(default, list):
                    value = [int(v) for v in value]
                elif isinstance(default, bool):
                    value = bool(value)
                elif isinstance(default, int):  # KFP's local runner hands ints in dicts as floats
                    if float(value) != int(float(value)):
                        raise ValueError("not a whole number")
                    value = int(float(value))
                elif isinstance(default, float):
                    value = float(value)
            except (TypeError, ValueError) as exc:
                raise InputError(f"hyperparameters: {name}={value!r}: {exc}") from None
            setattr(hp, name, value)
        if hp.model not in MODELS:
            raise InputError(f"hyperparameters: model {hp.model!r} is not one of {MODELS}")
        for name in ("batch_size", "epochs", "steps"):
            if getattr(hp, name) < 0:
                raise InputError(f"hyperparameters: {name} must be at least 1 (0: automatic)")
        if hp.validation_rows < 0:
            raise InputError("hyperparameters: validation_rows must be >= 0 (0: the whole eval "
                             f"split), not {hp.validation_rows}")
        if hp.early_stopping_patience < -1:
            raise InputError("hyperparameters: early_stopping_patience must be >= 0 (0: off) "
                             "or -1 (automatic)")
        if hp.learning_rate <= 0:
            raise InputError("hyperparameters: learning_rate must be positive")
        return hp


    def resolved(self, rows: int) -> "Hyperparameters":
        """A copy with the automatic settings (0 / -1) chosen for `rows` training rows."""
        hp = dataclasses.replace(self)
        if not hp.batch_size:
            hp.batch_size = auto_batch_size(rows)
        steps_per_epoch = max(1, rows // hp.batch_size)
        if hp.early_stopping_patience == -1:
            hp.early_stopping_patience = 0 if self.steps else (10 if steps_per_epoch < 50 else 5)
        if not hp.epochs:
            hp.epochs = auto_epochs(rows, hp.batch_size) if not hp.steps else 10
        return hp


def auto_batch_size(rows: int) -> int:
    """About 64 steps per pass over the rows, as a power of two from 32 to 512."""
    return int(min(512, max(32, 2 ** round(math.log2(max(rows, 1) / 64)))))


def auto_epochs(rows: int, batch_size: int) -> int:
    """An upper bound on epochs for early stopping to cut: at least 20,000 steps' worth and 10
    epochs, at most 200 epochs and 30 M examples."""
    steps_per_epoch = max(1, rows // batch_size)
    by_steps = math.ceil(20_000 / steps_per_epoch)
    by_examples = max(3, 30_000_000 // max(rows, 1))
    return int(max(3, min(200, by_examples, max(10, by_steps))))


def output_units(fitted: Fitted) -> int:
    task = fitted.spec.task
    return len(fitted.label_classes) if task == "multiclass" else 1


def _embedding_dim(cardinality: int, hp: Hyperparameters) -> int:
    return hp.embedding_dim or min(16, math.ceil(1.6 * cardinality ** 0.56))


def _head(logits, fitted: Fitted):
    task = fitted.spec.task
    if task == "binary":
        return keras.layers.Activation("sigmoid", name="prediction")(logits)
    if task == "multiclass":
        return keras.layers.Activation("softmax", name="prediction")(logits)
    # regression: the standardized label; the serving signature maps it back to label units
    return keras.layers.Activation("linear", name="prediction")(logits)


def build_model(fitted: Fitted, hp: Hyperparameters, module_file: str | None = None) -> keras.Model:
    """raw features -> preprocessing -> (DNN | wide-and-deep | user model) -> prediction."""
    inputs = raw_inputs(fitted)
    features = preprocess(fitted, inputs)
    if module_file:
        return _user_model(module_file, fitted, hp, inputs, features)
    deep = list(features["numeric"].values())
    for name, index in features["indices"].items():
        n = features["cardinality"][name]
        emb = keras.layers.Embedding(n, _embedding_dim(n, hp),
                                     name=f"{input_name(name)}_embedding")(index)
        deep.append(emb)
    x = deep[0] if len(deep) == 1 else keras.layers.Concatenate(name="deep_features")(deep)
    for i, units in enumerate(hp.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        if hp.dropout:
            x = keras.layers.Dropout(hp.dropout, seed=hp.seed)(x)
    logits = keras.layers.Dense(output_units(fitted), name="deep_logits")(x)
    if hp.model == "wide_deep":
        wide = [keras.layers.CategoryEncoding(features["cardinality"][n], output_mode="one_hot",
                                              name=f"{input_name(n)}_one_hot")(i)
                for n, i in {**features["indices"], **features["crosses"]}.items()]
        wide += list(features["numeric"].values())
        w = wide[0] if len(wide) == 1 else keras.layers.Concatenate(name="wide_features")(wide)
        wide_logits = keras.layers.Dense(output_units(fitted), name="wide_logits")(w)
        logits = keras.layers.Add(name="logits")([logits, wide_logits])
    return keras.Model(inputs, _head(logits, fitted), name="conveyor_model")


def _user_model(module_file: str, fitted: Fitted, hp: Hyperparameters, inputs, features):
    path = Path(module_file)
    try:
        spec = importlib.util.spec_from_file_location("conveyor_user_module", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except FileNotFoundError:
        raise InputError(f"module_file: {module_file} does not exist") from None
    except Exception as exc:  # noqa: BLE001  (any error in the user's module is bad input)
        raise InputError(f"module_file: {module_file} failed to load: "
                         f"{type(exc).__name__}: {exc}") from None
    if not callable(getattr(module, "build_model", None)):
        raise InputError(f"module_file: {module_file} defines no build_model(hparams, feature_spec)")
    feature_spec = {**fitted.to_dict(), "cardinality": features["cardinality"],
                    "output_units": output_units(fitted)}
    try:
        core = module.build_model(dataclasses.asdict(hp), feature_spec)
        flat = {**features["numeric"], **features["indices"], **features["crosses"]}
        out = core(flat)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"module_file: build_model of {module_file} raised "
                         f"{type(exc).__name__}: {exc}") from None
    return keras.Model(inputs, out, name="conveyor_user_model")
