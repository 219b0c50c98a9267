"""What a training run returns (`conveyor.train.train.train`), on one worker or several."""

from __future__ import annotations

import dataclasses

import keras

from conveyor.train import cluster as clusters
from conveyor.train.hyperparameters import Hyperparameters


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
    #: the epoch whose weights were exported (lowest validation loss), from 0
    best_epoch: int | None = None
    hyperparameters: Hyperparameters | None = None  # as resolved for this run
    cluster: clusters.Cluster = clusters.SINGLE  # this process's role
    global_batch_size: int = 0  # examples per step over all replicas (multi-worker runs)
    #: the rows validated on (`conveyor.train.data.Validation.describe`): how many, and the
    #: rule that lists them
    validation: dict = dataclasses.field(default_factory=dict)
    #: each figure per epoch run, from `first_epoch` (Keras' History.history)
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    @property
    def is_chief(self) -> bool:
        return self.cluster.is_chief
