"""The validation report: one self-contained HTML page (inline CSS and SVG charts, no scripts,
no network), so it renders offline and in the Kubeflow UI's HTML viewer.

The header names what was validated (the BigQuery table, query or GCS files), the Dataset's
fingerprint, the time (UTC) and the baseline, with the verdict and its counts (drift counted per
column). Breakage first, then the overview of every column (`conveyor.validate.overview`, as
Facets Overview shows one) and the excluded columns (ids: no drift, skew or chart), then drift:
for every drifted column the baseline's and the current summary side by side (rows, null share,
mean, std, p5/p50/p95, min/max, top categories) with the one-line "mean 120 -> 180" figures, and
per feature a small chart of the current split beside the baseline and train beside eval
(histograms of the statistics' value samples for numbers, integers binned on integers, by day
for dates and timestamps; the top categories plus "other" for categories). Charts are capped at
`MAX_CHARTS` features (drifted, then skewed, then in column order); the page says how many were
left out. matplotlib is imported only when charts are drawn.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.reports.html import esc as _e
from conveyor.reports.html import page
from conveyor.reports.html import short as _short
from conveyor.reports.html import table as _table
from conveyor.stats.columns import NUMERIC, TEMPORAL, ColumnStatistics, DatasetStatistics
from conveyor.validate import overview
from conveyor.validate.checks import CheckResult
from conveyor.validate.drift import Distance, _as_categories

MAX_CHARTS = 24  # features with a chart (~35 kB and ~0.13 s each): a page stays under 2 MB
SIDE_CATEGORIES = 8


def series_of(label: str, c: ColumnStatistics):
    """The chart series of one column's statistics: category counts, or its number sample."""
    from conveyor.reports.charts import Series

    if _as_categories(c):
        return Series(label, counts=dict(c.values or {}), rows=c.rows, nulls=c.nulls)
    values = c.sample.values if c.sample is not None else None
    return Series(label, values=values, rows=c.rows, nulls=c.nulls)


def _chart_kind(columns: Sequence[ColumnStatistics]) -> str | None:
    if all(_as_categories(c) for c in columns):
        return "categorical"
    if all(c.kind == NUMERIC for c in columns):
        return "numeric"
    if all(c.kind == TEMPORAL for c in columns):
        return "temporal"
    return None  # a column whose type changed: the tables say so


def _drift_split(column: str, drift: Sequence[tuple[str, Distance]]) -> str | None:
    """The split whose drift of `column` is largest (drifted ones first)."""
    found = [(d.exceeded, d.value, s) for s, d in drift if d.column == column]
    return max(found)[2] if found else None


def _charted(stats: DatasetStatistics, drift, skew, excluded: Collection[str] = ()) -> list[str]:
    """The columns with a chart, drifted and skewed first; never an excluded one."""
    first = next(iter(stats.splits.values()))
    order = list(first.columns)
    drifted = [d.column for _, d in drift if d.exceeded]
    skewed = [d.column for d in skew if d.exceeded]
    return [c for c in dict.fromkeys([*drifted, *skewed, *order]) if c not in excluded]


def _feature_chart(index: int, column: str, result, stats: DatasetStatistics) -> str:
    from conveyor.reports import charts

    panels: list[tuple[str, str, list]] = []  # (kind, title, series)
    baseline = result.baseline_statistics
    split = _drift_split(column, result.drift) or ("train" if "train" in stats.splits
                                                   else next(iter(stats.splits)))
    current = stats.splits[split].columns.get(column)
    if current is None:
        return ""
    if baseline is not None:
        base = baseline.split(split).columns.get(column)
        kind = _chart_kind([base, current]) if base is not None else None
        if kind:
            panels.append((kind, f"{split} vs baseline",
                           [series_of("baseline", base), series_of(split, current)]))
    if "train" in stats.splits and "eval" in stats.splits:
        train, evaluation = (stats.splits[n].columns.get(column) for n in ("train", "eval"))
        if train is not None and evaluation is not None:
            kind = _chart_kind([train, evaluation])
            if kind:
                panels.append((kind, "train vs eval",
                               [series_of("train", train), series_of("eval", evaluation)]))
    if not panels:
        panels.append((_chart_kind([current]) or "numeric", split, [series_of(split, current)]))
    kind = panels[0][0]  # one kind per chart (a column that changed type keeps the first)
    kept = [(t, series) for k, t, series in panels if k == kind]
    svg = charts.render(charts.distributions, f"v{index}", kept, kind, legend=False,
                        name=f"distribution of {column}")
    legend = "; ".join(f"{_e(t)}: " + ", ".join(
        f"<span style='color:{color}'>&#9632;</span> {_e(s.label)} {s.rows:,} rows"
        + (f" ({s.nulls / s.rows:.1%} NULL)" if s.rows and s.nulls else "")
        for s, color in zip(series, charts.colors(len(series)))) for t, series in kept)
    return (f"<figure><figcaption><b>{_e(_short(column))}</b></figcaption>{svg}"
            f"<figcaption>{legend}</figcaption></figure>")


