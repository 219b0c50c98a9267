"""The statistics of a Dataset that came from BigQuery, computed inside BigQuery.

`bigquery_statistics(dataset)` sends one GoogleSQL query over the Dataset's source (the table or
the query, with its parameters, as recorded in `dataset.json`'s `source` by ingest) and returns
the same `DatasetStatistics` the Parquet path (`conveyor.stats.columns.compute_statistics`)
computes from the rows, for every split: no row leaves BigQuery.

The split is ingest's own: ingest split inside BigQuery with `SplitSpec.sql_bucket` and
`sql_split` (`ABS(MOD(FARM_FINGERPRINT(key), 10000))`, the key being the split key cast to
STRING, else the row's columns cast to STRING and joined with '|'), and the Dataset records that
rule (`source.split`), so the same SQL puts every row in the same split here. The row count of
each split is compared with the Dataset's: a source that changed since ingest (rows added,
deleted or edited) raises `SourceChangedError` rather than describing other data.

What each figure is, against the Parquet path:
- rows, count, nulls, NaN, +-inf, zeros, finite: `COUNT`/`COUNTIF`, exact (equal);
- min, max, mean, standard deviation of the finite values: `MIN`/`MAX`/`AVG`/`VAR_POP` in
  FLOAT64 (equal up to floating-point summation order, ~1e-12 relative);
- the value sample behind quantiles, histograms and drift: a uniform sample without replacement
  of `SAMPLE_SIZE` finite values, as the Parquet path keeps, drawn by the lowest row priority
  `FARM_FINGERPRINT('conveyor.sample|' || the row's columns as STRING)`: deterministic for the
  same rows, equal to the Parquet sample (all values) when a split has at most `SAMPLE_SIZE`
  finite values, another uniform sample of the same size above (quantiles then agree within the
  sampling error, ~1/sqrt(SAMPLE_SIZE) of rank);
- value frequencies (strings, bools, int64): exact `COUNT(*) ... GROUP BY` value, the
  `MAX_TRACKED_VALUES` most frequent kept; equal when a column has at most that many distinct
  values. Beyond, both paths mark the column `truncated`, but this one keeps the most frequent
  values (the Parquet path keeps the first seen);
- temporal min/max from `UNIX_DATE`/`UNIX_MICROS` (exact), the sample in days since 1970, and
  the mean and standard deviation of those day numbers (`AVG`/`VAR_POP` in FLOAT64, as numbers).

Every column name is quoted once with backticks in the innermost SELECT and given a positional
alias (`k0`, `k1`, ...), so mixed-case, keyword and unicode names need nothing more (and the
emulator's habit of lower-casing computed result columns cannot touch them).

One query statement, one job: a per-split aggregate of every column, and a per-(split, column,
value) count of the categorical ones, joined per split. BigQuery may read the source once for
each of the two aggregations (the CTE is not materialized); the bytes are those of the columns.
Functions used exist in BigQuery and in the emulator (bqemulator 1.4, DuckDB): `APPROX_TOP_COUNT`
is avoided (the emulator returns its values without counts), and so is `ARRAY_AGG(... IGNORE NULLS
... LIMIT n)` (the emulator cannot translate it): samples aggregate non-NULL placeholders ordered
after the real values, cut to the finite count in Python.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from conveyor.errors import InputError, QueryError, SourceNotFoundError
from conveyor.io.dataset import Dataset
from conveyor.stats.columns import (
    CATEGORICAL,
    MAX_TRACKED_VALUES,
    NUMERIC,
    SAMPLE_SIZE,
    ColumnStatistics,
    DatasetStatistics,
    Sample,
    SplitStatistics,
)

#: Above this many rows, validate's `statistics_source="auto"` takes the statistics of a Dataset
#: that came from BigQuery from BigQuery: the Parquet pass is ~1-2 M rows/s per process here, so
#: 5 M rows is where the query (a few seconds of BigQuery) starts to save minutes.
AUTO_MIN_ROWS = 5_000_000
#: Whether "auto" takes BigQuery's statistics on an emulator (the local stack) too. It does not:
#: there the aggregate query is the slow path (10 M reference rows on bqemulator: 862 s, where
#: reading 1 M rows took 43 s on the same loaded machine), so auto reads the rows.
AUTO_ON_EMULATOR = False
SALT = "conveyor.sample|"


class SourceChangedError(InputError):
    """The Dataset's BigQuery source no longer holds the rows the Dataset was ingested from."""


