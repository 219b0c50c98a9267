"""train's hyper-parameters: their names, types and defaults, each defined once, and their check.

Train resolves them (`Hyperparameters.from_dict`, then `resolved` for the train rows); the same
`check` runs in `conveyor run` before anything starts (`conveyor.pipelines.checks`), so a
misspelt name or a value of the wrong type is refused in seconds, not when train starts minutes
into a run. No TensorFlow or Keras here: importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from conveyor.errors import InputError
from conveyor.params import did_you_mean, unknown

MODELS = ("dnn", "wide_deep")


@dataclasses.dataclass
class Hyperparameters:
    model: str = "dnn"
    hidden_units: list[int] = dataclasses.field(default_factory=lambda: [64, 32])
    #: 0: from the values and the train rows (`conveyor.train.model.embedding_dim`)
    embedding_dim: int = 0
    #: L2 penalty on embedding weights, in the training loss only; -1: min(0.01, 1 / train rows)
    embedding_l2: float = -1.0
    #: share of in-vocabulary values fed as out-of-vocabulary while training (so that vector
    #: is trained even when every value is frequent); 0: off
    oov_dropout: float = 0.005
    dropout: float = 0.0
    learning_rate: float = 1e-3
    batch_size: int = 0  # 0: from the train rows (`auto_batch_size`)
    #: 0: from the train rows (`auto_epochs`), stopped early on the validation loss
    epochs: int = 0
    steps: int = 0  # total training steps; 0: `epochs` full passes over the training rows
    #: epochs without validation-loss improvement before stopping; 0: off; -1: automatic (on,
    #: 5 to 20 epochs by the validation rows: `auto_patience`; off when `steps` fixes the budget)
    early_stopping_patience: int = -1
    shuffle_buffer: int = 65536
    seed: int = 0
    #: validation rows (held out of the train split, `data.plan_validation`) read after each
    #: epoch; a bigger holdout gives an evenly spread sample of its row groups
    #: (`data.sample_every`); 0: every row. The eval split is never read by train.
    validation_rows: int = 1_000_000

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Hyperparameters:
        """The hyper-parameters `data` sets over the defaults; an InputError naming the first
        bad name (with a close match and the known names) or value."""
        if data is not None and not isinstance(data, Mapping):
            raise InputError(f"hyperparameters: a JSON object of names and values, got {data!r}")
        data = dict(data or {})
        fields = [f.name for f in dataclasses.fields(cls)]
        strangers = set(data) - set(fields)
        if strangers:
            raise InputError(unknown("hyperparameters", strangers, fields))
        hyperparameters = cls()
        for name, value in data.items():
            setattr(hyperparameters, name, _coerced(name, value, getattr(hyperparameters, name)))
        if hyperparameters.model not in MODELS:
            raise InputError(f"hyperparameters: model {hyperparameters.model!r} is not one of "
                             f"{MODELS}{did_you_mean([hyperparameters.model], MODELS)}")
        for name in ("batch_size", "epochs", "steps"):
            if getattr(hyperparameters, name) < 0:
                raise InputError(f"hyperparameters: {name} must be at least 1 (0: automatic)")
        if hyperparameters.validation_rows < 0:
            raise InputError("hyperparameters: validation_rows must be >= 0 (0: every row held "
                             f"out for validation), not {hyperparameters.validation_rows}")
        if hyperparameters.early_stopping_patience < -1:
            raise InputError("hyperparameters: early_stopping_patience must be >= 0 (0: off) "
                             "or -1 (automatic)")
        if hyperparameters.learning_rate <= 0:
            raise InputError("hyperparameters: learning_rate must be positive")
        if hyperparameters.embedding_l2 < 0 and hyperparameters.embedding_l2 != -1:
            raise InputError("hyperparameters: embedding_l2 must be >= 0 (0: off) or -1 "
                             "(automatic)")
        if not 0 <= hyperparameters.oov_dropout < 1:
            raise InputError("hyperparameters: oov_dropout must be in [0, 1) (0: off)")
        return hyperparameters

    def resolved(self, rows: int, validating: int | None = None) -> Hyperparameters:
        """A copy with the automatic settings (0 / -1) chosen for `rows` training rows and
        `validating` labelled validation rows (None: as many as train rows)."""
        chosen = dataclasses.replace(self)
        if not chosen.batch_size:
            chosen.batch_size = auto_batch_size(rows)
        steps_per_epoch = max(1, rows // chosen.batch_size)
        if chosen.early_stopping_patience == -1:
            chosen.early_stopping_patience = (
                0 if self.steps
                else auto_patience(rows if validating is None else validating, steps_per_epoch))
        if not chosen.epochs:
            chosen.epochs = auto_epochs(rows, chosen.batch_size) if not chosen.steps else 10
        return chosen


_KINDS = {list: "a list of whole numbers", bool: "true or false", int: "a whole number",
          float: "a number", str: "a string"}


def _coerced(name: str, value: Any, default: Any) -> Any:
    """`value` as the type of the hyper-parameter's default (KFP's local runner hands ints in
    dicts as floats: 3.0 is 3), or an InputError naming it and the type expected."""
    kind = _KINDS.get(type(default), type(default).__name__)
    try:
        if isinstance(default, list):
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise TypeError(f"not a list: {type(value).__name__}")
            return [_whole(v) for v in value]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError(f"not true or false: {type(value).__name__}")
            return value
        if isinstance(default, int):
            return _whole(value)
        if isinstance(default, float):
            value = _number(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise TypeError(f"not a finite number: {type(value).__name__}")
            return float(value)
        if isinstance(default, str) and not isinstance(value, str):
            raise TypeError(f"not a string: {type(value).__name__}")
    except (TypeError, ValueError) as exc:
        raise InputError(f"hyperparameters: {name}={value!r}: must be {kind} ({exc})") from None
    return value


def _number(value: Any) -> Any:
    """A number written as text ("0.1", as the old parsing took it) as that number."""
    return float(value) if isinstance(value, str) else value


def _whole(value: Any) -> int:
    value = _number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"not a number: {type(value).__name__}")
    if float(value) != int(value):
        raise ValueError("not a whole number")
    return int(value)


def check(value: Any) -> list[str]:
    """The problem with a pipeline's `hyperparameters` argument, as a one-line list; [] when
    train would accept it (its automatic settings need the rows and are not checked here)."""
    try:
        Hyperparameters.from_dict(value)
    except InputError as exc:
        return [str(exc)]
    return []


def auto_batch_size(rows: int) -> int:
    """About 64 steps per pass over the rows, as a power of two from 32 to 512."""
    return int(min(512, max(32, 2 ** round(math.log2(max(rows, 1) / 64)))))


def auto_patience(validating: int, steps_per_epoch: int) -> int:
    """Epochs without a better validation loss before training stops, scaled to that loss's
    noise: its standard error grows as 1 / sqrt(rows), so over few rows it wanders and a
    chance low can make the next ten epochs look worse while the model still improves. Below
    1,000 validation rows 20 epochs (such tables are cheap to train on), below 10,000 (or
    under 50 steps an epoch) 10, else 5."""
    if validating < 1_000:
        return 20
    if validating < 10_000 or steps_per_epoch < 50:
        return 10
    return 5


def auto_epochs(rows: int, batch_size: int) -> int:
    """An upper bound on epochs for early stopping to cut: at least 20,000 steps' worth and 10
    epochs, at most 200 epochs and 30 M examples."""
    steps_per_epoch = max(1, rows // batch_size)
    by_steps = math.ceil(20_000 / steps_per_epoch)
    by_examples = max(3, 30_000_000 // max(rows, 1))
    return int(max(3, min(200, by_examples, max(10, by_steps))))


