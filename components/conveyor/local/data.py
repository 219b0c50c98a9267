"""Data in and out of the local stack (or whatever `conveyor.gcp` points at), for people.

- `load_table(file, "dataset.table")`: a CSV or Parquet file into a BigQuery table; the schema
  is the file's (column names exactly, types mapped onto conveyor's contract types). The rows go
  to a staging table first and the target is then created from it in one statement, so the
  target is never half-loaded, and an existing target is refused unless `replace`.
- `upload(file, "gs://bucket/path")`: a file into Cloud Storage (the bucket is created if need
  be); an existing object is refused unless `replace`. `ensure_buckets(names)` creates buckets
  (`conveyor local bucket`, and `conveyor run --local` for the buckets its gs:// parameters
  name: `buckets_named`).
- `query(sql)`: a bounded number of rows to print, or every row into a CSV or Parquet file.
  Rows are paged through the REST API (`tabledata.list`): the Storage Read API cannot read a
  query's anonymous result table on the emulator, and the client's own `to_dataframe()` would
  try to reach Google's Storage API for multi-page results.
- `fetch("gs://bucket/prefix", folder)`: every object under a prefix (a pushed model version)
  into a local folder, e.g. for `saved_model_cli`; the folder appears whole or not at all.

Every client comes from `conveyor.gcp`. Bad input raises `conveyor.errors.InputError` naming the
file, table, object or option.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pyarrow as pa

from conveyor import gcp
from conveyor.errors import InputError, QueryError, SchemaError, SourceNotFoundError
from conveyor.gcp import hints, retry

FILE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: Contract type -> BigQuery type (every contract type has exactly one).
BIGQUERY_TYPE = {"int64": "INT64", "float64": "FLOAT64", "string": "STRING", "bool": "BOOL",
                 "timestamp": "TIMESTAMP", "date": "DATE"}
_CHUNK_ROWS = 200_000
_CSV_BLOCK = 16 << 20
#: Rows per REST page of a query result written to a file.
_PAGE_ROWS = 10_000


def file_format(path: Path, parameter: str = "FILE") -> str:
    """'csv' or 'parquet' from the file's name (the part of it that matters)."""
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{parameter}: cannot tell the format of {path} from its name "
                         f"(known: {', '.join(FILE_FORMATS)})")
    return fmt


def _batches(path: Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The file's schema (CSV: the types pyarrow infers from its first 16 MiB) and its rows."""
    if not path.is_file():
        raise SourceNotFoundError(f"FILE: {path} does not exist or is not a file")
    try:
        if file_format(path) == "csv":  # a value not fitting its column: named, with its rows
            from conveyor.io.csv_file import CsvBatches

            reader = CsvBatches(path, f"FILE: {path}", block_size=_CSV_BLOCK)
            assert reader.schema is not None  # set once the reader is open
            return reader.schema, iter(reader)
        from conveyor.io import parquet

        return parquet.open_batches(path, batch_size=_CHUNK_ROWS)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"FILE: {path} is not readable as {file_format(path)}: {exc}") from None


def table_schema(schema: pa.Schema, where: str) -> pa.Schema:
    """The file's columns, names unchanged, as contract types (a column of NULLs only is
    STRING; a timestamp without a time zone is taken as UTC); other types are refused."""
    from conveyor.io.dataset import CONTRACT_TYPES, contract_type

    seen: dict[str, str] = {}
    fields = []
    for number, field in enumerate(schema, start=1):
        name = field.name
        if not name.strip():
            raise SchemaError(f"{where}: column {number} has an empty name {name!r}")
        if name.casefold() in seen:
            raise SchemaError(f"{where}: columns {seen[name.casefold()]!r} and {name!r} are the "
                              "same name to BigQuery (column names are case-insensitive)")
        seen[name.casefold()] = name
        ctype = "string" if pa.types.is_null(field.type) else contract_type(field.type)
        if ctype is None:
            raise SchemaError(f"{where}: column {name!r} has type {field.type}, which has no "
                              f"BigQuery column type here (supported: {', '.join(CONTRACT_TYPES)})")
        fields.append(pa.field(name, CONTRACT_TYPES[ctype]))
    return pa.schema(fields)


