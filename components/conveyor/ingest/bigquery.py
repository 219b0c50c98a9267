"""Ingest a BigQuery table or query result into a Dataset artifact.

The split is computed inside BigQuery (see `conveyor.io.split`) and the result materialized
server-side in one staging table (`<project>.<staging_dataset>.ingest_<id>`, deleted afterwards,
with a one-day expiration in case this process dies first). Rows then stream back through the
BigQuery Storage Read API as Arrow record batches (optionally several streams at once, each
by its own thread into its own Parquet shards; or, with `read_method="rest"`, through
`tabledata.list` pages) into Parquet shards, so memory stays bounded whatever the table's size.

Everything that can be checked is checked before a byte is written: the table exists, the query
parses (a dry run), every column has a contract type, the split key is usable, and neither the
result nor any split is empty.

No parameter can smuggle SQL in: values travel as query parameters, names (project, dataset,
table, split key, parameter names) are validated before they are put between backticks, and a
`query` must be one statement (checked by a lexical scan before anything is sent, because the
emulator even executes the scripts it is asked to dry-run). That statement is only ever run
wrapped as a subquery, `(\n<query>\n)`, so it can only read.

Column names come out exactly as the source's schema (the dry run) gives them. BigQuery column
names are case-insensitive and unique ignoring case, and the BigQuery emulator lower-cases the
columns of the split query, so the columns read back are matched to the dry run's ignoring case
(`conveyor.ingest.core.restore_names`); names that do not match even so are refused.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from conveyor import gcp
from conveyor.errors import EmptyDataError, InputError, QueryError, SchemaError, SourceNotFoundError
from conveyor.gcp import retry
from conveyor.gcp.sql import (
    DATASET_NAME,
    PROJECT_ID,
    TableRef,
    WrappedQuery,
    bigquery_parameters,
    error_message,
    parse_table_id,
    single_statement,
    wrap_query,
)
from conveyor.ingest.core import IngestResult, check_column_names, restore_names, route
from conveyor.io.dataset_writer import DatasetWriter
from conveyor.io.split import BUCKET_COLUMN, SPLIT_COLUMN, SplitSpec

READ_METHODS = ("storage", "rest")
#: Storage Read streams asked for by default (BigQuery may give fewer: one for a small table).
#: Several (`read_streams`) are read at once, each by its own thread that splits and writes its
#: rows into shards of its own (`DatasetWriter(parts=...)`): the Dataset lists them stream after
#: stream, so it holds the same rows in the same order as one stream's, whatever the timing.
#: One by default: 4 streams read 1.5x faster here, but their threads' malloc arenas keep memory
#: that grows with the rows (10 M rows: 1 stream 351 MB, 4 streams 590-1,140 MB by allocator
#: setting; 1 M: 319 and 480 MB; bench/RESULTS.md, "Parallel Storage Read streams").
READ_STREAMS = 1
_BUCKET_COLUMN = BUCKET_COLUMN
#: BigQuery column types and the contract type each becomes.
BIGQUERY_TYPES = {
    "INTEGER": "int64", "INT64": "int64",
    "FLOAT": "float64", "FLOAT64": "float64",
    "STRING": "string",
    "BOOLEAN": "bool", "BOOL": "bool",
    "TIMESTAMP": "timestamp",
    "DATE": "date",
}


@retry.giving_up("ingest from BigQuery")
def ingest_bigquery(
    output_path: str,
    *,
    table: str | None = None,
    query: str | None = None,
    query_parameters: Mapping[str, Any] | None = None,
    project: str | None = None,
    location: str | None = None,
    split_key: str | None = None,
    split_ratios: Mapping[str, float] | None = None,
    staging_dataset: str = "conveyor_staging",
    read_method: str = "storage",
    read_streams: int = READ_STREAMS,
) -> IngestResult:
    """Read a table (`table`) or a query's result (`query`, with `query_parameters`) into a Dataset
    artifact at `output_path`, split deterministically inside BigQuery; the Storage Read API
    path reads up to `read_streams` streams at once."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    start = time.monotonic()
    _check_arguments(table, query, read_method, read_streams, staging_dataset, project)
    spec = SplitSpec.parse(split_ratios, split_key)
    params = bigquery_parameters(query_parameters)
    given = query or None  # as the user wrote it: errors give positions in this text
    if query:
        query = single_statement(query)
        if not query:
            raise InputError("query: holds no statement")
    client = gcp.bigquery_client(project, location)
    project = client.project
    source_sql, where, source = _source(client, table, query, query_parameters, project)
    source.update(project=project, split=spec.describe())

    job_config = bigquery.QueryJobConfig(query_parameters=params, use_query_cache=False)
    schema = _dry_run_schema(client, source_sql, params, where, given)
    arrow_schema = _contract_schema(schema, where)
    spec.check_key_type(arrow_schema, where)

    _create_staging(client, project, staging_dataset, location)
    tmp = TableRef(project, staging_dataset, f"ingest_{uuid.uuid4().hex[:16]}")
    phases = {"check": time.monotonic() - start}
    try:
        mark = time.monotonic()
        _materialize(client, tmp, source_sql, arrow_schema, spec, job_config, where, given)
        phases["materialize"] = time.monotonic() - mark
        mark = time.monotonic()
        streams = (_storage_streams(tmp, read_streams) if read_method == "storage"
                   else [lambda: _read_rest(client, tmp)])
        info, bytes_read = _read_into(output_path, streams, arrow_schema, spec, source, where)
        phases["read"] = time.monotonic() - mark
        return IngestResult(info, bytes_read, time.monotonic() - start, phases)
    finally:
        try:
            client.delete_table(str(tmp), not_found_ok=True,
                                retry=retry.bigquery().with_timeout(10))
        except gexc.GoogleAPIError:
            pass  # it expires in a day anyway


