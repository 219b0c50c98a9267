"""Parquet files that are not Datasets: a source's files, prediction logs, load-job uploads,
query results written to a file. With `conveyor.io.dataset` (a Dataset's shards), the only place
conveyor touches `pyarrow.parquet` (tests/architecture/test_parquet_only_in_io.py), so the
format's options and its errors are chosen once.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq


def open_batches(source: str | os.PathLike[str] | IO[bytes], batch_size: int
                 ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A Parquet file's schema, read from its footer at once (so an unreadable file fails
    here, with pyarrow's ArrowInvalid or OSError), and its rows as a lazy stream of record
    batches of at most `batch_size` rows."""
    pf = pq.ParquetFile(source)
    return pf.schema_arrow, pf.iter_batches(batch_size=batch_size)


def read_table(source: bytes | str | os.PathLike[str]) -> pa.Table:
    """A whole Parquet file, from its bytes or a path (ArrowInvalid or OSError if unreadable)."""
    return pq.read_table(io.BytesIO(source) if isinstance(source, bytes) else source)


def buffer(table: pa.Table, compression: str | None = None) -> io.BytesIO:
    """`table` as a Parquet file in memory, rewound: what a BigQuery load job or an upload
    reads. `compression`: pyarrow's codec name (default: pyarrow's, snappy)."""
    out = io.BytesIO()
    if compression is None:
        pq.write_table(table, out)
    else:
        pq.write_table(table, out, compression=compression)
    out.seek(0)
    return out


def writer(path: str | os.PathLike[str], schema: pa.Schema) -> pq.ParquetWriter:
    """A writer of a Parquet file at `path`, one `write(table)` per chunk, then `close()`."""
    return pq.ParquetWriter(path, schema)
