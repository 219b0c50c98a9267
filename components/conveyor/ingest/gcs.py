"""Ingest CSV or Parquet files from Cloud Storage (`gs://bucket/path/*.csv`) into a Dataset.

Files are listed with google-cloud-storage, matched against the glob(s), and streamed one by one
(`Blob.open`, chunked downloads) through pyarrow's incremental CSV reader or Parquet reader, so
memory stays bounded whatever the files' size. The split uses the same rule as BigQuery ingest
(`conveyor.io.split`): with the same `split_key`, a row lands in the same split either way.

The schema is that of the first file (for CSV, the types pyarrow infers from its first block);
every later file must have the same columns with values of those types, or the error names the
file and column. A value that does not fit its column's type, in any block of any file, is
named with its column, the rows read before it and what to do (`conveyor.io.csv_file`). Column
names are kept exactly as the first file has them (case, spaces,
unicode); an empty name, a name given twice or two that differ only in case are refused
(`conveyor.ingest.core.check_column_names`). Nothing is left behind on error: the Dataset writer
removes what it wrote.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from conveyor import gcp
from conveyor.errors import InputError, SchemaError, SourceNotFoundError
from conveyor.gcp import retry
from conveyor.ingest.core import IngestResult, check_column_names, route
from conveyor.io.csv_file import CsvBatches
from conveyor.io.dataset import contract_schema, contract_type
from conveyor.io.dataset_writer import DatasetWriter
from conveyor.io.split import SPLIT_COLUMN, SplitSpec

FORMATS = ("auto", "csv", "parquet")
_EXTENSIONS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}
_CSV_BLOCK = 4 << 20


def parse_uris(uris: str | Sequence[str]) -> list[tuple[str, str]]:
    """(bucket, object glob) pairs from `gs://` URIs (a list, or one string separated by commas)."""
    items = [u.strip() for u in (uris.split(",") if isinstance(uris, str) else uris)]
    items = [u for u in items if u]
    if not items:
        raise InputError("uris: no gs:// URI given")
    out = []
    for uri in items:
        if not uri.startswith("gs://"):
            raise InputError(f"uris: {uri!r} is not a gs:// URI")
        bucket, _, pattern = uri[5:].partition("/")
        if not bucket or not pattern:
            raise InputError(f"uris: {uri!r} names no object (expected gs://bucket/path/*.csv)")
        out.append((bucket, pattern))
    return out


def _format_of(name: str, file_format: str) -> str:
    if file_format != "auto":
        return file_format
    for ext, fmt in _EXTENSIONS.items():
        if name.lower().endswith(ext):
            return fmt
    raise InputError(f"file_format: cannot tell the format of gs://…/{name} from its name "
                     f"(known: {', '.join(_EXTENSIONS)}); set file_format to csv or parquet")


def list_files(client, uris: str | Sequence[str]) -> list:
    """The blobs matching the URIs, sorted by bucket and name, without duplicates."""
    from google.api_core.exceptions import NotFound

    blobs: dict[tuple[str, str], Any] = {}
    for bucket, pattern in parse_uris(uris):
        prefix = pattern
        for ch in "*?[":
            prefix = prefix.split(ch)[0]
        try:
            listed = list(client.list_blobs(bucket, prefix=prefix, retry=retry.storage()))
        except NotFound:
            raise SourceNotFoundError(f"uris: bucket gs://{bucket} not found") from None
        matched = [b for b in listed if not b.name.endswith("/")
                   and fnmatch.fnmatchcase(b.name, pattern)]
        if not matched:
            raise SourceNotFoundError(f"uris: no files match gs://{bucket}/{pattern}")
        for b in matched:
            blobs[(bucket, b.name)] = b
    return [blobs[k] for k in sorted(blobs)]


def _uri(blob) -> str:
    return f"gs://{blob.bucket.name}/{blob.name}"


def _check_columns(blob, found: pa.Schema, schema: pa.Schema | None) -> None:
    """Every file must have the first file's columns (no more, no fewer) and their types."""
    if schema is None:
        return
    names = found.names
    if names == schema.names:
        for field in found:
            want = contract_type(schema.field(field.name).type)
            if contract_type(field.type) != want:
                raise SchemaError(f"{_uri(blob)}: column {field.name!r} has type {field.type}, "
                                  f"but {want} in the first file")
        return
    missing = [n for n in schema.names if n not in names]
    extra = [n for n in names if n not in schema.names]
    case_only = sorted(n.casefold() for n in missing) == sorted(n.casefold() for n in extra)
    raise SchemaError(
        f"{_uri(blob)}: its columns differ from the first file's ({', '.join(schema.names)}): "
        f"missing {missing}, extra {extra}"
        + ("; same columns in another order" if not (missing or extra)
           else "; the names differ only in case (column names are kept exactly)"
           if case_only else "")
    )


