"""tf.data input pipelines that stream a Dataset split's Parquet shards.

Rows are read a record batch at a time (pyarrow), optionally shuffled within a bounded buffer,
cut into fixed-size batches of raw feature arrays in Python, and prefetched by tf.data while the
model trains: no split is ever loaded whole. Labels become what the model's loss expects: class
indices (classification) or the standardized (and, with label_transform log, logged) value
(regression). Rows without a label are skipped.
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
from conveyor.train.preprocess import input_dtype
from conveyor.transform.inputs import feature_array, model_inputs  # noqa: F401  (re-exported)
from conveyor.transform.fit import Fitted


class LabelEncoder:
    """Label values -> what the loss expects; refuses classes the transform never saw."""

    def __init__(self, fitted: Fitted, scaled: bool = False):
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


def chunks(dataset: Dataset, split: str, fitted: Fitted, chunk_rows: int, *,
           shuffle: bool = False, seed: int = 0, repeat: bool = False
           ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """(features, label) arrays of up to `chunk_rows` rows each, shard after shard; with
    `shuffle`, shards in a new order each pass and rows shuffled within each chunk."""
    import pyarrow.parquet as pq

    names = list(fitted.features)
    encode = LabelEncoder(fitted, scaled=True)
    rng = np.random.default_rng(seed)
    while True:
        files = list(dataset.files(split))
        if shuffle:
            rng.shuffle(files)
        for file in files:
            with pq.ParquetFile(file) as pf:
                for batch in pf.iter_batches(batch_size=chunk_rows,
                                             columns=[*names, fitted.spec.label]):
                    labelled = pc.is_valid(batch.column(fitted.spec.label))
                    if not pc.all(labelled).as_py():
                        batch = batch.filter(labelled)
                    if not batch.num_rows:
                        continue
                    x = model_inputs(batch, fitted)
                    y = encode(batch.column(fitted.spec.label), split)
                    if shuffle:
                        order = rng.permutation(len(y))
                        x = {n: a[order] for n, a in x.items()}
                        y = y[order]
                    yield x, y
        if not repeat:
            return


def tf_dataset(dataset: Dataset, split: str, fitted: Fitted, batch_size: int, *,
               shuffle_buffer: int = 0, seed: int = 0, repeat: bool = False) -> tf.data.Dataset:
    """Batches of `batch_size` rows: Python hands tf.data large chunks (`shuffle_buffer` rows,
    or 32 batches), the next one prepared while the current one is consumed, which tf.data cuts
    into batches (`rebatch`) and prefetches in C++."""
    task = fitted.spec.task
    signature = (
        {f["input"]: tf.TensorSpec([None], input_dtype(f), name=f["input"])
         for f in fitted.features.values()},
        tf.TensorSpec([None], tf.int64 if task == "multiclass" else tf.float32),
    )
    chunk_rows = max(shuffle_buffer, batch_size * 32)
    return tf.data.Dataset.from_generator(
        lambda: chunks(dataset, split, fitted, chunk_rows, shuffle=bool(shuffle_buffer),
                       seed=seed, repeat=repeat),
        output_signature=signature,
    ).prefetch(2).rebatch(batch_size).prefetch(tf.data.AUTOTUNE)  # next chunk while this one trains