def _check_arguments(table: str | None, query: str | None, read_method: str, read_streams: int,
                     staging_dataset: str, project: str | None) -> None:
    """What can be refused before BigQuery is asked anything."""
    if bool(table) == bool(query):
        raise InputError("give exactly one of table or query "
                         f"(table={table!r}, query={'<set>' if query else query!r})")
    if read_method not in READ_METHODS:
        raise InputError(f"read_method: {read_method!r} is not one of {READ_METHODS}")
    if not isinstance(read_streams, int) or isinstance(read_streams, bool) or read_streams < 1:
        raise InputError(f"read_streams: expected a whole number >= 1, got {read_streams!r}")
    if not DATASET_NAME.match(staging_dataset or ""):
        raise InputError(f"staging_dataset: {staging_dataset!r} is not a valid dataset name")
    if project and not PROJECT_ID.match(project):
        raise InputError(f"project: {project!r} is not a valid project id")


def _source(client, table: str | None, query: str | None,
            query_parameters: Mapping[str, Any] | None,
            project: str) -> tuple[str, str, dict[str, Any]]:
    """The SQL that reads the source, where errors say it came from, and the Dataset's record
    of the source (a table must exist)."""
    if table:
        ref = parse_table_id(table, project)
        _check_table_exists(client, ref)
        return (f"SELECT * FROM {ref.sql}", f"table {ref}",
                {"type": "bigquery", "table": str(ref)})
    assert query is not None  # `_check_arguments`: exactly one of table and query
    return (query, "query",
            {"type": "bigquery", "query": query, "query_parameters": dict(query_parameters or {})})


def _create_staging(client, project: str, staging_dataset: str, location: str | None) -> None:
    from google.cloud import bigquery

    staging = bigquery.Dataset(f"{project}.{staging_dataset}")
    if location:
        staging.location = location
    client.create_dataset(staging, exists_ok=True, retry=retry.bigquery())


def _materialize(client, tmp: TableRef, source_sql: str, arrow_schema: pa.Schema,
                 spec: SplitSpec, job_config, where: str, given: str | None = None) -> None:
    """The source's rows with their split, in the staging table `tmp` (expiring in a day);
    refused when the result or a split is empty. `given`: the user's query as written, whose
    positions errors report."""
    from google.cloud import bigquery

    wrapped = wrap_query(f"""
                CREATE OR REPLACE TABLE {tmp.sql}
                OPTIONS (expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 1 DAY))
                AS SELECT * EXCEPT ({_BUCKET_COLUMN}),
                          {spec.sql_split(_BUCKET_COLUMN)} AS {SPLIT_COLUMN}
                FROM (SELECT src.*, {spec.sql_bucket(arrow_schema.names, where)} AS {_BUCKET_COLUMN}
                      FROM (\n""", source_sql, "\n) AS src)", given)
    try:
        _run(client, wrapped.sql, job_config, where, wrapped if given else None)
    except QueryError as exc:
        raise _with_emulator_hint(exc, arrow_schema.names) from None
    counts = {row["split"]: row["n"] for row in _run(
        client, f"SELECT {SPLIT_COLUMN} AS split, COUNT(*) AS n FROM {tmp.sql} GROUP BY 1",
        bigquery.QueryJobConfig(use_query_cache=False), where)}
    _check_counts(counts, spec, where)


