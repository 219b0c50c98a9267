"""The validate report's overview: what was validated (the header's facts) and every column at a
glance, as Facets Overview shows a dataset.

- `facts`: the table or files the Dataset came from (`dataset.json`'s `source`), its
  fingerprint, the time (UTC) and the baseline drift was measured against;
- `overview`: one table of numeric columns (count, missing %, zeros %, mean, std, min, median,
  max), one of categorical columns (count, missing %, distinct, top values with their shares)
  and one of dates and times (count, missing %, min, median, max), a row per column and split
  (Facets' rows per dataset), read from the statistics already computed; columns that drifted
  against the baseline are marked;
- `excluded`: the columns left out of drift, skew and the charts, each once with its reason.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.reports.html import esc, num, short
from conveyor.stats.columns import CATEGORICAL, NUMERIC, ColumnStatistics, DatasetStatistics

TOP_VALUES = 3  # categories named per row, with their shares
STYLE = ("<style>.facts{margin:2px 0 8px;font-size:13px} .facts b{display:inline-block;"
         "min-width:78px;font-weight:600} tr.drifted td{background:#fff4e0} "
         "td.split{color:#555} td.top{max-width:420px}</style>")


def source_name(source: Mapping[str, Any] | None, path: str | Path) -> str:
    """How the title names what was validated: the BigQuery table, the query, the GCS files,
    else the Dataset's folder."""
    source = source or {}
    kind = source.get("type")
    if kind == "bigquery" and source.get("table"):
        return f"BigQuery table {short(source['table'])}"
    if kind == "bigquery":
        return "BigQuery query"
    if kind == "gcs" and source.get("uris"):
        uris = [str(u) for u in source["uris"]]
        if len(uris) == 1:
            return f"GCS file {short(uris[0])}"
        fmt = short(source.get("format") or "", 20)
        return f"GCS files {short(os.path.commonprefix(uris))}* ({len(uris)} {fmt} files)"
    return f"Dataset {Path(path).name}"


def facts(source: Mapping[str, Any] | None, path: str | Path, stats: DatasetStatistics,
          baseline: str | None, now: datetime.datetime | None = None) -> str:
    """The header's facts, a line each: table, fingerprint and rows, time (UTC), baseline."""
    source = source or {}
    table = esc(source_name(source, path))
    if source.get("type") == "bigquery" and source.get("query"):
        table += f": <code>{esc(short(' '.join(str(source['query']).split()), 160))}</code>"
    if source.get("project") and source.get("type") == "bigquery" and not source.get("table"):
        table += f" (project {esc(source['project'])})"
    rows = ", ".join(f"{esc(name)} {split.rows:,}" for name, split in stats.splits.items())
    when = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    lines = [("table", table),
             ("dataset", f"fingerprint <code>{esc(stats.fingerprint or 'unknown')}</code>; "
                         f"rows: {rows}"),
             ("validated", when.strftime("%Y-%m-%d %H:%M:%S UTC")),
             ("baseline", esc(baseline) if baseline else "no baseline (drift not measured)")]
    return "<div class='facts'>" + "<br>".join(
        f"<b>{name}:</b> {value}" for name, value in lines) + "</div>"


def _pct(part: int | None, whole: int) -> str:
    return "" if part is None else f"{part / whole:.1%}" if whole else "0.0%"


def _n(value: str) -> str:
    return f"<td class='num'>{value}</td>"


def _top(c: ColumnStatistics) -> str:
    shares = c.frequencies()
    return ", ".join(f"{esc(short(k, 40))} {shares[k]:.1%}" for k, _ in c.top(TOP_VALUES))


def _numeric_cells(c: ColumnStatistics) -> list[str]:
    cells = [num(c.count), _pct(c.nulls, c.rows), _pct(c.zeros, c.count)]
    figures = (c.mean, c.std, c.min, c.quantile(0.5), c.max) if c.finite else (None,) * 5
    extra = ", ".join(p for p in (f"{c.nan:,} NaN" if c.nan else "",
                                  f"{c.inf:,} inf" if c.inf else "") if p)
    return [_n(v) for v in cells] + [_n(num(v, 5)) for v in figures] + [_n(esc(extra))]