def _csv_batches(blob, schema: pa.Schema | None, delimiter: str) -> Iterator[pa.RecordBatch]:
    """The file's batches; the first file's `schema` fixes a later file's types. A value or
    row that does not fit is named by `CsvBatches` (column, value, rows before it)."""
    raw = blob.open("rb", retry=retry.storage())
    stream = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "gzip") \
        if blob.name.lower().endswith(".gz") else raw
    try:
        reader = CsvBatches(stream, _uri(blob), block_size=_CSV_BLOCK, delimiter=delimiter,
                            column_types=schema, types_from="the first file")
        _check_columns(blob, reader.schema, schema)
        yield from reader
    finally:
        raw.close()


def _parquet_batches(blob, schema: pa.Schema | None) -> Iterator[pa.RecordBatch]:
    from conveyor.io import parquet

    raw = blob.open("rb", retry=retry.storage())
    try:
        try:
            found, batches = parquet.open_batches(raw, batch_size=128 * 1024)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{_uri(blob)}: not a readable Parquet file ({exc})") from None
        _check_columns(blob, found, schema)
        yield from batches
    finally:
        raw.close()


@retry.giving_up("ingest from Cloud Storage")
def ingest_gcs(
    output_path: str,
    *,
    uris: str | Sequence[str],
    file_format: str = "auto",
    project: str | None = None,
    split_key: str | None = None,
    split_ratios: dict[str, float] | None = None,
    csv_delimiter: str = ",",
) -> IngestResult:
    """Read the files matching `uris` into a Dataset artifact at `output_path`."""
    start = time.monotonic()
    if file_format not in FORMATS:
        raise InputError(f"file_format: {file_format!r} is not one of {FORMATS}")
    if len(csv_delimiter) != 1:
        raise InputError(f"csv_delimiter: must be one character, got {csv_delimiter!r}")
    spec = SplitSpec.parse(split_ratios, split_key)
    client = gcp.storage_client(project)
    blobs = list_files(client, uris)
    formats = {_format_of(b.name, file_format) for b in blobs}
    if len(formats) > 1:
        raise InputError(f"uris: the files mix formats {sorted(formats)}; ingest them separately")
    fmt = formats.pop()

    def batches(blob, schema):
        return (_csv_batches(blob, schema, csv_delimiter) if fmt == "csv"
                else _parquet_batches(blob, schema))

    first = batches(blobs[0], None)
    try:
        head = next(first)
    except StopIteration:
        raise SourceNotFoundError(f"{_uri(blobs[0])}: the file has no rows") from None
    where = f"gs files {', '.join(f'gs://{b}/{p}' for b, p in parse_uris(uris))}"
    raw_schema = head.schema
    check_column_names(raw_schema.names, _uri(blobs[0]))
    schema = contract_schema(raw_schema, _uri(blobs[0]))
    spec.check_key_type(schema, _uri(blobs[0]))
    source = {"type": "gcs", "uris": [_uri(b) for b in blobs], "format": fmt,
              "split": spec.describe()}

    def all_batches() -> Iterator[pa.RecordBatch]:
        yield head
        yield from first
        for blob in blobs[1:]:
            yield from batches(blob, raw_schema)

    with DatasetWriter(output_path, schema, spec.names, source, where=where) as writer:
        names = pa.array(spec.names)
        for batch in all_batches():
            if batch.num_rows == 0:
                continue
            index = spec.assign(batch)
            batch = batch.append_column(SPLIT_COLUMN, names.take(pa.array(index)))
            route(batch, spec, writer)
    return IngestResult(writer.committed, sum(b.size or 0 for b in blobs), time.monotonic() - start)