def from_bigquery(dataset: Dataset) -> bool:
    """Whether the Dataset records a BigQuery table or query as its source, with ingest's split."""
    source = dataset.info.source or {}
    return (source.get("type") == "bigquery" and bool(source.get("table") or source.get("query"))
            and isinstance(source.get("split"), Mapping))


def _split_spec(source: Mapping[str, Any], where: str):
    """Ingest's `SplitSpec` back from the `describe()` it recorded."""
    from conveyor.io.split import SplitSpec

    split = source.get("split") or {}
    buckets = split.get("buckets")
    if not isinstance(buckets, Mapping) or not buckets:
        raise InputError(f"{where}: the Dataset's source records no split buckets "
                         f"(source.split = {split!r}); statistics_source='rows' reads the rows")
    names = tuple(buckets)
    upper = tuple(int(buckets[n][1]) for n in names)
    key = split.get("key")
    key = None if not key or key == "<row content>" else key
    return SplitSpec(names, upper, key)


def _source_sql(source: Mapping[str, Any], default_project: str) -> tuple[str, list, str]:
    """The source as a SELECT, its query parameters and how messages name it."""
    from conveyor.gcp.sql import bigquery_parameters, parse_table_id, single_statement

    if source.get("table"):
        ref = parse_table_id(str(source["table"]), source.get("project") or default_project,
                             "source.table")
        return f"SELECT * FROM {ref.sql}", [], f"table {ref}"
    sql = single_statement(str(source["query"]))
    return sql, bigquery_parameters(source.get("query_parameters") or {}), "query"


def _finite(x: str, ctype: str) -> str:
    """A SQL condition true for a finite, non-NULL value (NULL for NULL)."""
    if ctype == "float64":
        return f"(NOT IS_NAN({x}) AND NOT IS_INF({x}))"
    return f"({x} IS NOT NULL)"


