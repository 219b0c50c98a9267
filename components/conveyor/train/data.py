"""tf.data input pipelines that stream a Dataset split's Parquet shards.

Rows are read a record batch at a time (pyarrow), optionally shuffled within a bounded buffer,
cut into fixed-size batches of raw feature arrays in Python, and prefetched by tf.data while the
model trains: no split is ever loaded whole. Labels become what the model's loss expects: class
indices (classification) or the standardized (and, with label_transform log, logged) value
(regression). Rows without a label are skipped.

With several workers (`shard=(index, count)`), each reads a disjoint part of the split: every
`count`-th Parquet file from its `index` when there are at least as many files as workers, else
every `count`-th row group, else (fewer row groups than workers) every `count`-th row. No row is
read by two workers, and together they read every row. The assignment follows the Dataset's file
order, the same on every worker, before any shuffling.

Validation reads rows held out of the train split (`conveyor.io.split.Holdout`: a hash bucket of
the split key, or of the row's content), never the eval split, which is left to the evaluate
step: the epoch kept, early stopping and the learning-rate schedule are chosen on rows that the
scores evaluate reports never come from. Training reads the other rows of the train split. Both
read the same files and each keeps its side of the holdout, row by row, so with several workers
each validates on the held-out rows of its own part. A big holdout is sampled (`every` > 1, from
`Hyperparameters.validation_rows`): its rows in every `every`-th row group counted over the
whole split, so the sample is spread from its first file to its last; with fewer row groups than
that, in every `every`-th row.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from conveyor.errors import EmptyDataError, InputError
from conveyor.io.dataset import Dataset, read_shard, shard_row_groups
from conveyor.io.split import Holdout
from conveyor.model.inputs import LabelEncoder, model_inputs
from conveyor.train.preprocess import input_dtype
from conveyor.transform.fit import Fitted

#: A shard file of a split: `Dataset.files` gives Paths.
ShardFile = str | Path


@dataclasses.dataclass(frozen=True)
class Part:
    """What one worker reads of one file: some row groups (None: all), and with `stride` > 1
    only the rows at positions `offset`, `offset + stride`, ... counted over the whole split."""

    file: ShardFile
    row_groups: tuple[int, ...] | None = None
    stride: int = 1
    offset: int = 0


def shard_parts(files: Sequence[ShardFile], index: int = 0, count: int = 1) -> list[Part]:
    """The parts of a split's `files` that worker `index` of `count` reads (see the module)."""
    if count < 1 or not 0 <= index < count:
        raise InputError(f"train: worker index {index} is not in 0..{count - 1}")
    files = list(files)
    if count == 1:
        return [Part(f) for f in files]
    if len(files) >= count:
        return [Part(f) for f in files[index::count]]
    groups = _row_groups(files)
    if len(groups) >= count:
        return _group_parts(groups[index::count])
    return [Part(f, None, count, index) for f in files]


def _row_groups(files: Sequence[ShardFile]) -> list[tuple[ShardFile, int]]:
    """(file, row group) of every row group of `files`, in order, from the Parquet footers."""
    return [(f, g.index) for f in files for g in shard_row_groups(f)]


def _group_parts(groups: Sequence[tuple[ShardFile, int]]) -> list[Part]:
    mine: dict[ShardFile, list[int]] = {}
    for f, g in groups:
        mine.setdefault(f, []).append(g)
    return [Part(f, tuple(g)) for f, g in mine.items()]


def sample_every(rows: int, validation_rows: int) -> int:
    """Read every how-manyth row group of a `rows`-row split to validate on about
    `validation_rows` rows (0: all)."""
    if not validation_rows or rows <= validation_rows:
        return 1
    return math.ceil(rows / validation_rows)


