"""The Dataset artifact contract: one on-disk format for a table split into named splits.

Layout of a Dataset artifact folder (the KFP artifact's `.path`, local or a /gcs/ mount)::

    <path>/dataset.json                 metadata, written last: its presence marks a complete dataset
    <path>/<split>/part-00000.parquet   Parquet shards of each split (train, eval, optional test, ...)

`dataset.json` holds the format tag, the column schema (name, contract type, nullable), per split
the row count, shard files and bytes, the source (table, query or URIs, with split settings) and
a content fingerprint. The fingerprint is independent of row order and shard boundaries: two
datasets with the same schema and the same rows in each split have the same fingerprint.

Contract types and their Arrow types: int64, float64, string, bool, timestamp (microseconds, UTC)
and date. Any other source type is refused with a `SchemaError` naming the column.

Every component reads and writes datasets only through this module (no module outside
conveyor/io/ imports pyarrow.parquet: tests/architecture). Reading streams record batches
(`Dataset.iter_batches`; one shard's columns and row groups with `read_shard`, its row groups'
sizes from the footer with `Dataset.row_groups` / `shard_row_groups`), so no component needs a
whole split in memory. Writing is
all-or-nothing: `DatasetWriter` writes `dataset.json` only after every shard is closed, and on any
error removes what it wrote, so a reader never sees a half-written dataset. A writer killed
before its commit leaves shards without `dataset.json`: readers refuse that folder, and the next
writer into it (a retried task) clears those shards and starts over.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from conveyor.errors import EmptyDataError, InputError, SchemaError
from conveyor.version import __version__

FORMAT = "conveyor.dataset/v1"
METADATA_FILE = "dataset.json"
SPLIT_NAME_PATTERN = "lowercase letters, digits and '_', starting with a letter"

#: The contract's column types and the Arrow type each is stored as.
CONTRACT_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}

#: Default buffering before a row group is written, and rows per shard file.
ROW_GROUP_ROWS = 128 * 1024
SHARD_ROWS = 1024 * 1024


def contract_type(arrow_type: pa.DataType) -> str | None:
    """The contract type an Arrow type converts to without loss of meaning, or None."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t):
        return "float64"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_null(t):
        return None
    return None