def _cast(batch: pa.RecordBatch, schema: pa.Schema, where: str, offset: int) -> pa.Table:
    try:
        return pa.Table.from_batches([batch]).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(f"{where}: rows from {offset} on do not fit the columns' types ({exc}); "
                          "the types come from the start of the file") from None


def _table_exists(client, table_id: str) -> bool:
    from google.api_core.exceptions import NotFound

    try:
        client.get_table(table_id, retry=retry.bigquery())
        return True
    except NotFound:
        return False


def load_table(path: str | os.PathLike[str], table_id: str, *, replace: bool = False,
               project: str | None = None) -> int:
    """Load a CSV or Parquet file into BigQuery table `[project.]dataset.table`; its row count.

    The dataset is created if missing. The rows are loaded as Parquet chunks into a staging
    table, then `CREATE TABLE` (or, with `replace`, `CREATE OR REPLACE TABLE`) makes the target
    from it in one statement, and the staging table is dropped."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    from conveyor.gcp.sql import parse_table_id
    from conveyor.io import parquet

    path = Path(path)
    client = gcp.bigquery_client(project)
    ref = parse_table_id(table_id, client.project, parameter="--table")
    if not replace and _table_exists(client, str(ref)):
        raise InputError(f"--table: {ref} already exists; give --replace to replace it")
    raw_schema, batches = _batches(path)
    schema = table_schema(raw_schema, str(path))
    bq_schema = [bigquery.SchemaField(f.name, BIGQUERY_TYPE[_contract(f.type)], mode="NULLABLE")
                 for f in schema]
    dataset = bigquery.Dataset(f"{ref.project}.{ref.dataset}")
    client.create_dataset(dataset, exists_ok=True, retry=retry.bigquery())
    staging = f"{ref.project}.{ref.dataset}.{ref.table}__load_{uuid.uuid4().hex[:12]}"
    # Parquet loads into a table that does not exist fail on the emulator: create it first.
    client.create_table(bigquery.Table(staging, schema=bq_schema), retry=retry.bigquery())
    rows = 0
    try:
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                        schema=bq_schema,
                                        write_disposition=bigquery.WriteDisposition.WRITE_APPEND)
        for chunk in _chunks(batches, schema, str(path)):
            client.load_table_from_file(parquet.buffer(chunk), staging, job_config=config).result(
                retry=retry.bigquery())
            rows += chunk.num_rows
        verb = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE"
        try:
            client.query(f"{verb} {ref.sql} AS SELECT * FROM `{staging}`",
                         retry=retry.bigquery()).result(retry=retry.bigquery())
        except gexc.Conflict:
            raise InputError(f"--table: {ref} already exists; give --replace to replace it") \
                from None
        except gexc.BadRequest as exc:
            if not replace and "already exists" in str(exc):
                raise InputError(f"--table: {ref} already exists; give --replace to replace "
                                 "it") from None
            raise QueryError(f"--table: BigQuery refused to create {ref}: {exc}") from None
    finally:
        try:
            client.delete_table(staging, not_found_ok=True, retry=retry.bigquery())
        except gexc.GoogleAPIError:
            pass
    return rows


def _contract(arrow_type: pa.DataType) -> str:
    from conveyor.io.dataset import contract_type

    found = contract_type(arrow_type)
    if found is None:  # table_schema refuses such a column before any load
        raise InputError(f"no BigQuery column type for Arrow type {arrow_type}")
    return found


def _chunks(batches: Iterator[pa.RecordBatch], schema: pa.Schema,
            where: str) -> Iterator[pa.Table]:
    """The rows cast to `schema`, in tables of about `_CHUNK_ROWS` rows."""
    pending: list[pa.Table] = []
    size = offset = 0
    try:
        for batch in batches:
            pending.append(_cast(batch, schema, where, offset))
            size += batch.num_rows
            offset += batch.num_rows
            if size >= _CHUNK_ROWS:
                yield pa.concat_tables(pending)
                pending, size = [], 0
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # a later CSV block with another type
        raise SchemaError(f"{where}: rows from {offset} on do not fit the columns' types ({exc}); "
                          "the types come from the start of the file") from None
    if pending or offset == 0:
        yield pa.concat_tables(pending) if pending else schema.empty_table()


def parse_gs_uri(uri: str, parameter: str) -> tuple[str, str]:
    """(bucket, object name or prefix) of a gs:// URI."""
    if not uri.startswith("gs://"):
        raise InputError(f"{parameter}: {uri!r} is not a gs:// URI")
    bucket, _, name = uri[5:].partition("/")
    if not bucket:
        raise InputError(f"{parameter}: {uri!r} names no bucket (expected gs://bucket/path)")
    return bucket, name


