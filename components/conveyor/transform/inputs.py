"""A Dataset's rows as a model's serving signature takes them (no TensorFlow needed).

Each feature is one named input (`Fitted.input_of`) of shape [None]: float32 for numeric
features (NULL -> NaN), int64 for integer and bool categorical features (bool as 1 / 0; NULL ->
`MISSING_INT`), ISO strings for date and timestamp features ("2024-05-01",
"2024-05-01 12:34:56", UTC; NULL -> "") and strings otherwise (NULL -> ""). Training,
evaluation, batch prediction and push's infra check all feed the model through here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