def _read_into(output_path: str, streams: list, arrow_schema: pa.Schema, spec: SplitSpec,
               source: dict[str, Any], where: str) -> tuple[Any, int]:
    """Every stream's rows split into the Dataset at `output_path` (several streams at once,
    each into its own part); the Dataset's info and the serialized bytes read."""
    expected = [*arrow_schema.names, SPLIT_COLUMN]
    with DatasetWriter(output_path, arrow_schema, spec.names, source, where=where,
                       parts=max(1, len(streams))) as writer:
        def write(part: int, batches) -> int:
            return _write_stream(writer, part, batches, spec, expected, where)

        if len(streams) <= 1:
            bytes_read = sum(write(0, s()) for s in streams)
        else:
            bytes_read = sum(in_parallel(streams, write))
    return writer.committed, bytes_read


def _write_stream(writer: DatasetWriter, part: int, batches, spec: SplitSpec,
                  expected: list[str], where: str) -> int:
    """Split and write one stream's rows into its own part; its serialized bytes."""
    size_read, names = 0, {}
    for batch, size in batches:
        size_read += size
        found = tuple(batch.schema.names)
        if found not in names:
            names[found] = restore_names(found, expected, where)
        if list(found) != names[found]:
            batch = batch.rename_columns(names[found])
        route(batch, spec, writer, part)
    return size_read


def source_schema(*, table: str | None = None, query: str | None = None,
                  query_parameters: Mapping[str, Any] | None = None, project: str | None = None,
                  location: str | None = None) -> dict[str, str]:
    """The columns a table or query would give (name -> contract type), by a dry run: no rows
    are read and nothing is billed. Raises what ingest would for a missing table or bad SQL."""
    if bool(table) == bool(query):
        raise InputError("give exactly one of table or query "
                         f"(table={table!r}, query={'<set>' if query else query!r})")
    client = gcp.bigquery_client(project, location)
    if table:
        ref = parse_table_id(table, client.project)
        _check_table_exists(client, ref)
        sql, where = f"SELECT * FROM {ref.sql}", f"table {ref}"
    else:
        assert query is not None  # exactly one of table and query, checked above
        sql, where = single_statement(query), "query"
        if not sql:
            raise InputError("query: holds no statement")
    fields = _dry_run_schema(client, sql, bigquery_parameters(query_parameters), where,
                             query or None)
    return {f.name: BIGQUERY_TYPES.get(f.field_type, f.field_type) for f in fields}


def _check_table_exists(client, ref: TableRef) -> None:
    from google.api_core.exceptions import NotFound

    try:
        client.get_table(str(ref), retry=retry.bigquery())
    except NotFound:
        try:
            client.get_dataset(f"{ref.project}.{ref.dataset}", retry=retry.bigquery())
        except NotFound:
            raise SourceNotFoundError(
                f"table: BigQuery dataset {ref.project}.{ref.dataset} not found "
                f"(while looking for table {ref})") from None
        raise SourceNotFoundError(f"table: BigQuery table {ref} not found") from None


def _run(client, sql: str, job_config, where: str, wrapped: WrappedQuery | None = None) -> list:
    """The rows of `sql`; BigQuery's errors as conveyor's, positions in the user's query when
    `wrapped` says where it sits in `sql`."""
    from google.api_core import exceptions as gexc

    try:
        job = client.query(sql, job_config=job_config, retry=retry.bigquery(),
                           job_retry=retry.bigquery_job())
        return list(job.result(retry=retry.bigquery(), job_retry=retry.bigquery_job()))
    except gexc.NotFound as exc:
        raise SourceNotFoundError(f"{where}: BigQuery: {error_message(exc, wrapped)}") from None
    except gexc.BadRequest as exc:
        message = error_message(exc, wrapped)
        raise QueryError(f"{where}: BigQuery rejected the query: {message}") from None


