"""Writing a Dataset artifact (`conveyor.io.dataset` is the contract and its reader): split by
split into Parquet shards, all or nothing.

`DatasetWriter` writes `dataset.json` only after every shard is closed, and on any error removes
what it wrote, so a reader never sees a half-written dataset. A writer killed before its commit
leaves shards without `dataset.json`: readers refuse that folder, and the next writer into it (a
retried task) clears those shards and starts over. Each split's rows are hashed as they are
written (order-independent) for the dataset's fingerprint.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from conveyor.errors import EmptyDataError, InputError, SchemaError
from conveyor.io.dataset import (
    METADATA_FILE,
    ROW_GROUP_ROWS,
    SHARD_ROWS,
    Column,
    DatasetInfo,
    SplitInfo,
    check_split_names,
    contract_schema,
    contract_type,
)


class _RowMultisetHash:
    """Order-independent hash of a split's rows: the sum (mod 2**64) of per-row 64-bit hashes."""

    def __init__(self) -> None:
        self.total = np.uint64(0)

    def update(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        hashes = pd.util.hash_pandas_object(batch.to_pandas(), index=False).to_numpy(np.uint64)
        with np.errstate(over="ignore"):
            self.total = np.uint64(self.total + hashes.sum(dtype=np.uint64))


class _SplitWriter:
    def __init__(self, folder: Path, root: Path, schema: pa.Schema, shard_rows: int,
                 row_group_rows: int, prefix: str = "part-"):
        self.folder, self.root, self.schema, self.prefix = folder, root, schema, prefix
        self.shard_rows, self.row_group_rows = shard_rows, row_group_rows
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.rows = 0
        self.files: list[Path] = []
        self.writer: pq.ParquetWriter | None = None
        self.shard_rows_written = 0
        self.hash = _RowMultisetHash()

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.hash.update(batch)
        self.buffer.append(batch)
        self.buffered += batch.num_rows
        self.rows += batch.num_rows
        if self.buffered >= self.row_group_rows:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        table = pa.Table.from_batches(self.buffer, schema=self.schema)
        self.buffer, self.buffered = [], 0
        offset = 0
        while offset < table.num_rows:
            if self.writer is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                path = self.folder / f"{self.prefix}{len(self.files):05d}.parquet"
                self.files.append(path)
                self.writer = pq.ParquetWriter(path, self.schema, compression="snappy")
                self.shard_rows_written = 0
            take = min(table.num_rows - offset, self.shard_rows - self.shard_rows_written)
            self.writer.write_table(table.slice(offset, take), row_group_size=self.row_group_rows)
            offset += take
            self.shard_rows_written += take
            if self.shard_rows_written >= self.shard_rows:
                self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def finish(self) -> SplitInfo:
        self.flush()
        self.close()
        return SplitInfo(
            rows=self.rows,
            files=tuple(str(p.relative_to(self.root)) for p in self.files),
            bytes=sum(p.stat().st_size for p in self.files),
        )


class DatasetWriter:
    """Write a Dataset artifact split by split, all or nothing.

    Use as a context manager: leaving the block normally commits (writes `dataset.json`), leaving
    it with an exception removes every file written. Commit refuses an empty split with an
    `EmptyDataError`, after removing what was written.

        with DatasetWriter(path, schema, ["train", "eval"], source={...}) as w:
            w.write("train", batch)
        info = w.info

    With `parts` > 1, `write(split, batch, part=p)` may be called from one thread per part at
    once: each part has its own shards (`part-<p>-<k>.parquet`), and a split's files are listed
    part after part, so the Dataset's rows are part 0's rows, then part 1's, ...: the same rows
    in the same order as writing part 0, then part 1, ... through one part.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: pa.Schema,
        splits: Sequence[str],
        source: Mapping[str, Any],
        *,
        shard_rows: int = SHARD_ROWS,
        row_group_rows: int = ROW_GROUP_ROWS,
        where: str = "dataset",
        parts: int = 1,
    ):
        self.path = Path(path)
        self.schema = contract_schema(schema, where)
        self.source = dict(source)
        self.where = where
        names = check_split_names(splits, "splits")
        if self.path.exists() and any(self.path.iterdir()):
            if not _uncommitted_leftovers(self.path):
                raise InputError(
                    f"{self.path}: output folder is not empty; refusing to overwrite it")
            for child in self.path.iterdir():  # a killed writer's shards: a retry starts over
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self._splits = {
            name: [_SplitWriter(self.path / name, self.path, self.schema, shard_rows,
                                row_group_rows, "part-" if parts == 1 else f"part-{p:02d}-")
                   for p in range(parts)]
            for name in names
        }
        self.info: DatasetInfo | None = None

    def write(self, split: str, batch: pa.RecordBatch | pa.Table, part: int = 0) -> None:
        """Append rows to a split (to `part` of it); the batch is cast to the contract schema."""
        if batch.schema != self.schema:
            try:
                batch = batch.select(self.schema.names).cast(self.schema)
            except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"{self.where}: rows do not fit the dataset schema ({exc})"
                ) from exc
        writer = self._splits[split][part]
        for b in batch.to_batches() if isinstance(batch, pa.Table) else [batch]:
            writer.write(b)

    def commit(self) -> DatasetInfo:
        splits, hashes = {}, {}
        for name, parts in self._splits.items():
            done = [w.finish() for w in parts]
            splits[name] = SplitInfo(rows=sum(d.rows for d in done),
                                     files=tuple(f for d in done for f in d.files),
                                     bytes=sum(d.bytes for d in done))
            with np.errstate(over="ignore"):
                hashes[name] = int(sum((w.hash.total for w in parts), np.uint64(0)))
        total = sum(s.rows for s in splits.values())
        if total == 0:
            raise EmptyDataError(f"{self.where}: no rows")
        empty = [name for name, s in splits.items() if s.rows == 0]
        if empty:
            counts = ", ".join(f"{n}={s.rows}" for n, s in splits.items())
            raise EmptyDataError(
                f"{self.where}: split(s) {empty} are empty ({counts} of {total} rows); "
                "use more rows, other split ratios, or a split key with more distinct values"
            )
        fingerprint = _fingerprint(
            self.schema, {n: (s.rows, hashes[n]) for n, s in splits.items()}
        )
        info = DatasetInfo(
            # a contract schema (`contract_schema`) has a contract type for every column
            columns=tuple(Column(f.name, cast(str, contract_type(f.type)), f.nullable)
                          for f in self.schema),
            splits=splits,
            source=self.source,
            fingerprint=fingerprint,
        )
        tmp = self.path / (METADATA_FILE + ".tmp")
        tmp.write_text(json.dumps(info.to_dict(), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, self.path / METADATA_FILE)
        self.info = info
        return info

    def abort(self) -> None:
        """Remove every file this writer created (the folder too, if it created it)."""
        for w in (w for parts in self._splits.values() for w in parts):
            try:
                w.close()
            except Exception:  # closing a broken writer must not mask the cause
                pass
        if self._created:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            for child in self.path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

    @property
    def committed(self) -> DatasetInfo:
        """What `commit` wrote (leaving the `with` block without an error commits)."""
        if self.info is None:
            raise RuntimeError(f"{self.where}: the Dataset is not committed yet")
        return self.info

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def _uncommitted_leftovers(path: Path) -> bool:
    """True if `path` holds only what a DatasetWriter killed before its commit leaves: split
    folders of `part-*.parquet` shards and maybe `dataset.json.tmp`, but no `dataset.json`."""
    for child in path.iterdir():
        if child.is_dir():
            if not all(f.is_file() and f.name.startswith("part-") and f.suffix == ".parquet"
                       for f in child.iterdir()):
                return False
        elif child.name != METADATA_FILE + ".tmp":
            return False
    return True


def _fingerprint(schema: pa.Schema, splits: Mapping[str, tuple[int, int]]) -> str:
    import hashlib

    doc = {
        "columns": [[f.name, contract_type(f.type)] for f in schema],
        "splits": {name: [rows, f"{h:016x}"] for name, (rows, h) in sorted(splits.items())},
    }
    return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