#: A Cloud Storage bucket name (3-63 characters; dots allow up to 222).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def buckets_named(value) -> list[str]:
    """The buckets the gs:// URIs in a parameter value name (strings, inside lists and dicts
    too), in order, each once; malformed names are left to the step that reads them."""
    found: list[str] = []
    if isinstance(value, str):
        if value.startswith("gs://"):
            name = value[5:].split("/", 1)[0]
            if _BUCKET.fullmatch(name) and ".." not in name:
                found.append(name)
    elif isinstance(value, dict):
        for item in value.values():
            found += buckets_named(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found += buckets_named(item)
    return list(dict.fromkeys(found))


def ensure_buckets(names: list[str], project: str | None = None) -> list[str]:
    """Create each bucket of `names` that does not exist yet; the ones created."""
    from google.api_core.exceptions import Conflict

    client = gcp.storage_client(project)
    created = []
    for name in names:
        if client.bucket(name).exists(retry=retry.storage()):
            continue
        try:
            client.create_bucket(name, retry=retry.storage())
            created.append(name)
        except Conflict:  # made meanwhile by another process
            pass
    return created


def upload(path: str | os.PathLike[str], uri: str, *, replace: bool = False,
           project: str | None = None) -> str:
    """Upload a file to `gs://bucket/name` (to `.../<file name>` when the URI ends with '/');
    the object's URI. The bucket is created if missing; an existing object needs `replace`."""
    from google.api_core.exceptions import PreconditionFailed

    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"FILE: {path} does not exist or is not a file")
    bucket_name, name = parse_gs_uri(uri, "--gcs")
    if not name or name.endswith("/"):
        name += path.name
    client = gcp.storage_client(project)
    bucket = client.bucket(bucket_name)
    if not bucket.exists(retry=retry.storage()):
        client.create_bucket(bucket_name, retry=retry.storage())
    blob = bucket.blob(name)
    target = f"gs://{bucket_name}/{name}"
    # Create-only writes are enforced by the emulator for small uploads only: check first too.
    if not replace and blob.exists(retry=retry.storage()):
        raise InputError(f"--gcs: {target} already exists; give --replace to replace it")
    try:
        blob.upload_from_filename(str(path), if_generation_match=None if replace else 0)
    except PreconditionFailed:
        raise InputError(f"--gcs: {target} already exists; give --replace to replace it") \
            from None
    return target


@dataclasses.dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    total_rows: int


def _run_query(sql: str, project: str | None, **pages):
    """The result's row iterator (REST pages of `page_size`, at most `max_results` rows)."""
    from google.api_core import exceptions as gexc

    if not sql.strip():
        raise InputError("SQL: the query is empty")
    client = gcp.bigquery_client(project)
    try:
        job = client.query(sql, retry=retry.bigquery(), job_retry=retry.bigquery_job())
        return job.result(retry=retry.bigquery(), job_retry=retry.bigquery_job(), **pages)
    except gexc.NotFound as exc:
        message = f"SQL: BigQuery: {_message(exc)}"
        named = re.search(r"Not found: (?:Table|Dataset) ([\w.:-]+)", message)
        if named:
            table = named.group(1).replace(":", ".").rstrip(".")
            if table.startswith(f"{client.project}.") and table.count(".") == 2:
                table = table[len(client.project) + 1:]
            message += hints.missing_table(client, table) if "." in table else ""
        raise SourceNotFoundError(message) from None
    except gexc.BadRequest as exc:
        raise QueryError(f"SQL: BigQuery rejected the query: {_message(exc)}") from None


