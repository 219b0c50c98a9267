"""tf.data input pipelines that stream a Dataset split's Parquet shards.

Rows are read a record batch at a time (pyarrow), optionally shuffled within a bounded buffer,
cut into fixed-size batches of raw feature arrays in Python, and prefetched by tf.data while the
model trains: no split is ever loaded whole. Labels become what the model's loss expects: class
indices (classification) or float values (regression). Rows without a label are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from conveyor.errors import SchemaError
from conveyor.io.dataset import Dataset
from conveyor.train.preprocess import MISSING_INT, input_dtype
from conveyor.transform.fit import Fitted


def _feature_array(column: pa.ChunkedArray | pa.Array, feature: dict[str, Any]) -> np.ndarray:
    if feature["kind"] == "numeric":
        return column.cast(pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)
    if feature["dtype"] == "int64":
        return column.fill_null(MISSING_INT).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.asarray(column.fill_null("").to_numpy(zero_copy_only=False), dtype=object)


class LabelEncoder:
    """Label values -> what the loss expects; refuses classes the transform never saw."""

    def __init__(self, fitted: Fitted):
        self.task = fitted.spec.task
        self.column = fitted.spec.label
        self.classes = fitted.label_classes
        if self.classes is not None:
            self.lookup = pa.array(self.classes)

    def __call__(self, column, split: str) -> np.ndarray:
        if self.task == "regression":
            return column.cast(pa.float32()).to_numpy(zero_copy_only=False)
        index = pc.index_in(column, value_set=self.lookup)
        if index.null_count:
            unseen = pc.unique(pc.filter(column, pc.is_null(index))).to_pylist()
            raise SchemaError(f"train: split {split!r} has label class(es) {unseen[:10]} of "
                              f"{self.column!r} not seen when fitting the transform "
                              f"(classes: {self.classes[:20]})")
        out = index.to_numpy(zero_copy_only=False).astype(np.int64)
        return out.astype(np.float32) if self.task == "binary" else out


def batches(dataset: Dataset, split: str, fitted: Fitted, batch_size: int, *,
            shuffle_buffer: int = 0, seed: int = 0, repeat: bool = False
            ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Fixed-size batches (the last one smaller, unless repeating) of (features, label)."""
    names = list(fitted.features)
    encode = LabelEncoder(fitted)
    rng = np.random.default_rng(seed)
    read_rows = max(shuffle_buffer, batch_size * 8)
    epoch = 0
    while True:
        carry: dict[str, np.ndarray] | None = None
        carry_y = None
        files = list(dataset.files(split))
        if shuffle_buffer:
            rng.shuffle(files)
        for file in files:
            import pyarrow.parquet as pq

            with pq.ParquetFile(file) as pf:
                for batch in pf.iter_batches(batch_size=read_rows, columns=[*names, fitted.spec.label]):
                    labelled = pc.is_valid(batch.column(fitted.spec.label))
                    if not pc.all(labelled).as_py():
                        batch = batch.filter(labelled)
                    x = {n: _feature_array(batch.column(n), fitted.features[n]) for n in names}
                    y = encode(batch.column(fitted.spec.label), split)
                    if shuffle_buffer:
                        order = rng.permutation(len(y))
                        x = {n: a[order] for n, a in x.items()}
                        y = y[order]
                    if carry is not None:
                        x = {n: np.concatenate([carry[n], x[n]]) for n in names}
                        y = np.concatenate([carry_y, y])
                    full = len(y) - len(y) % batch_size
                    for start in range(0, full, batch_size):
                        yield ({n: a[start:start + batch_size] for n, a in x.items()},
                               y[start:start + batch_size])
                    carry = {n: a[full:] for n, a in x.items()}
                    carry_y = y[full:]
        if carry_y is not None and len(carry_y) and not repeat:
            yield carry, carry_y
        epoch += 1
        if not repeat:
            return


def tf_dataset(dataset: Dataset, split: str, fitted: Fitted, batch_size: int, *,
               shuffle_buffer: int = 0, seed: int = 0, repeat: bool = False) -> tf.data.Dataset:
    task = fitted.spec.task
    signature = (
        {n: tf.TensorSpec([None], input_dtype(f), name=n) for n, f in fitted.features.items()},
        tf.TensorSpec([None], tf.int64 if task == "multiclass" else tf.float32),
    )
    return tf.data.Dataset.from_generator(
        lambda: batches(dataset, split, fitted, batch_size, shuffle_buffer=shuffle_buffer,
                        seed=seed, repeat=repeat),
        output_signature=signature,
    ).prefetch(tf.data.AUTOTUNE)