def _dry_run_schema(client, source_sql: str, params: list, where: str,
                    given: str | None = None) -> list:
    """The columns `source_sql` gives, by a dry run. `given`: the user's query as written (of
    which `source_sql` is the statement): an error's position is reported in it."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    wrapped = wrap_query("SELECT * FROM (\n", source_sql, "\n)", given)
    explained = wrapped if given else None
    config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False, query_parameters=params)
    try:
        job = client.query(wrapped.sql, job_config=config, retry=retry.bigquery())
    except gexc.NotFound as exc:
        raise SourceNotFoundError(f"{where}: BigQuery: {error_message(exc, explained)}") \
            from None
    except gexc.BadRequest as exc:
        message = error_message(exc, explained)
        raise QueryError(f"{where}: BigQuery rejected the query: {message}") from None
    return list(job.schema or [])


def _with_emulator_hint(exc: QueryError, names: list[str]) -> QueryError:
    """`exc`, explained when it is the emulator's known failure on non-ASCII upper-case names."""
    odd = [n for n in names if any(not c.isascii() and c != c.lower() for c in n)]
    if not (odd and gcp.emulated()):
        return exc
    return QueryError(
        f"{exc}; the BigQuery emulator (bqemulator) lower-cases the column names of the split "
        f"query and then cannot find those with non-ASCII upper-case letters ({odd}); real "
        "BigQuery can. On the emulator, load the data with other names for those columns")


def _contract_schema(fields: list, where: str) -> pa.Schema:
    from conveyor.io.dataset import CONTRACT_TYPES

    if not fields:
        raise SchemaError(f"{where}: BigQuery reported no columns")
    check_column_names([f.name for f in fields], where)
    out = []
    for f in fields:
        ctype = BIGQUERY_TYPES.get(f.field_type)
        if f.mode == "REPEATED" or ctype is None:
            kind = f"ARRAY<{f.field_type}>" if f.mode == "REPEATED" else f.field_type
            raise SchemaError(
                f"{where}: column {f.name!r} has BigQuery type {kind}, which a conveyor Dataset "
                f"cannot hold (supported: {', '.join(sorted(set(BIGQUERY_TYPES.values())))}); "
                "CAST it or leave it out of the query"
            )
        out.append(pa.field(f.name, CONTRACT_TYPES[ctype], nullable=f.mode != "REQUIRED"))
    return pa.schema(out)


def _check_counts(counts: Mapping[str, int], spec: SplitSpec, where: str) -> None:
    total = sum(counts.values())
    if total == 0:
        raise EmptyDataError(f"{where}: the result has no rows; nothing to ingest")
    empty = [n for n in spec.names if not counts.get(n)]
    if empty:
        shown = ", ".join(f"{n}={counts.get(n, 0)}" for n in spec.names)
        raise EmptyDataError(
            f"{where}: split(s) {empty} would be empty ({shown} of {total} rows); use more rows, "
            "other split_ratios, or a split_key with more distinct values"
        )


def _storage_streams(ref: TableRef, streams: int = READ_STREAMS) -> list:
    """The table's Storage Read streams (BigQuery may give fewer than `streams`), each as a
    callable returning an iterator of (batch, serialized bytes) pairs."""
    from google.cloud.bigquery_storage_v1 import types

    client = gcp.bigquery_read_client()
    session = client.create_read_session(
        parent=f"projects/{ref.project}",
        read_session=types.ReadSession(
            table=f"projects/{ref.project}/datasets/{ref.dataset}/tables/{ref.table}",
            data_format=types.DataFormat.ARROW,
        ),
        max_stream_count=max(1, streams),
        retry=retry.policy(),
    )
    if not session.streams:
        return []
    schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))

    def read(stream) -> Iterator[tuple[pa.RecordBatch, int]]:
        for response in client.read_rows(stream.name, retry=retry.policy()):
            data = response.arrow_record_batch.serialized_record_batch
            yield pa.ipc.read_record_batch(pa.py_buffer(data), schema), len(data)

    return [lambda s=s: read(s) for s in session.streams]


def in_parallel(sources: list, consume) -> list:
    """Run `consume(i, source())` for every source at once, each in its own thread; their
    results in source order. The first error stops the others at their next item (`consume`
    gets an iterator that ends early once another thread failed) and is raised here."""
    import threading

    failed = threading.Event()
    results: list = [None] * len(sources)
    errors: list[BaseException] = []

    def guarded(items):
        try:
            for item in items:
                if failed.is_set():
                    return
                yield item
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator over a read_rows stream: cancels the RPC
                close()

    def run(i: int, source) -> None:
        try:
            results[i] = consume(i, guarded(source()))
        except BaseException as exc:  # raised in the caller's thread
            errors.append(exc)
            failed.set()

    threads = [threading.Thread(target=run, args=(i, s), daemon=True, name=f"read-stream-{i}")
               for i, s in enumerate(sources)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _read_rest(client, ref: TableRef) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Stream a table through `tabledata.list` pages (slow; for comparison and fallbacks)."""
    rows = client.list_rows(str(ref), page_size=50_000, retry=retry.bigquery())
    for batch in rows.to_arrow_iterable(bqstorage_client=None):
        yield batch, batch.nbytes