def build_query(columns: Sequence[tuple[str, str]], spec, source_sql: str,
                where: str = "source", sample_size: int = SAMPLE_SIZE,
                max_values: int = MAX_TRACKED_VALUES) -> str:
    """The statistics query over `source_sql` for `columns` ((name, contract type) pairs), split
    by `spec` (a `SplitSpec`). One row per split and categorical column (one per split when there
    is none); `parse_rows` reads it back."""
    from conveyor.gcp.sql import quote_column

    names = [n for n, _ in columns]
    row = [f"IFNULL(CAST({quote_column(n, where)} AS STRING), '')" for n in names]
    row_string = row[0] if len(row) == 1 else f"ARRAY_TO_STRING([{', '.join(row)}], '|')"
    select = [f"{spec.sql_split(spec.sql_bucket(names, where))} AS split",
              f"FARM_FINGERPRINT(CONCAT('{SALT}', {row_string})) AS p"]
    select += [f"{quote_column(n, where)} AS k{i}" for i, n in enumerate(names)]

    aggs, cats = ["COUNT(*) AS rows_n"], []
    for i, (_, ctype) in enumerate(columns):
        k = f"k{i}"
        aggs.append(f"COUNT({k}) AS {k}_count")
        if ctype in ("int64", "float64"):
            ok = _finite(k, ctype)
            x = f"IF({ok}, CAST({k} AS FLOAT64), NULL)"
            if ctype == "float64":
                aggs += [f"COUNTIF(IS_NAN({k})) AS {k}_nan", f"COUNTIF(IS_INF({k})) AS {k}_inf"]
            aggs += [f"COUNTIF({ok}) AS {k}_finite", f"COUNTIF({k} = 0) AS {k}_zeros",
                     f"AVG({x}) AS {k}_mean",
                     f"VAR_POP({x}) AS {k}_var", f"MIN({x}) AS {k}_min", f"MAX({x}) AS {k}_max",
                     f"ARRAY_AGG(IF({ok}, CAST({k} AS FLOAT64), 0.0) ORDER BY IF({ok}, 0, 1), p "
                     f"LIMIT {sample_size}) AS {k}_sample"]
        elif ctype in ("date", "timestamp"):
            unix = f"UNIX_DATE({k})" if ctype == "date" else f"UNIX_MICROS({k})"
            days = (f"CAST({unix} AS FLOAT64)" if ctype == "date"
                    else f"CAST({unix} AS FLOAT64) / 86400000000.0")
            aggs += [f"MIN({unix}) AS {k}_min", f"MAX({unix}) AS {k}_max",
                     f"AVG({days}) AS {k}_dmean", f"VAR_POP({days}) AS {k}_dvar",
                     f"ARRAY_AGG(IFNULL({unix}, 0) ORDER BY IF({k} IS NULL, 1, 0), p "
                     f"LIMIT {sample_size}) AS {k}_sample"]
        if ctype in ("string", "bool", "int64"):
            cats.append(f"STRUCT({i} AS c, CAST({k} AS STRING) AS v)")

    sql = (f"WITH src AS (\n  SELECT {', '.join(select)}\n  FROM (\n{source_sql}\n  ) AS s\n),\n"
           f"agg AS (\n  SELECT split, {', '.join(aggs)}\n  FROM src GROUP BY split\n)")
    if not cats:
        return sql + "\nSELECT * FROM agg"
    return sql + (
        f",\ncats AS (\n  SELECT split, u.c AS c, u.v AS v, COUNT(*) AS n\n"
        f"  FROM src, UNNEST([{', '.join(cats)}]) AS u\n"
        f"  WHERE u.v IS NOT NULL GROUP BY split, u.c, u.v\n),\n"
        f"tops AS (\n  SELECT split, c, COUNT(*) AS distinct_n,\n"
        f"    ARRAY_AGG(STRUCT(v AS v, n AS n) ORDER BY n DESC, v LIMIT {max_values}) AS top\n"
        f"  FROM cats GROUP BY split, c\n)\n"
        f"SELECT agg.*, tops.c AS cat, tops.distinct_n AS distinct_n, tops.top AS top\n"
        f"FROM agg LEFT JOIN tops ON agg.split = tops.split")


def _value(text: str, ctype: str) -> Any:
    if ctype == "bool":
        return text.lower() == "true"
    if ctype == "int64":
        return int(text)
    return text


def parse_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
               max_values: int = MAX_TRACKED_VALUES) -> dict[str, SplitStatistics]:
    """The query's result rows as conveyor statistics, per split."""
    out: dict[str, SplitStatistics] = {}
    for row in rows:
        name = row["split"]
        if name not in out:
            out[name] = SplitStatistics(int(row["rows_n"]), _columns(row, columns))
        cat = row.get("cat")
        if cat is None:
            continue
        column, ctype = columns[int(cat)]
        stats = out[name].columns[column]
        stats.values = {_value(item["v"], ctype): int(item["n"]) for item in row["top"] or []}
        stats.truncated = int(row["distinct_n"]) > max_values
    return out