def sample_parts(files: Sequence[ShardFile], every: int = 1, index: int = 0, count: int = 1
                 ) -> list[Part]:
    """Worker `index` of `count`'s share of every `every`-th row group of a split (see the
    module); `every` = 1 is `shard_parts`."""
    if every <= 1 or count < 1 or not 0 <= index < count:
        return shard_parts(files, index, count)  # (which refuses a bad index)
    chosen = _row_groups(files)[every // 2::every]
    if len(chosen) >= count:
        return _group_parts(chosen[index::count])
    return [Part(f, None, every * count, index) for f in files]


def shard_rows(files: Sequence[ShardFile], index: int = 0, count: int = 1) -> int:
    """Rows (labelled or not) in worker `index`'s parts, from the Parquet footers alone."""
    total = 0
    parts = shard_parts(files, index, count)
    for part in parts:
        groups = shard_row_groups(part.file)
        total += sum(g.rows for g in groups
                     if part.row_groups is None or g.index in part.row_groups)
    if parts and parts[0].stride > 1:  # every count-th row of the whole split
        total = len(range(parts[0].offset, total, parts[0].stride))
    return total


def _part_batches(parts: Sequence[Part], columns: list[str], chunk_rows: int
                  ) -> Iterator[pa.RecordBatch]:
    position = 0  # row position in the split, for striped parts
    for part in parts:
        for batch in read_shard(part.file, columns, chunk_rows, part.row_groups):
            if part.stride > 1:
                first = (part.offset - position) % part.stride
                keep = np.arange(first, batch.num_rows, part.stride)
                position += batch.num_rows
                batch = batch.take(pa.array(keep, pa.int64()))
            yield batch


def _kept(batch: pa.RecordBatch, label: str, holdout: Holdout | None, held_out: bool
          ) -> pa.RecordBatch:
    """The rows of `batch` with a label, on the `held_out` side of `holdout` (if any)."""
    keep = pc.is_valid(batch.column(label))
    if holdout is not None:
        side = holdout.held_out(batch)
        keep = pc.and_(keep, pa.array(side if held_out else ~side))
    return batch if pc.all(keep).as_py() else batch.filter(keep)


def _columns(fitted: Fitted, holdout: Holdout | None) -> list[str]:
    """The columns read: the features, the label and what the holdout hashes (once each)."""
    return list(dict.fromkeys([*fitted.features, fitted.spec.label,
                               *(holdout.columns if holdout else ())]))


def chunks(dataset: Dataset, split: str, fitted: Fitted, chunk_rows: int, *,
           shuffle: bool = False, seed: int = 0, repeat: bool = False,
           shard: tuple[int, int] = (0, 1), every: int = 1, holdout: Holdout | None = None,
           held_out: bool = False) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """(features, label) arrays of up to `chunk_rows` rows each, shard after shard; with
    `shuffle`, shards in a new order each pass and rows shuffled within each chunk; with
    `shard=(index, count)`, only worker `index`'s part of the split (`shard_parts`); with
    `every` > 1, of every `every`-th row group (`sample_parts`); with a `holdout`, only the rows
    it holds out (`held_out`) or only the others."""
    encode = LabelEncoder(fitted, scaled=True)
    rng = np.random.default_rng(seed)
    parts = sample_parts(list(dataset.files(split)), every, *shard)
    columns = _columns(fitted, holdout)
    while True:
        order = list(parts)
        if shuffle and all(p.stride == 1 for p in order):  # striding counts rows in file order
            rng.shuffle(order)
        seen = 0
        for batch in _part_batches(order, columns, chunk_rows):
            batch = _kept(batch, fitted.spec.label, holdout, held_out)
            if not batch.num_rows:
                continue
            x = model_inputs(batch, fitted)
            y = encode(batch.column(fitted.spec.label), split)
            if shuffle:
                order_rows = rng.permutation(len(y))
                x = {n: a[order_rows] for n, a in x.items()}
                y = y[order_rows]
            seen += len(y)
            yield x, y
        if not repeat:
            return
        if not seen:  # repeating nothing would never end
            where = f" (worker {shard[0]} of {shard[1]})" if shard[1] > 1 else ""
            held = " outside its validation holdout" if holdout is not None else ""
            raise EmptyDataError(f"train: split {split!r}{where} has no row with a label "
                                 f"{fitted.spec.label!r}{held} to train on")


def tf_dataset(dataset: Dataset, split: str, fitted: Fitted, batch_size: int, *,
               shuffle_buffer: int = 0, seed: int = 0, repeat: bool = False,
               shard: tuple[int, int] = (0, 1), every: int = 1, holdout: Holdout | None = None,
               held_out: bool = False) -> tf.data.Dataset:
    """Batches of `batch_size` rows of `chunks`: Python hands tf.data large chunks
    (`shuffle_buffer` rows, or 32 batches), the next one prepared while the current one is
    consumed, which tf.data cuts into batches (`rebatch`) and prefetches in C++."""
    task = fitted.spec.task
    signature = (
        {f["input"]: tf.TensorSpec([None], input_dtype(f), name=f["input"])
         for f in fitted.features.values()},
        tf.TensorSpec([None], tf.int64 if task == "multiclass" else tf.float32),
    )
    chunk_rows = max(shuffle_buffer, batch_size * 32)
    return tf.data.Dataset.from_generator(
        lambda: chunks(dataset, split, fitted, chunk_rows, shuffle=bool(shuffle_buffer),
                       seed=seed, repeat=repeat, shard=shard, every=every, holdout=holdout,
                       held_out=held_out),
        output_signature=signature,
    ).prefetch(2).rebatch(batch_size).prefetch(tf.data.AUTOTUNE)  # next chunk while this one trains


@dataclasses.dataclass(frozen=True)
class Validation:
    """What train validates on: the rows of `split` that `holdout` holds out (None: no
    validation, every row trains), those in 1 row group in `every`; `labelled` of them have a
    label. `training_rows` are left to train on (estimated from the holdout's share when
    `every` > 1: the rest of the split is not read to count them)."""

    split: str
    holdout: Holdout | None
    every: int
    labelled: int
    training_rows: int

    def describe(self) -> dict:
        """The record train publishes: which rows it validated on, and how to list them."""
        record: dict = {"split": self.split, "validation_rows": self.labelled,
                        "training_rows": self.training_rows}
        if self.holdout is None:
            return record | {"held_out": "none: too few rows; early stopping off"}
        return record | self.holdout.describe() | {"sampled_row_groups_every": self.every}


def _count(dataset: Dataset, split: str, fitted: Fitted, holdout: Holdout, every: int
           ) -> tuple[int, int, int]:
    """(rows held out, of them labelled, labelled rows not held out) in 1 row group in `every`
    of `split`."""
    label = fitted.spec.label
    held = held_labelled = kept_labelled = 0
    parts = sample_parts(list(dataset.files(split)), every)
    for batch in _part_batches(parts, list(dict.fromkeys([label, *holdout.columns])), 1 << 18):
        side = holdout.held_out(batch)
        labelled = pc.is_valid(batch.column(label)).to_numpy(zero_copy_only=False)
        held += int(side.sum())
        held_labelled += int((side & labelled).sum())
        kept_labelled += int((~side & labelled).sum())
    return held, held_labelled, kept_labelled


def plan_validation(dataset: Dataset, split: str, fitted: Fitted, validation_rows: int
                    ) -> Validation:
    """The validation rows held out of the train `split` (`Holdout.of` the Dataset), sampled
    to about `validation_rows` (the hyperparameter; 0: all), and counted; said in one line. A
    split too small to hold out a labelled row and keep one to train on is not held out:
    training then runs all its epochs on every row, without validation."""
    rows = dataset.split(split).rows
    holdout = Holdout.of(dataset.info, split)
    every = sample_every(round(rows * holdout.fraction), validation_rows)
    held, labelled, kept = _count(dataset, split, fitted, holdout, every)
    if every > 1 and not labelled:  # a sample without a label: read the whole holdout
        every = 1
        held, labelled, kept = _count(dataset, split, fitted, holdout, every)
    training = rows - held if every == 1 else rows - round(rows * holdout.fraction)
    if not labelled or (every == 1 and not kept):
        print(f"train: split {split!r} ({rows:,} rows) is too small to hold out validation "
              "rows; training on every row, all epochs, without validation", flush=True)
        return Validation(split, None, 1, 0, rows)
    sample = (f" (1 row group or row in {every} of them: hyperparameter validation_rows="
              f"{validation_rows:,})" if every > 1 else "")
    print(f"train: validating each epoch on {labelled:,} labelled rows held out of split "
          f"{split!r}{sample}, {holdout.fraction:.0%} of its rows by "
          f"{holdout.describe()['rule']}; training on the other {training:,} rows; the eval "
          "split is left to the evaluate step", flush=True)
    return Validation(split, holdout, every, labelled, training)