def _message(exc) -> str:
    from conveyor.gcp.sql import error_message

    return error_message(exc)


def query(sql: str, *, max_rows: int = 20, project: str | None = None) -> QueryResult:
    """The first `max_rows` rows of the query's result, and how many it has in all."""
    if max_rows < 0:
        raise InputError(f"--max-rows: must be 0 or more, got {max_rows}")
    rows = _run_query(sql, project, max_results=max_rows,
                      page_size=min(max(max_rows, 1), 10_000))
    got = [tuple(row.values()) for row in rows]
    columns = [f.name for f in rows.schema]
    return QueryResult(columns, got, rows.total_rows or len(got))


def query_to_file(sql: str, out: str | os.PathLike[str], *, replace: bool = False,
                  project: str | None = None) -> int:
    """Every row of the query's result into `out` (.csv or .parquet); the row count. The file
    is written beside its name and renamed into place, so it is whole or absent."""
    import pyarrow.csv as pcsv

    from conveyor.io import parquet

    out = Path(out)
    fmt = file_format(out, "--out")
    if out.exists() and not replace:
        raise InputError(f"--out: {out} already exists; give --replace to replace it")
    if not out.parent.is_dir():
        raise InputError(f"--out: folder {out.parent} does not exist")
    rows = _run_query(sql, project, page_size=_PAGE_ROWS)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    writer = None
    count = 0
    try:
        for batch in rows.to_arrow_iterable(bqstorage_client=None):
            if writer is None:
                writer = (pcsv.CSVWriter(tmp, batch.schema) if fmt == "csv"
                          else parquet.writer(tmp, batch.schema))
            writer.write(pa.Table.from_batches([batch]))
            count += batch.num_rows
        if writer is None:  # no rows: the columns only
            empty = rows.to_arrow(create_bqstorage_client=False)
            writer = (pcsv.CSVWriter(tmp, empty.schema) if fmt == "csv"
                      else parquet.writer(tmp, empty.schema))
            writer.write(empty)
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        tmp.unlink(missing_ok=True)
        raise
    return count


def fetch(uri: str, folder: str | os.PathLike[str], *, project: str | None = None) -> list[Path]:
    """Copy the object `uri`, or every object under the prefix `uri` (as a folder: `.../1` takes
    `.../1/...`, not `.../10/...`), into `folder`, keeping the paths below the prefix; the files
    written. `folder` must not exist or be empty; it is filled beside and renamed into place."""
    bucket_name, name = parse_gs_uri(uri, "URI")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"DIR: {folder} exists and is not an empty folder; give a new one")
    client = gcp.storage_client(project)
    from google.api_core.exceptions import NotFound

    bucket = client.bucket(bucket_name)
    try:
        single = bool(name) and not name.endswith("/") and bucket.blob(name).exists(
            retry=retry.storage())
        if single:
            blobs = [bucket.get_blob(name, retry=retry.storage())]
            base = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        else:
            base = name.rstrip("/") + "/" if name.strip("/") else ""
            blobs = [b for b in client.list_blobs(bucket_name, prefix=base, retry=retry.storage())
                     if not b.name.endswith("/")]
    except NotFound:
        raise SourceNotFoundError(f"URI: bucket gs://{bucket_name} not found") from None
    if not blobs:
        raise SourceNotFoundError(f"URI: no objects at {uri} (nor under {uri.rstrip('/')}/)")
    relative = []
    for blob in blobs:
        rel = PurePosixPath(blob.name[len(base):])
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise InputError(f"URI: object gs://{bucket_name}/{blob.name} would land outside "
                             f"{folder}; not fetched")
        relative.append((blob, rel))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for blob, rel in relative:
            target = tmp.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(target), retry=retry.storage())
        if folder.exists():
            folder.rmdir()  # empty, checked above
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [folder.joinpath(*rel.parts) for _, rel in relative]