def _columns(row: Mapping[str, Any], columns: Sequence[tuple[str, str]]
             ) -> dict[str, ColumnStatistics]:
    rows = int(row["rows_n"])
    out = {}
    for i, (name, ctype) in enumerate(columns):
        k = f"k{i}"
        stats = ColumnStatistics(name, ctype)
        stats.count = int(row[f"{k}_count"])
        stats.nulls = rows - stats.count
        if stats.kind == NUMERIC:
            stats.finite = int(row[f"{k}_finite"])
            stats.zeros = int(row[f"{k}_zeros"])
            if ctype == "float64":
                stats.nan, stats.inf = int(row[f"{k}_nan"]), int(row[f"{k}_inf"])
            values = np.asarray(row[f"{k}_sample"] or [], dtype=np.float64)[: stats.finite]
            stats.sample = Sample(values=values)
            if stats.finite:
                stats.mean = float(row[f"{k}_mean"])
                stats.m2 = float(row[f"{k}_var"] or 0.0) * stats.finite
                stats.min, stats.max = float(row[f"{k}_min"]), float(row[f"{k}_max"])
            if ctype == "int64":
                stats.values = {}  # filled from the value counts (none: all NULL)
        elif stats.kind == CATEGORICAL:
            stats.values = {}
        else:
            unit = pa.date32() if ctype == "date" else pa.timestamp("us", tz="UTC")
            per_day = 1 if ctype == "date" else 86_400_000_000
            values = np.asarray(row[f"{k}_sample"] or [], dtype=np.float64)[: stats.count]
            stats.sample = Sample(values=values / per_day)
            stats.finite = stats.count  # day numbers: every non-NULL value has one
            if stats.count:
                stats.min = pa.scalar(int(row[f"{k}_min"]), unit).as_py()
                stats.max = pa.scalar(int(row[f"{k}_max"]), unit).as_py()
                stats.mean = float(row[f"{k}_dmean"])
                stats.m2 = float(row[f"{k}_dvar"] or 0.0) * stats.count
        out[name] = stats
    return out


def bigquery_statistics(dataset: Dataset, splits: Sequence[str] | None = None,
                        project: str | None = None) -> DatasetStatistics:
    """Statistics of the named splits (default all) of a Dataset ingested from BigQuery, from one
    query over its source (see the module docstring). Raises `InputError` when the Dataset did
    not come from BigQuery, `SourceChangedError` when its source no longer gives its splits."""
    from conveyor import gcp

    if not from_bigquery(dataset):
        kind = (dataset.info.source or {}).get("type")
        raise InputError(f"statistics_source: 'bigquery' needs a Dataset ingested from BigQuery; "
                         f"dataset {dataset.path} came from {kind!r}; use 'rows' or 'auto'")
    source = dataset.info.source
    columns = [(c.name, c.type) for c in dataset.info.columns]
    where = "statistics"
    spec = _split_spec(source, where)
    client = gcp.bigquery_client(source.get("project") or project)
    source_sql, params, where = _source_sql(source, client.project)
    sql = build_query(columns, spec, source_sql, where)
    start = time.monotonic()
    rows = _run(client, sql, params, where)
    found = parse_rows(rows, columns)
    chosen = list(splits) if splits else dataset.splits
    counts = {n: found[n].rows if n in found else 0 for n in dataset.splits}
    expected = {n: dataset.split(n).rows for n in dataset.splits}
    if counts != expected:
        raise SourceChangedError(
            f"statistics: BigQuery {where} now gives {counts} rows per split, the Dataset was "
            f"ingested with {expected}: the source changed since ingest, so its statistics would "
            "describe other rows; use statistics_source='rows' (or ingest again)")
    print(f"statistics: {sum(counts.values())} rows of {where} summarized inside BigQuery "
          f"in {time.monotonic() - start:.1f} s", flush=True)
    return DatasetStatistics({n: found[n] for n in chosen}, dataset.info.fingerprint)


def _run(client, sql: str, params: list, where: str) -> list[dict]:
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    from conveyor.gcp import retry

    config = bigquery.QueryJobConfig(query_parameters=params, use_query_cache=False)
    try:
        job = client.query(sql, job_config=config, retry=retry.bigquery(),
                           job_retry=retry.bigquery_job())
        result = job.result(retry=retry.bigquery(), job_retry=retry.bigquery_job())
        return [dict(r.items()) for r in result]
    except gexc.NotFound as exc:
        raise SourceNotFoundError(f"statistics: {where}: BigQuery: {_message(exc)}") from None
    except gexc.BadRequest as exc:
        raise QueryError(f"statistics: {where}: BigQuery rejected the statistics query: "
                         f"{_message(exc)}") from None


def _message(exc) -> str:
    errors = getattr(exc, "errors", None) or []
    if errors and isinstance(errors[0], Mapping) and errors[0].get("message"):
        return str(errors[0]["message"])
    return str(getattr(exc, "message", exc)).splitlines()[0]


def relative_difference(a: float | None, b: float | None) -> float:
    """|a - b| / max(|a|, |b|) (0 when both are 0 or both None, inf when one is None)."""
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale else 0.0
