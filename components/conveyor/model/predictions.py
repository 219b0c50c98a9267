"""The record of a model's eval-time predictions: statistics of `class_label` (classification)
or `value` (regression) over the rows evaluate scored. Evaluate writes it (`PREDICTIONS_FILE`),
push copies it into the version's assets.extra and monitor compares serving predictions with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from conveyor.stats.columns import ColumnStatistics

PREDICTIONS_FORMAT = "conveyor.predictions/v1"


class PredictionStatistics:
    """The eval-time prediction statistics a version carries as `assets.extra/predictions.json`,
    accumulated batch by batch: statistics of `class_label` (classification) or `value`
    (regression). evaluate builds them over the rows it scores; push copies the file."""

    def __init__(self, task: str, split: str = "eval"):
        self.task, self.split = task, split
        self.output = "value" if task == "regression" else "class_label"
        self.kind = "float64" if task == "regression" else "string"
        self.statistics = ColumnStatistics(self.output, self.kind)

    def update(self, values: Iterable[Any] | pa.Array | np.ndarray) -> None:
        target = pa.float64() if self.kind == "float64" else pa.string()
        if isinstance(values, np.ndarray) and values.dtype == object:  # TF strings are bytes
            values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                      for v in values.tolist()]
        array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(
            values if isinstance(values, np.ndarray) else list(values), target)
        self.statistics.update(array.cast(target))

    def record(self) -> dict[str, Any]:
        return {"format": PREDICTIONS_FORMAT, "task": self.task, "output": self.output,
                "split": self.split, "statistics": self.statistics.to_dict()}


def prediction_record(task: str, values: Iterable[Any] | pa.Array,
                      split: str = "eval") -> dict[str, Any]:
    """`PredictionStatistics` of all `values` at once, as the record."""
    stats = PredictionStatistics(task, split)
    stats.update(values)
    return stats.record()
