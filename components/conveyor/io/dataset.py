"""The Dataset artifact contract: one on-disk format for a table split into named splits.

Layout of a Dataset artifact folder (the KFP artifact's `.path`, local or a /gcs/ mount)::

    <path>/dataset.json                metadata, written last: its presence marks a complete dataset
    <path>/<split>/part-00000.parquet  Parquet shards of each split (train, eval, optional test...)

`dataset.json` holds the format tag, the column schema (name, contract type, nullable), per split
the row count, shard files and bytes, the source (table, query or URIs, with split settings) and
a content fingerprint. The fingerprint is independent of row order and shard boundaries: two
datasets with the same schema and the same rows in each split have the same fingerprint.

Contract types and their Arrow types: int64, float64, string, bool, timestamp (microseconds, UTC)
and date. Any other source type is refused with a `SchemaError` naming the column.

Every component reads and writes datasets only through this module and its writer,
`conveyor.io.dataset_writer` (no module outside conveyor/io/ imports pyarrow.parquet:
tests/architecture). Reading streams record batches (`Dataset.iter_batches`; one shard's columns
and row groups with `read_shard`, its row groups' sizes from the footer with
`Dataset.row_groups` / `shard_row_groups`), so no component needs a whole split in memory.
Writing is all-or-nothing: `DatasetWriter` writes `dataset.json` only after every shard is
closed, and on any error removes what it wrote, so a reader never sees a half-written dataset. A
writer killed before its commit leaves shards without `dataset.json`: readers refuse that folder,
and the next writer into it (a retried task) clears those shards and starts over.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from conveyor.errors import InputError, SchemaError
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
    def from_dict(cls, data: Mapping[str, Any], where: str = "dataset.json") -> DatasetInfo:
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
        schema = (self.schema if columns is None
                  else pa.schema([self.schema.field(c) for c in columns]))
        return pa.Table.from_batches(batches, schema=schema)