def contract_schema(schema: pa.Schema, where: str) -> pa.Schema:
    """Map an Arrow schema onto contract types, or raise SchemaError naming the column.

    `where` names the source in the message (a table id, a file URI).
    """
    fields = []
    for field in schema:
        ctype = contract_type(field.type)
        if ctype is None:
            raise SchemaError(
                f"{where}: column {field.name!r} has type {field.type}, which a conveyor Dataset "
                f"cannot hold (supported: {', '.join(CONTRACT_TYPES)}); cast or drop it in the "
                "query or files"
            )
        fields.append(pa.field(field.name, CONTRACT_TYPES[ctype], nullable=field.nullable))
    names = [f.name for f in fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SchemaError(f"{where}: duplicate column names {duplicates}")
    return pa.schema(fields)


def check_split_names(names: Iterable[str], parameter: str = "split_ratios") -> list[str]:
    """Validate split names (they become folder names); return them as a list."""
    out = list(names)
    if not out:
        raise InputError(f"{parameter}: at least one split is required")
    for name in out:
        if not (isinstance(name, str) and name[:1].isalpha() and name.islower()
                and name.replace("_", "").isalnum() and name.isascii()):
            raise InputError(
                f"{parameter}: split name {name!r} is not valid ({SPLIT_NAME_PATTERN})"
            )
    return out


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    rows: int
    files: tuple[str, ...]
    bytes: int


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """The content of `dataset.json`."""

    columns: tuple[Column, ...]
    splits: Mapping[str, SplitInfo]
    source: Mapping[str, Any]
    fingerprint: str
    created_by: str = f"conveyor {__version__}"
    format: str = FORMAT

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.splits.values())

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, CONTRACT_TYPES[c.type], nullable=c.nullable) for c in self.columns]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created_by": self.created_by,
            "columns": [dataclasses.asdict(c) for c in self.columns],
            "splits": {
                name: {"rows": s.rows, "bytes": s.bytes, "files": list(s.files)}
                for name, s in self.splits.items()
            },
            "source": dict(self.source),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "dataset.json") -> "DatasetInfo":
        if data.get("format") != FORMAT:
            raise InputError(f"{where}: format is {data.get('format')!r}, expected {FORMAT!r}")
        try:
            return cls(
                columns=tuple(Column(**c) for c in data["columns"]),
                splits={
                    name: SplitInfo(rows=int(s["rows"]), files=tuple(s["files"]),
                                    bytes=int(s["bytes"]))
                    for name, s in data["splits"].items()
                },
                source=data.get("source", {}),
                fingerprint=data["fingerprint"],
                created_by=data.get("created_by", ""),
            )
        except (KeyError, TypeError) as exc:
            raise InputError(f"{where}: malformed dataset metadata ({exc!r})") from exc

    def summary(self) -> str:
        """A few human-readable lines: splits, rows, columns, fingerprint."""
        lines = [f"{self.rows} rows in {len(self.splits)} splits, {len(self.columns)} columns"]
        for name, s in self.splits.items():
            lines.append(f"  {name:<8} {s.rows:>10} rows  {len(s.files)} shard(s)  {s.bytes} bytes")
        lines.append("  columns: " + ", ".join(f"{c.name}:{c.type}" for c in self.columns))
        lines.append(f"  fingerprint: {self.fingerprint}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class RowGroup:
    """One row group of a shard file: the unit a reader can skip to or hand to a worker."""

    file: str | os.PathLike[str]
    index: int
    rows: int
    bytes: int  # uncompressed


def shard_row_groups(file: str | os.PathLike[str]) -> list[RowGroup]:
    """The row groups of one shard file of a split (`Dataset.files`), from its Parquet footer."""
    with pq.ParquetFile(file) as pf:
        meta = pf.metadata
        return [RowGroup(file, g, meta.row_group(g).num_rows, meta.row_group(g).total_byte_size)
                for g in range(meta.num_row_groups)]


def read_shard(file: str | os.PathLike[str], columns: Sequence[str] | None = None,
               batch_size: int = 64 * 1024, row_groups: Sequence[int] | None = None
               ) -> Iterator[pa.RecordBatch]:
    """Stream one shard file of a split (`Dataset.files`) as record batches of at most
    `batch_size` rows: only `columns` (None: all) and only `row_groups` (None: all), for
    readers that share a split out by file or row group (train's workers)."""
    with pq.ParquetFile(file) as pf:
        yield from pf.iter_batches(batch_size=batch_size, columns=columns,
                                   row_groups=row_groups)


class Dataset:
    """A committed Dataset artifact folder, read in streamed record batches."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        meta = self.path / METADATA_FILE
        if not meta.is_file():
            raise InputError(
                f"{self.path}: not a conveyor Dataset ({METADATA_FILE} missing: the folder is "
                "empty, or its writer did not finish)"
            )
        try:
            data = json.loads(meta.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{meta}: not valid JSON ({exc})") from exc
        self.info = DatasetInfo.from_dict(data, where=str(meta))

    @property
    def splits(self) -> list[str]:
        return list(self.info.splits)

    @property
    def schema(self) -> pa.Schema:
        return self.info.arrow_schema

    def split(self, name: str) -> SplitInfo:
        try:
            return self.info.splits[name]
        except KeyError:
            raise InputError(
                f"{self.path}: no split {name!r} (splits: {', '.join(self.splits)})"
            ) from None

    def files(self, split: str) -> list[Path]:
        return [self.path / f for f in self.split(split).files]

    def iter_batches(
        self, split: str, columns: Sequence[str] | None = None, batch_size: int = 64 * 1024
    ) -> Iterator[pa.RecordBatch]:
        """Stream a split's rows as record batches of at most `batch_size` rows."""
        if columns is not None:
            missing = [c for c in columns if c not in self.schema.names]
            if missing:
                raise InputError(
                    f"{self.path}: no column(s) {missing} (columns: {', '.join(self.schema.names)})"
                )
        for file in self.files(split):
            yield from read_shard(file, columns, batch_size)

    def row_groups(self, split: str) -> list[RowGroup]:
        """Every row group of a split, in the order its rows are read, from the shards'
        Parquet footers alone (no rows read)."""
        return [g for file in self.files(split) for g in shard_row_groups(file)]

    def read_table(self, split: str, columns: Sequence[str] | None = None) -> pa.Table:
        """A whole split in memory: for small data and tests; prefer `iter_batches`."""
        batches = list(self.iter_batches(split, columns))
        schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        return pa.Table.from_batches(batches, schema=schema)


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
            columns=tuple(Column(f.name, contract_type(f.type), f.nullable) for f in self.schema),
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
            except Exception:  # noqa: BLE001  (closing a broken writer must not mask the cause)
                pass
        if self._created:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            for child in self.path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

    def __enter__(self) -> "DatasetWriter":
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
