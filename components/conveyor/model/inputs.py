"""A Dataset's rows as a model's serving signature takes them (no TensorFlow needed).

Each feature is one named input (`Fitted.input_of`) of shape [None]: float32 for numeric
features (NULL -> NaN), int64 for integer and bool categorical features (bool as 1 / 0; NULL ->
`MISSING_INT`), ISO strings for date and timestamp features ("2024-05-01",
"2024-05-01 12:34:56", UTC; NULL -> "") and strings otherwise (NULL -> ""). Training,
evaluation, batch prediction and push's infra check all feed the model through here, and
`LabelEncoder` turns a label column into what the loss and the metrics expect.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conveyor.errors import SchemaError

MISSING_INT = -(2**62)  # NULL in an integer categorical column (out of every vocabulary)


def feature_array(column: pa.ChunkedArray | pa.Array, feature: dict[str, Any]) -> np.ndarray:
    """One raw feature column as the serving signature takes it: float32 (NULL -> NaN), int64
    (bool as 1 / 0; NULL -> MISSING_INT), ISO date/timestamp strings (NULL -> "") or strings
    (NULL -> ""). Shared by training, evaluation and batch prediction, so every path feeds the
    model the same way."""
    if feature["kind"] == "numeric":
        return column.cast(pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)
    if feature["kind"] == "datetime":
        if pa.types.is_timestamp(column.type):
            column = pc.strftime(column.cast(pa.timestamp("us", tz="UTC")),
                                 format="%Y-%m-%d %H:%M:%S")
        return np.asarray(column.cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False),
                          dtype=object)
    if feature["dtype"] in ("int64", "bool"):
        return column.cast(pa.int64()).fill_null(MISSING_INT).to_numpy(
            zero_copy_only=False).astype(np.int64)
    return np.asarray(column.fill_null("").to_numpy(zero_copy_only=False), dtype=object)


def model_inputs(batch: pa.RecordBatch, fitted) -> dict[str, np.ndarray]:
    """A batch's rows as the model's serving signature takes them: input name -> array."""
    return {f["input"]: feature_array(batch.column(name), f)
            for name, f in fitted.features.items()}


class LabelEncoder:
    """Label values -> what the loss expects; refuses classes the transform never saw."""

    def __init__(self, fitted, scaled: bool = False):
        self.task = fitted.spec.task
        self.column = fitted.spec.label
        self.classes = fitted.label_classes
        if self.classes is not None:
            self.lookup = pa.array(self.classes)
        # training: a regression label as the model learns it, (T(y) - mean) / std
        self.scale = fitted.label_stats if scaled and self.task == "regression" else None

    def __call__(self, column, split: str) -> np.ndarray:
        if self.task == "regression":
            values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
            if not np.isfinite(values).all():
                raise SchemaError(f"split {split!r}: the regression label {self.column!r} is NaN "
                                  f"or infinite in {int((~np.isfinite(values)).sum())} rows")
            if self.scale:
                if self.scale.get("transform") == "log":
                    values = np.log1p(np.maximum(values, 0.0))
                values = (values - self.scale["mean"]) / (self.scale["std"] or 1.0)
            return values.astype(np.float32)
        index = pc.index_in(column, value_set=self.lookup)
        if index.null_count:
            unseen = pc.unique(pc.filter(column, pc.is_null(index))).to_pylist()
            raise SchemaError(f"train: split {split!r} has label class(es) {unseen[:10]} of "
                              f"{self.column!r} not seen when fitting the transform "
                              f"(classes: {self.classes[:20]})")
        out = index.to_numpy(zero_copy_only=False).astype(np.int64)
        return out.astype(np.float32) if self.task == "binary" else out
