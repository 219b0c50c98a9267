"""Where the traffic comes from: the prediction log's date partitions (local or gs://), a
BigQuery table or query, and which of them the one `traffic` parameter names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from conveyor.errors import InputError, SourceNotFoundError
from conveyor.io.location import GcsLocation, LocalLocation, Location
from conveyor.monitor.served import Served
from conveyor.monitor.traffic import Traffic, accumulate
from conveyor.monitor.window import Window

_QUERY = re.compile(r"^\s*(\(\s*)*(select|with)\b", re.IGNORECASE)
_TABLE_ID = re.compile(r"^`?([A-Za-z0-9_.:-]+\.)?[A-Za-z0-9_]+\.[\w-]+`?$")


# -- reading logs --------------------------------------------------------------------------------

def _log_files(prefix: str, window: Window) -> Iterator[tuple[str, bytes | str]]:
    """(name, local path or bytes) of each log file in the window's date partitions: the
    `*.parquet` files under `date=<day>/` that are not hidden (`.`/`_`), local or gs://."""
    root = Location.parse(prefix)
    if isinstance(root, LocalLocation) and not root.path.is_dir():
        raise SourceNotFoundError(f"traffic: the prediction log folder {prefix} does not exist")
    for day in window.dates():
        folder = root / f"date={day}"
        try:
            names = folder.list()
        except SourceNotFoundError:  # only a gs:// listing raises it: the bucket is missing
            bucket = root.bucket_name if isinstance(root, GcsLocation) else root.uri
            raise SourceNotFoundError(f"traffic: bucket gs://{bucket} not found") from None
        for rel in names:
            name = rel.rsplit("/", 1)[-1]
            if name.endswith(".parquet") and not name.startswith((".", "_")):
                file = folder / rel
                if isinstance(file, LocalLocation):
                    yield file.uri, file.uri  # read from disk by pyarrow, not into memory
                else:
                    yield file.uri, file.read_bytes()


def read_log(prefix: str, window: Window, served: Served) -> Traffic:
    """Statistics of the prediction log rows in the window, file by file."""
    from conveyor.io import parquet

    source = prefix.rstrip("/") if prefix != "/" else prefix
    traffic = Traffic.start(served, source)
    for name, data in _log_files(source, window):
        try:
            table = parquet.read_table(data)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"traffic: {name} is not a readable Parquet file: {exc}") from None
        traffic.files += 1
        accumulate(traffic, table, window, "timestamp", name, set())
    return traffic


# -- reading BigQuery ------------------------------------------------------------------------

def read_bigquery(window: Window, served: Served, *, table: str = "", query: str = "",
                  timestamp_column: str = "timestamp", project: str = "",
                  location: str = "") -> Traffic:
    """Statistics of the rows of a BigQuery table or query whose `timestamp_column` is in the
    window (filtered inside BigQuery)."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    from conveyor import gcp
    from conveyor.gcp import retry
    from conveyor.gcp.sql import error_message, parse_table_id, single_statement, wrap_query

    client = gcp.bigquery_client(project or None, location or None)
    if table:
        ref = parse_table_id(table, client.project, "traffic")
        source_sql, where = f"SELECT * FROM {ref.sql}", f"table {ref}"
    else:
        source_sql, where = single_statement(query), "traffic query"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", timestamp_column or ""):
        raise InputError(f"timestamp_column: {timestamp_column!r} is not a column name")
    wrapped = wrap_query("SELECT * FROM (\n", source_sql, f"\n) AS traffic WHERE "
                         f"`{timestamp_column}` >= @start AND `{timestamp_column}` < @end",
                         query or None)
    sql, explained = wrapped.sql, (wrapped if not table else None)  # positions in the query
    config = bigquery.QueryJobConfig(use_query_cache=False, query_parameters=[
        bigquery.ScalarQueryParameter("start", "TIMESTAMP", window.start),
        bigquery.ScalarQueryParameter("end", "TIMESTAMP", window.end)])
    traffic = Traffic.start(served, str(ref) if table else "query")
    try:
        job = client.query(sql, job_config=config, retry=retry.bigquery(),
                           job_retry=retry.bigquery_job())
        rows = job.result(retry=retry.bigquery(), job_retry=retry.bigquery_job(),
                          page_size=50_000)
        for batch in rows.to_arrow_iterable(bqstorage_client=None):
            traffic.files += 1
            accumulate(traffic, pa.Table.from_batches([batch]), window, timestamp_column,
                        where, set())
    except gexc.NotFound as exc:
        raise SourceNotFoundError(f"{where}: BigQuery: {error_message(exc, explained)}") \
            from None
    except gexc.BadRequest as exc:
        message = error_message(exc, explained)
        raise InputError(f"{where}: BigQuery rejected the query: {message}") from None
    return traffic


def traffic_source(traffic: str) -> tuple[str, str]:
    """('log', prefix), ('table', id) or ('query', sql) from the one `traffic` parameter."""
    text = (traffic or "").strip()
    if not text:
        raise InputError("traffic: empty; expected a prediction log prefix (a local folder or "
                         "gs://bucket/path), a BigQuery table (project.dataset.table) or a query")
    if text.startswith("bq://"):
        return "table", text[5:]
    if text.startswith("gs://") or Path(text).exists() or "/" in text:
        return "log", text
    if _QUERY.match(text):
        return "query", text
    if _TABLE_ID.match(text):
        return "table", text.strip("`")
    raise InputError(f"traffic: {text!r} is neither an existing folder, a gs:// prefix, a "
                     "BigQuery table id (dataset.table) nor a SELECT query")

