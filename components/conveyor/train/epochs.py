"""What happens at the end of each training epoch, decided once for one worker and for several.

One worker trains with Keras' `model.fit`; several train in a custom loop (`model.fit` fails
under MultiWorkerMirroredStrategy, keras-team/keras#20585). Both hand each epoch's logs (`loss`,
`val_loss`, metrics) to an `EpochPolicy`, which decides, from the validation loss (on rows held
out of the train split, `conveyor.train.data.plan_validation`; never the eval split):

- a NaN or infinite training or validation loss: `TrainingError` naming the likely cause
  (nothing is exported then);
- a new best epoch (lowest finite validation loss): its weights are the ones to export;
- the learning rate halved when the validation loss stalls for `lr_patience` epochs (default
  half the patience, at least 3), down to 1/8 of the initial rate, as Keras'
  `ReduceLROnPlateau` does;
- stop when the validation loss has not improved for `patience` epochs, as Keras'
  `EarlyStopping`. The automatic patience (`Hyperparameters.resolved`) grows as the validation
  rows get fewer and their loss noisier.

Without a validation loss (no rows held out) or with `patience` 0, training runs all its epochs.
After a resume, only the epochs of this run are compared. Pure Python: no TensorFlow needed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from conveyor.errors import TrainingError

if TYPE_CHECKING:
    from conveyor.transform.fit import Fitted


@dataclasses.dataclass
class Plateau:
    """Early stopping and learning-rate halving on the validation loss, as Keras'
    `EarlyStopping` (min_delta 0) and `ReduceLROnPlateau` (min_delta 1e-4, factor 0.5) decide
    them. `patience` 0 turns both off."""

    patience: int
    learning_rate: float
    min_learning_rate: float
    #: 0: max(3, patience // 2): a noisy loss stalls for an epoch or two by chance, and each
    #: halving slows training for good
    lr_patience: int = 0
    best: float = math.inf
    wait: int = 0
    lr_best: float = math.inf
    lr_wait: int = 0

    def __post_init__(self):
        if not self.lr_patience:
            self.lr_patience = max(3, self.patience // 2)

    def update(self, epoch: int, loss: float) -> bool:
        """Record `epoch`'s validation loss; True when training should stop. May lower
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


@dataclasses.dataclass(frozen=True)
class EpochEnd:
    """The decision at the end of one epoch."""

    stop: bool  # train no further epoch
    new_best: bool  # this epoch's weights are the best so far: keep them
    learning_rate: float  # for the next epoch (may have been halved)


def divergence_causes(fitted: Fitted) -> list[str]:
    """The likely causes of a NaN or infinite loss, from the fitted transform's statistics: a
    huge label, a huge feature left unscaled, else a learning rate too high."""
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
    return causes


class EpochPolicy:
    """Decides, from each epoch's logs, whether training goes on, which epoch is the best, the
    learning rate, and when a diverged loss ends training (see the module)."""

    def __init__(self, patience: int, learning_rate: float, causes: Sequence[str] = (),
                 min_learning_rate: float | None = None):
        """`patience` 0 (or no validation loss in the logs) turns early stopping and the
        learning-rate halving off; the learning rate never goes below `min_learning_rate`
        (default: the initial one / 8, three halvings: a lower one mostly stalls a run that was
        still improving). `causes`: what to blame a diverged loss on (`divergence_causes`)."""
        floor = learning_rate / 8 if min_learning_rate is None else min_learning_rate
        self.plateau = Plateau(patience, learning_rate, floor)
        self.causes = list(causes) or ["a learning_rate too high for this data (try 10x lower)"]
        self.best_loss = math.inf
        self.best_epoch: int | None = None

    @property
    def learning_rate(self) -> float:
        return self.plateau.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        """The optimizer's learning rate (after a resume, or as the optimizer rounds it)."""
        self.plateau.learning_rate = value

    def check_finite(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Raise `TrainingError` when `epoch`'s training or validation loss is NaN or
        infinite."""
        for key in ("loss", "val_loss"):
            value = logs.get(key)
            if value is not None and not math.isfinite(value):
                raise TrainingError(
                    f"train: the {'training' if key == 'loss' else 'validation'} loss became "
                    f"{value} at epoch {epoch + 1}; stopped, nothing exported. Likely cause: "
                    + "; ".join(self.causes))

    def end_epoch(self, epoch: int, logs: Mapping[str, float]) -> EpochEnd:
        """Decide after `epoch` (counted from 0) given its logs (`loss`, `val_loss`...).
        Raises `TrainingError` on a NaN or infinite loss."""
        self.check_finite(epoch, logs)
        val_loss = logs.get("val_loss")
        if val_loss is None:
            return EpochEnd(stop=False, new_best=False, learning_rate=self.learning_rate)
        new_best = val_loss < self.best_loss
        if new_best:
            self.best_loss, self.best_epoch = float(val_loss), epoch
        stop = self.plateau.update(epoch, val_loss)
        return EpochEnd(stop=stop, new_best=new_best, learning_rate=self.learning_rate)


def epoch_metrics(history: Mapping[str, Sequence[float]], best_epoch: int | None,
                  first_epoch: int = 0) -> dict[str, float]:
    """Each logged figure (the learning rate left out) at the best epoch, or at the last one
    without a best; `history` starts at `first_epoch` (after a resume)."""
    return {k: float(v[-1] if best_epoch is None else v[min(best_epoch - first_epoch, len(v) - 1)])
            for k, v in history.items() if v and k != "learning_rate"}
