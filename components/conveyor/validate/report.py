"""The validation report: one self-contained HTML page (inline CSS, no scripts, no network), so
it renders offline and in the Kubeflow UI's HTML viewer."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from conveyor.validate.checks import CheckResult
from conveyor.validate.drift import Distance
from conveyor.validate.stats import NUMERIC, DatasetStatistics

_CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d2330}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.verdict{display:inline-block;padding:3px 10px;border-radius:4px;font-weight:600;color:#fff}
.pass{background:#1e7d32} .fail{background:#c62828} .drift{background:#b26a00}
.muted{color:#666}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d7dbe0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fdecea} code{font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _short(value: Any, limit: int = 80) -> str:
    """A value as a cell shows it: a long string is cut (a 10 MB value stays out of the page)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return _e(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], bad: Iterable[bool] = ()) -> str:
    bad = list(bad)
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"]
    for i, row in enumerate(rows):
        cls = ' class="bad"' if i < len(bad) and bad[i] else ""
        cells = "".join(f'<td class="num">{_num(c)}</td>' if isinstance(c, (int, float))
                        and not isinstance(c, bool) else f"<td>{c}</td>" for c in row)
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def render(*, title: str, result, policy: str, stats: DatasetStatistics) -> str:
    """The page for a `ValidationResult`: breakage first, then drift with its figures."""
    checks: Sequence[CheckResult] = result.checks
    drift: Sequence[tuple[str, Distance]] = result.drift
    skew: Sequence[Distance] = result.skew
    broken = [c for c in checks if c.broken]
    soft = [c for c in checks if c.drifted]
    drifted = [(s, d) for s, d in drift if d.exceeded]
    skewed = [d for d in skew if d.exceeded]
    verdict = ("<span class='verdict fail'>FAILED: broken data</span>" if broken else
               "<span class='verdict pass'>PASSED</span>")
    if drifted:
        verdict += " <span class='verdict drift'>DRIFTED</span>"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f"<p>{verdict} "
             f"<span class='muted'>policy {_e(policy)}, drift policy {_e(result.drift_policy)}; "
             f"suite: {_e(result.suite.origin)}; "
             f"{len(checks) - len(broken) - len(soft)}/{len(checks)} checks passed, "
             f"{len(broken)} broken, {len(soft)} expectation(s) drifted, "
             f"{len(drifted)} feature(s) drifted, {len(skewed)} skewed</span></p>"]

    parts.append("<h2>Breakage (stops the run under policy fail)</h2>")
    if broken:
        parts.append(_table(
            ["split", "column", "rule", "observed", "examples"],
            ([_e(c.split), _e(c.column or "(table)"), f"<code>{_e(c.rule)}</code>",
              _e(c.observed), _e(", ".join(map(repr, c.examples)))] for c in broken),
            [True] * len(broken)))
    else:
        parts.append("<p class='muted'>none</p>")

    parts.append("<h2>Drift against the baseline (reported, never breakage)</h2>")
    parts.append("<p class='muted'>a feature drifts when its distance exceeds both its "
                 "threshold and the distance sampling alone reaches (p 0.001) at these sizes</p>")
    if drift:
        parts.append(f"<p class='muted'>baseline: {_e(result.baseline)}</p>")
        parts.append(_table(
            ["split", "column", "metric", "distance", "threshold", "sampling noise", "drifted",
             "baseline -> current"],
            ([_e(s), _e(d.column), _e(d.metric), d.value, d.threshold, d.noise,
              "yes" if d.exceeded else "no",
              _e(result.figures.get(s, {}).get(d.column, {}).get("summary", ""))]
             for s, d in drift),
            [d.exceeded for _, d in drift]))
    else:
        parts.append("<p class='muted'>no baseline statistics given</p>")

    parts.append("<h2>Expected ranges and categories not met (drift, not failures)</h2>")
    if soft:
        parts.append(_table(
            ["split", "column", "rule", "observed", "examples"],
            ([_e(c.split), _e(c.column or "(table)"), f"<code>{_e(c.rule)}</code>",
              _e(c.observed), _e(", ".join(map(repr, c.examples)))] for c in soft),
            [True] * len(soft)))
    else:
        parts.append("<p class='muted'>none</p>")

    parts.append("<h2>Skew between train and eval (reported, never breakage)</h2>")
    if skew:
        parts.append(_table(["column", "metric", "distance", "threshold", "sampling noise",
                             "skewed", "train -> eval"],
                            ([_e(d.column), _e(d.metric), d.value, d.threshold, d.noise,
                              "yes" if d.exceeded else "no",
                              _e(result.skew_figures.get(d.column, {}).get("summary", ""))]
                             for d in skew),
                            [d.exceeded for d in skew]))
    else:
        parts.append("<p class='muted'>needs a train and an eval split</p>")

    parts.append("<h2>All checks</h2>")
    parts.append(_table(["split", "column", "rule", "severity", "result", "observed"],
                        ([_e(c.split), _e(c.column or "(table)"), f"<code>{_e(c.rule)}</code>",
                          _e(c.severity), "pass" if c.success else
                          ("FAIL" if c.broken else "drift"), _e(c.observed)] for c in checks),
                        [c.broken for c in checks]))

    for name, split in stats.splits.items():
        parts.append(f"<h2>Statistics: {_e(name)} ({split.rows} rows)</h2>")
        rows = []
        for c in split.columns.values():
            if c.kind == NUMERIC:
                summary = (f"mean {_num(c.mean)}, std {_num(c.std)}, min {_num(c.min)}, "
                           f"median {_num(c.quantile(0.5))}, max {_num(c.max)}"
                           + (f", NaN {c.nan}" if c.nan else "") + (f", inf {c.inf}" if c.inf else ""))
            elif c.values is not None:
                top = ", ".join(f"{_short(k)} ({v})" for k, v in c.top(8))
                summary = f"{c.distinct}{'+' if c.truncated else ''} distinct: {top}"
            else:
                summary = f"min {_e(c.min)}, max {_e(c.max)}"
            rows.append([_e(c.name), _e(c.type), c.count, c.nulls,
                         f"{c.null_fraction:.2%}", _e(summary)])
        parts.append(_table(["column", "type", "values", "nulls", "null %", "summary"], rows))
    parts.append("</body></html>")
    return "\n".join(parts)