def _shares(side: dict[str, Any], key: str = "shares") -> str:
    return "<br>".join(f"{_e(_short(k, 40))} {v:.1%}"
                       for k, v in side.get(key, [])[:SIDE_CATEGORIES])


def _side_rows(figure: dict[str, Any]) -> list[list[Any]]:
    """Rows of baseline vs current figures (`drift.figures`) of one drifted column: numbers
    stay numbers (the table formats them), everything else is escaped here."""
    base, cur = figure.get("baseline", {}), figure.get("current", {})

    def cell(value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        return "" if value is None else _e(value)

    rows: list[list[Any]] = [
        ["rows", cell(base.get("rows")), cell(cur.get("rows"))],
        ["null share", f"{base.get('null_fraction', 0):.2%}", f"{cur.get('null_fraction', 0):.2%}"]]
    for key in ("mean", "std", "min", "p5", "p50", "p95", "max", "distinct"):
        b = base.get("quantiles", {}).get(key) if key.startswith("p") else base.get(key)
        c = cur.get("quantiles", {}).get(key) if key.startswith("p") else cur.get(key)
        if b is not None or c is not None:
            rows.append([key, cell(b), cell(c)])
    if base.get("shares") or cur.get("shares"):
        rows.append(["top categories", _shares(base), _shares(cur)])
    if figure.get("new_values"):
        rows.append(["new categories", "", _shares(figure, "new_values")])
    return rows


def render(*, title: str, result, policy: str, stats: DatasetStatistics,
           source: Mapping[str, Any] | None = None, dataset_path: str | Path = "") -> str:
    """The page for a `ValidationResult`: the header (what, when, against which baseline),
    breakage, the overview of every column, then drift with its figures and charts, skew and
    every check. `source`: the Dataset's record of where its rows came from."""
    checks: Sequence[CheckResult] = result.checks
    drift: Sequence[tuple[str, Distance]] = result.drift
    skew: Sequence[Distance] = result.skew
    broken = [c for c in checks if c.broken]
    soft = [c for c in checks if c.drifted]
    drifted = [(s, d) for s, d in drift if d.exceeded]
    excluded = getattr(result, "excluded", {}) or {}
    columns = _charted(stats, drift, skew, excluded) if stats.splits else []
    shown = columns[:MAX_CHARTS]
    chart = {column: _feature_chart(i, column, result, stats) for i, column in enumerate(shown)}
    by_column: dict[str, list[tuple[str, Distance]]] = {}
    for s, d in drifted:
        by_column.setdefault(d.column, []).append((s, d))
    warned = [c for c in checks if c.warned]
    parts = [overview.STYLE, *_header(title, result, policy, broken, soft, drifted),
             overview.facts(source, dataset_path, stats, result.baseline),
             *_breakage(broken), *_warnings(warned),
             *overview.overview(stats, excluded, by_column), *overview.excluded(excluded, stats),
             *_drift(result, drift),
             *_drifted_columns(result, by_column, chart),  # takes their charts out of `chart`
             *_expectations(soft), *_skew(result, skew),
             *_distributions(chart, len(shown), len(columns), bool(by_column)),
             *_all_checks(checks)]
    return page(title, parts)


def _header(title: str, result, policy: str, broken: Sequence[CheckResult],
            soft: Sequence[CheckResult], drifted: Sequence[tuple[str, Distance]]) -> list[str]:
    """The title, and the verdict with the counts (drift: columns, whatever the splits)."""
    checks = result.checks
    skewed = [d for d in result.skew if d.exceeded]
    verdict = ("<span class='verdict fail'>FAILED: broken data</span>" if broken else
               "<span class='verdict pass'>PASSED</span>")
    if drifted:
        verdict += " <span class='verdict drift'>DRIFTED</span>"
    return [f"<h1>{_e(title)}</h1>",
            f"<p>{verdict} "
            f"<span class='muted'>policy {_e(policy)}, drift policy {_e(result.drift_policy)}; "
            f"suite: {_e(result.suite.origin)}; "
            f"{sum(c.success for c in checks)}/{len(checks)} checks passed, "
            f"{len(broken)} broken, {len(soft)} expectation(s) drifted, "
            f"{sum(c.warned for c in checks)} warning(s), "
            f"{_drifted_count(drifted)}, {len(skewed)} skewed</span></p>"]


def _drifted_count(drifted: Sequence[tuple[str, Distance]]) -> str:
    """"3 column(s) drifted (a, b, c)": columns, not column x split pairs."""
    columns = list(dict.fromkeys(d.column for _, d in drifted))
    named = ", ".join(_short(c, 40) for c in columns[:8]) + (", ..." if len(columns) > 8 else "")
    return f"{len(columns)} column(s) drifted" + (f" ({_e(named)})" if columns else "")


def _failed_checks(failed: Sequence[CheckResult]) -> str:
    """Broken checks, or expectations not met: where, which rule, what was seen."""
    if not failed:
        return "<p class='muted'>none</p>"
    return _table(
        ["split", "column", "rule", "observed", "examples"],
        ([_e(c.split), _e(c.column or "(table)"), f"<code>{_e(c.rule)}</code>",
          _e(c.observed), _e(", ".join(map(repr, c.examples)))] for c in failed),
        [True] * len(failed))


def _breakage(broken: Sequence[CheckResult]) -> list[str]:
    return ["<h2>Breakage (stops the run under policy fail)</h2>", _failed_checks(broken)]


def _warnings(warned: Sequence[CheckResult]) -> list[str]:
    if not warned:
        return []
    return ["<h2>Warnings (reported, never a failure)</h2>", _failed_checks(warned)]


def _expectations(soft: Sequence[CheckResult]) -> list[str]:
    return ["<h2>Expected ranges and categories not met (drift, not failures)</h2>",
            _failed_checks(soft)]


def _drift(result, drift: Sequence[tuple[str, Distance]]) -> list[str]:
    """Every drift distance against the baseline, with its threshold and sampling noise."""
    parts = ["<h2>Drift against the baseline (reported, never breakage)</h2>",
             ("<p class='muted'>a feature drifts when its distance exceeds both its "
              "threshold and the distance sampling alone reaches (p 0.001) at these sizes</p>")]
    if not drift:
        return [*parts, "<p class='muted'>no baseline statistics given</p>"]
    compared = len({d.column for _, d in drift})
    parts.append(f"<p>{_drifted_count([(s, d) for s, d in drift if d.exceeded])} of {compared} "
                 "compared; a row per split and column below</p>")
    return [*parts, _table(
        ["split", "column", "metric", "distance", "threshold", "sampling noise", "drifted",
         "baseline -> current"],
        ([_e(s), _e(d.column), _e(d.metric), d.value, d.threshold, d.noise,
          "yes" if d.exceeded else "no",
          _e(result.figures.get(s, {}).get(d.column, {}).get("summary", ""))]
         for s, d in drift),
        [d.exceeded for _, d in drift])]


def _drifted_columns(result, by_column: dict[str, list[tuple[str, Distance]]],
                     chart: dict[str, str]) -> list[str]:
    """Each drifted column's baseline and current summaries side by side, with its chart (taken
    out of `chart`, so the distributions section does not draw it again)."""
    parts = ["<h2>Drifted columns: baseline and current side by side</h2>"] if by_column else []
    for column, found in by_column.items():
        s, d = max(found, key=lambda sd: sd[1].value)
        figure = result.figures.get(s, {}).get(column) or {}
        parts.append(f"<h3>{_e(_short(column))} <span class='muted'>({_e(d.metric)} "
                     + ", ".join(f"{_e(x)} {y.value:.4f}" for x, y in found) + ")</span></h3>")
        parts += [f"<p>{_e(x)}: {_e(result.figures.get(x, {}).get(column, {}).get('summary'))}</p>"
                  for x, _ in found if result.figures.get(x, {}).get(column, {}).get("summary")]
        side = _table(["", "baseline", f"current ({s})"], _side_rows(figure)) if figure else ""
        parts.append(f"<div class='side'>{side}{chart.pop(column, '')}</div>")
    return parts


def _skew(result, skew: Sequence[Distance]) -> list[str]:
    if not skew:
        return ["<h2>Skew between train and eval (reported, never breakage)</h2>",
                "<p class='muted'>needs a train and an eval split</p>"]
    return ["<h2>Skew between train and eval (reported, never breakage)</h2>",
            _table(["column", "metric", "distance", "threshold", "sampling noise",
                    "skewed", "train -> eval"],
                   ([_e(d.column), _e(d.metric), d.value, d.threshold, d.noise,
                     "yes" if d.exceeded else "no",
                     _e(result.skew_figures.get(d.column, {}).get("summary", ""))]
                    for d in skew),
                   [d.exceeded for d in skew])]


def _distributions(chart: dict[str, str], shown: int, columns: int,
                   any_drifted: bool) -> list[str]:
    """The charts not drawn beside a drifted column, saying how many columns have none."""
    return ["<h2>Distributions</h2>",
            "<p class='muted'>share of rows per bin or category; grey: the reference "
            "(the baseline, or train); from each split's statistics (a uniform sample "
            "of up to 8,192 values per column; dates by day)"
            + ("; drifted columns are charted above" if any_drifted else "")
            + (f"; charts for {shown} of {columns} columns (drifted and skewed "
               f"first): the other {columns - shown} are in the tables below"
               if columns > shown else "") + "</p>",
            "<div class='charts'>" + "".join(chart.values()) + "</div>"]


def _all_checks(checks: Sequence[CheckResult]) -> list[str]:
    return ["<h2>All checks</h2>",
            _table(["split", "column", "rule", "severity", "result", "observed"],
                   ([_e(c.split), _e(c.column or "(table)"), f"<code>{_e(c.rule)}</code>",
                     _e(c.severity), "pass" if c.success else
                     ("FAIL" if c.broken else "warning" if c.warned else "drift"),
                     _e(c.observed)] for c in checks),
                   [c.broken for c in checks])]