def _categorical_cells(c: ColumnStatistics) -> list[str]:
    distinct = "" if c.distinct is None else f"{c.distinct:,}{'+' if c.truncated else ''}"
    return [_n(num(c.count)), _n(_pct(c.nulls, c.rows)), _n(distinct),
            f"<td class='top'>{_top(c)}</td>"]


def _temporal_cells(c: ColumnStatistics) -> list[str]:
    median = c.quantile(0.5)
    when = "" if median is None else str(
        datetime.datetime(1970, 1, 1) + datetime.timedelta(days=median))[:19]
    return [_n(num(c.count)), _n(_pct(c.nulls, c.rows)), _n(esc(c.min)), _n(esc(when)),
            _n(esc(c.max))]


_TABLES = (  # kind, heading, headers after "column" and "split", cells
    (NUMERIC, "Numeric columns",
     ["count", "missing", "zeros", "mean", "std", "min", "median", "max", "NaN / inf"],
     _numeric_cells),
    (CATEGORICAL, "Categorical columns", ["count", "missing", "distinct", "top values (share)"],
     _categorical_cells),
    ("temporal", "Dates and times", ["count", "missing", "min", "median", "max"],
     _temporal_cells),
)


def _rows(columns: Sequence[str], stats: DatasetStatistics, cells, drifted: Collection[str],
          ) -> Iterable[str]:
    splits = list(stats.splits.items())
    for name in columns:
        present = [(s, split.columns[name]) for s, split in splits if name in split.columns]
        mark = " class='drifted'" if name in drifted else ""
        for i, (split, c) in enumerate(present):
            head = (f"<td rowspan='{len(present)}'><b>{esc(short(name))}</b>"
                    f"<br><span class='muted'>{esc(c.type)}</span></td>" if i == 0 else "")
            row = "".join(cells(c))
            yield f"<tr{mark}>{head}<td class='split'>{esc(split)}</td>{row}</tr>"


def overview(stats: DatasetStatistics, excluded: Collection[str] = (),
             drifted: Collection[str] = ()) -> list[str]:
    """The overview tables (module docstring), `excluded` columns left out."""
    if not stats.splits:
        return []
    first = next(iter(stats.splits.values()))
    kinds = {name: c.kind for name, c in first.columns.items() if name not in excluded}
    parts = ["<h2>Overview: every column at a glance</h2>",
             "<p class='muted'>a row per column and split; missing: NULLs of the rows; zeros: "
             "of the values; median from a uniform sample of up to 8,192 values; "
             + ("<span style='background:#fff4e0'>shaded</span>: drifted against the baseline"
                if drifted else "no column drifted") + "</p>"]
    for kind, heading, headers, cells in _TABLES:
        columns = [n for n, k in kinds.items() if k == kind]
        if not columns:
            continue
        if kind == NUMERIC and not any(c.nan or c.inf for s in stats.splits.values()
                                       for n, c in s.columns.items() if n in columns):
            headers, cells = headers[:-1], _no_extra
        parts.append(f"<h3>{esc(heading)} ({len(columns)})</h3>")
        parts.append("<table class='overview'><tr>" + "".join(
            f"<th>{esc(h)}</th>" for h in ["column", "split", *headers]) + "</tr>\n"
            + "\n".join(_rows(columns, stats, cells, drifted)) + "</table>")
    return parts


def _no_extra(c: ColumnStatistics) -> list[str]:
    return _numeric_cells(c)[:-1]


def excluded(columns: Mapping[str, str], stats: DatasetStatistics) -> list[str]:
    """The excluded columns, once each, with their reason."""
    if not columns:
        return []
    first = next(iter(stats.splits.values())) if stats.splits else None
    rows = []
    for name, reason in columns.items():
        c = first.columns.get(name) if first is not None else None
        rows.append(f"<tr><td><b>{esc(short(name))}</b></td>"
                    f"<td>{esc(c.type) if c is not None else ''}</td><td>{esc(reason)}</td></tr>")
    return ["<h3>Excluded columns (no drift, skew or chart; their other checks still run)</h3>",
            "<table><tr><th>column</th><th>type</th><th>why</th></tr>\n" + "\n".join(rows)
            + "</table>"]
