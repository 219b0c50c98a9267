"""A CSV file read in blocks by pyarrow's streaming reader, with errors that name what is wrong.

pyarrow infers each column's type from the first block (`block_size` bytes) and converts every
later block to it. A value that does not fit fails with "In CSV column #3: CSV conversion error
to int64: invalid value '...'": a column number, whatever the header calls it, and the value
whole. A row with too many fields fails with "Expected 4 columns, got 5: <the row>". `CsvBatches`
reads the same way (the same memory bound) and turns these into conveyor's errors:

- a value that does not fit (`SchemaError`): the column by its header name and type, the value
  (a short excerpt), the rows read before the block that holds it, where the type came from,
  and what to do;
- a row that does not parse (`InputError`): its field count against the header's, an excerpt of
  the row, the rows read before it;
- anything else pyarrow says about the file: its first 80 characters.

The header's names are read from the first bytes of the stream as they pass (`_Recording`), so
an error in the very first block (before pyarrow gives a schema) names its column too.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from conveyor.errors import InputError, SchemaError, excerpt

_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError)
_CONVERSION = re.compile(r"In CSV column #(\d+): CSV conversion error to (.+?): "
                         r"invalid value '(.*)'$", re.S)
_FIELDS = re.compile(r"Expected (\d+) columns, got (\d+): (.*)$", re.S)
#: The first bytes of the file kept to read the header's names from.
_HEAD_BYTES = 1 << 20


class CsvBatches:
    """The record batches of a CSV file or stream; see the module docstring.

    `source` is a path or a readable binary file object (closed by the caller); `where` names
    the file in messages; `column_types` fixes the columns' types (by name) instead of inferring
    them; `types_from` says where the types come from ("the first file"), for messages."""

    def __init__(self, source: str | Path | Any, where: str, *, block_size: int,
                 delimiter: str = ",", column_types: pa.Schema | None = None,
                 types_from: str = "the file"):
        import pyarrow.csv as pcsv

        self.where, self.block_size, self.delimiter = where, block_size, delimiter
        self.types_from = types_from if column_types is not None else "the file"
        self.rows = 0  # rows read so far
        self._owned = open(source, "rb") if isinstance(source, (str, Path)) else None
        self._stream = _Recording(self._owned if self._owned is not None else source)
        self.schema: pa.Schema | None = None
        try:
            self._reader = pcsv.open_csv(
                self._stream, read_options=pcsv.ReadOptions(block_size=block_size),
                parse_options=pcsv.ParseOptions(delimiter=delimiter),
                convert_options=pcsv.ConvertOptions(column_types=column_types,
                                                    strings_can_be_null=True))
        except _ERRORS as exc:
            self.close()
            raise self._error(exc) from None
        self.schema = self._reader.schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                try:
                    batch = self._reader.read_next_batch()
                except StopIteration:
                    return
                except _ERRORS as exc:
                    raise self._error(exc) from None
                self.rows += batch.num_rows
                yield batch
        finally:
            self.close()

    def close(self) -> None:
        """Close the file this object opened (a file object given stays the caller's)."""
        if self._owned is not None:
            self._owned.close()

    def _error(self, exc: Exception) -> InputError:
        """pyarrow's error as conveyor's: named column, short excerpts, what to do."""
        text = str(exc)
        block = _size(self.block_size)
        where = (f"after row {self.rows:,} (line {self.rows + 2:,} or later)" if self.rows
                 else f"in the first {block}")
        found = _CONVERSION.search(text)
        if found:
            number, kind, value = int(found.group(1)), found.group(2), found.group(3)
            column = f"column {excerpt(self._name(number))} ({kind})"
            if kind == "null":
                return SchemaError(
                    f"{self.where}: {column}: invalid value {excerpt(value)} {where}: the column "
                    f"is empty in the first {block} of {self.types_from}, so it was read as "
                    "all-NULL; put a row with a value for it among the first rows, or give the "
                    "data as Parquet with the column's type")
            return SchemaError(
                f"{self.where}: {column}: invalid value {excerpt(value)} {where}; the column's "
                f"type ({kind}) comes from the first {block} of {self.types_from}, and every "
                "later value must fit it: fix or remove that value, or give the data as "
                "Parquet with the column's type (e.g. string)")
        found = _FIELDS.search(text)
        if found:
            return InputError(
                f"{self.where}: a row {where} has {found.group(2)} fields where the header has "
                f"{found.group(1)} ({excerpt(found.group(3))}); check the delimiter "
                f"({self.delimiter!r}) and the quoting")
        return InputError(f"{self.where}: not readable as CSV {where}: "
                          f"{excerpt(' '.join(text.split()), 80)}")

    def _name(self, number: int) -> str:
        """Column `number`'s name: from the schema, else the header's bytes, else `#number`."""
        names = self.schema.names if self.schema is not None else self._stream.header(
            self.delimiter)
        return names[number] if number < len(names) else f"#{number}"


def _size(size: int) -> str:
    return f"{size / (1 << 20):g} MiB" if size >= 1 << 20 else f"{size:,} bytes"


class _Recording(io.RawIOBase):
    """A readable binary stream keeping its first `_HEAD_BYTES` bytes as they pass, for the
    header's names (pyarrow reads the stream once; a Cloud Storage stream cannot be re-read)."""

    def __init__(self, raw: Any):
        super().__init__()
        self._raw, self._head = raw, bytearray()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = bytes(self._raw.read(size))
        if len(self._head) < _HEAD_BYTES:
            self._head += data[:_HEAD_BYTES - len(self._head)]
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def header(self, delimiter: str) -> list[str]:
        """The names of the first row of what passed so far ([] if none)."""
        text = bytes(self._head).decode("utf-8-sig", errors="replace")
        try:
            return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
        except csv.Error:
            return []
