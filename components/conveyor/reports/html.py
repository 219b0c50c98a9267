"""Building blocks of conveyor's self-contained HTML pages: escaping, tables, the page itself.

Every text that comes from data (column names, category values, URIs, messages) goes through
`esc`; long values are cut by `short` so a 10 MB string stays out of the page. No scripts, no
external stylesheets, fonts or images: the CSS is inline and charts are inline SVG.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d2330;
max-width:1200px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:16px 0 4px}
.verdict{display:inline-block;padding:3px 10px;border-radius:4px;font-weight:600;color:#fff}
.pass{background:#1e7d32} .fail{background:#c62828} .drift{background:#b26a00}
.muted{color:#666} .note{color:#555;font-size:13px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d7dbe0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fdecea} code{font-size:12px}
figure{margin:8px 0 14px} figure svg{max-width:100%;height:auto}
figcaption{font-size:12px;color:#555}
.charts{display:flex;flex-wrap:wrap;gap:8px 24px} .charts figure{margin:4px 0}
.side{display:flex;flex-wrap:wrap;gap:0 24px}
"""


def esc(value: Any) -> str:
    """Text for HTML: `<`, `>`, `&` and both quotes escaped."""
    return html.escape(str(value), quote=True)


def short(value: Any, limit: int = 80) -> str:
    """A value as a cell shows it: a long string is cut, saying how long it was."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def num(value: Any, digits: int = 6) -> str:
    """A number for a cell: floats to `digits` significant digits, NaN/inf spelled out."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return esc(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
          bad: Iterable[bool] = ()) -> str:
    """A table: headers are escaped; a cell that is a number is formatted and right-aligned,
    any other cell is inserted as given (escape it first: `esc`)."""
    bad = list(bad)
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"]
    for i, row in enumerate(rows):
        cls = ' class="bad"' if i < len(bad) and bad[i] else ""
        cells = "".join(f'<td class="num">{num(c)}</td>' if isinstance(c, (int, float))
                        and not isinstance(c, bool) else f"<td>{c}</td>" for c in row)
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def figure(svg: str, caption: str = "") -> str:
    """An inline SVG chart with an (escaped) caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{cap}</figure>"


def page(title: str, body: Iterable[str]) -> str:
    """A whole page: UTF-8, inline CSS, no script, nothing to fetch."""
    return "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        *body,
        "</body></html>"])


def spec_text(spec: Mapping[str, Any]) -> str:
    """A serving-signature tensor ({dtype, shape}, as evaluate records it) as one short text,
    `float32 [None]` (`?` for an unknown rank); the Markdown and HTML reports and the reasons
    a signature change breaks clients all name tensors this way."""
    shape = "?" if spec["shape"] is None else "[" + ", ".join(
        "None" if d is None else str(d) for d in spec["shape"]) + "]"
    return f"{spec['dtype']} {shape}"
