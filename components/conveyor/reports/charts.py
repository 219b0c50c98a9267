"""Charts for conveyor's reports: matplotlib figures as inline SVG.

Figures are built with `matplotlib.figure.Figure` (no pyplot: no global figure state, no GUI
backend; rasterized parts go through Agg) and written by the SVG backend with text as paths
(`svg.fonttype: path`, DejaVu Sans from matplotlib's own files), so a chart needs no font, image
or stylesheet from anywhere. Math text is off, so a `$` in a column name is just a `$`. The SVG's
XML prologue, DOCTYPE, metadata and namespace URLs are dropped (the HTML parser knows SVG), and
its element ids are prefixed per chart so several charts in one page never share an id.

Every chart takes plain numbers (numpy arrays, dicts of counts) and copes with what data brings:
no values at all (all NULL), one value (a constant column), thousands of categories (top k plus
"other"), NaN metrics (left out of the drawing, said in the chart).
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.typing import RcKeyType

TOP_K = 8  # categories per bar chart (then "other")
BINS = 30
LABEL_CHARS = 18
REFERENCE, CURRENT, THIRD = "#9aa3ad", "#1f6fb4", "#d9730d"
PALETTE = ("#1f6fb4", "#d9730d", "#2e8b57", "#a23b72", "#6b4fbb", "#8c6d1f", "#1b9aaa",
           "#c0392b", "#5d6d7e", "#7d8f24")
RC: dict[RcKeyType, Any] = {
      "svg.fonttype": "path", "svg.hashsalt": "conveyor", "text.parse_math": False,
      "font.size": 7, "axes.titlesize": 8, "axes.labelsize": 7, "xtick.labelsize": 6.5,
      "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "axes.spines.top": False,
      "axes.spines.right": False, "savefig.dpi": 144, "figure.dpi": 72}
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(xlink:href|href)="#([^"]+)"')
_URL = re.compile(r"url\(#([^)]+)\)")


@dataclasses.dataclass
class Series:
    """One distribution to draw: `values` (numbers; dates as days since 1970) or `counts`
    (category -> count), `rows` the rows it stands for (for the legend), `nulls` its NULLs."""
    label: str
    values: np.ndarray | None = None
    counts: Mapping[Any, int] | None = None
    rows: int = 0
    nulls: int = 0


def svg(fig: Figure, key: str, title: str = "") -> str:
    """The figure as an inline `<svg>` element whose ids all start with `key`."""
    buf = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Glyph ... missing from font": drawn as a box
        FigureCanvasSVG(fig).print_svg(buf, metadata={"Creator": None, "Date": None,
                                                      "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text, count=2)
    text = _ID.sub(lambda m: f'id="{key}-{m.group(1)}"', text)
    text = _REF.sub(lambda m: f'href="#{key}-{m.group(2)}"', text)
    text = text.replace("xlink:href=", "href=")  # SVG 2: no xlink namespace needed
    text = _URL.sub(lambda m: f"url(#{key}-{m.group(1)})", text)
    text = re.sub(r"\n\s*", "\n", text).strip()  # indentation is a third of the bytes
    if title:
        from conveyor.reports.html import esc

        text = text.replace(">", f' role="img"><title>{esc(title)}</title>', 1)
    return text


def _label(value: Any, limit: int = LABEL_CHARS) -> str:
    text = "NULL" if value is None else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(float)


def colors(n: int) -> list[str]:
    """The colours of `n` series in one panel: a single one blue; else the first (the
    reference) grey and the others from the palette."""
    if n == 1:
        return [CURRENT]
    return [REFERENCE] + [PALETTE[i % len(PALETTE)] for i in range(n - 1)]


def _legend(s: Series) -> str:
    nulls = f", {s.nulls / s.rows:.1%} NULL" if s.rows and s.nulls else ""
    return f"{s.label} ({s.rows:,} rows{nulls})"


def _numeric_panel(ax, series: Sequence[Series], temporal: bool) -> str:
    """Histograms of the series on shared bins (the 0.5-99.5% range of all values; values
    beyond fall in the end bins): the first filled grey, the others as lines."""
    finite = [s.values[np.isfinite(s.values)] if s.values is not None else np.empty(0)
              for s in series]
    present = [v for v in finite if len(v)]
    if not present:
        _empty(ax, "no rows" if not any(s.rows for s in series) else
               "no values (all NULL)" if all(s.rows == s.nulls for s in series) else
               "no finite values" if all(s.values is not None for s in series) else
               "no sample of values kept")
        return ""
    both = np.concatenate(present)
    lo, hi = float(both.min()), float(both.max())
    inner = np.quantile(both, [0.005, 0.995])
    note = ""
    if hi - lo > 3 * (inner[1] - inner[0]) and inner[1] > inner[0]:  # long tails: clip them
        lo, hi = float(inner[0]), float(inner[1])
        note = "tails beyond 0.5-99.5% in the end bins"
    edges = histogram_edges(lo, hi, integer=all(bool(np.all(v == np.round(v))) for v in present))
    for i, (s, v, color) in enumerate(zip(series, finite, colors(len(series)))):
        if not len(v):
            continue
        counts, _ = np.histogram(np.clip(v, edges[0], edges[-1]), edges)
        share = bar_heights(counts, edges)
        if i == 0 and len(series) > 1:
            ax.stairs(share, edges, fill=True, color=color, alpha=0.55, label=_legend(s))
        else:
            ax.stairs(share, edges, color=color, linewidth=1.3, label=_legend(s),
                      fill=len(series) == 1)
    if temporal:
        import matplotlib.dates as mdates

        ax.xaxis_date()  # days since 1970 are matplotlib's date numbers (default epoch)
        locator = mdates.AutoDateLocator(minticks=2, maxticks=4)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    ax.set_yticks([])  # shapes are compared, not heights read (and ticks cost a third)
    ax.spines["left"].set_visible(False)
    return note


def histogram_edges(lo: float, hi: float, integer: bool = False, bins: int = BINS) -> np.ndarray:
    """Bin edges over [lo, hi]: `bins` equal bins; for integer values, edges halfway between
    integers (k - 0.5), one integer per bin over a small range and the same whole number of
    integers per bin over a large one (the last bin ends at `hi` + 0.5, so it may hold fewer:
    `bar_heights` evens that out). A constant column gets one bin around its value."""
    if integer:
        first, last = math.floor(lo), math.ceil(hi)
        width = max(1, math.ceil((last - first + 1) / bins))
        edges = np.arange(first - 0.5, last + 0.5 + width, width, dtype=float)
        edges = edges[edges < last + 0.5]
        return np.append(edges, last + 0.5)
    if hi <= lo:  # a constant column
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def bar_heights(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each bin's share of the values per unit of width, scaled so that equal bins show their
    shares: a narrower bin (the last of integer bins) is not a dip for uniform values."""
    widths = np.diff(edges)
    return _shares(counts) * (widths.mean() / widths)


def _categorical_panel(ax, series: Sequence[Series], k: int = TOP_K) -> str:
    """Grouped horizontal bars of category shares: the top `k` categories over all series,
    then "other" for the rest."""
    totals = [sum((s.counts or {}).values()) for s in series]
    if not any(totals):
        _empty(ax, "no values (all NULL)" if any(s.rows for s in series) else "no rows")
        return ""
    score: dict[Any, float] = {}
    for s, total in zip(series, totals):
        for key, count in (s.counts or {}).items():
            if total:
                score[key] = max(score.get(key, 0.0), count / total)
    top = sorted(score, key=lambda key: (-score[key], str(key)))[:k]
    other = len(score) > len(top)
    labels = [_label(key) for key in top] + ([f"other ({len(score) - len(top):,})"]
                                             if other else [])
    y = np.arange(len(labels))
    height = 0.8 / len(series)
    for i, (s, total, color) in enumerate(zip(series, totals, colors(len(series)))):
        counts = s.counts or {}
        shares = [counts.get(key, 0) / total if total else 0.0 for key in top]
        if other:
            shares.append(1.0 - sum(shares) if total else 0.0)
        ax.barh(y + (i - (len(series) - 1) / 2) * height, shares, height=height, color=color,
                label=_legend(s))
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    return f"top {len(top)} of {len(score):,} categories" if other else ""


def distributions(panels: Sequence[tuple[str, Sequence[Series]]], kind: str,
                  legend: bool = True) -> Figure:
    """One row of small panels, each comparing distributions of one column (e.g. "vs
    baseline", "train vs eval"). `kind`: numeric, temporal or categorical. `legend=False`
    leaves the legends to the page (a quarter of the drawing time): series colours are
    `colors(len(series))`."""
    categorical = kind == "categorical"
    width, height = 3.6, (1.9 if categorical else 1.6)
    gutter = 1.1 if categorical else 0.4  # inches left of each panel for its y labels
    fig = Figure(figsize=(width * len(panels), height))
    total = width * len(panels)
    top = 0.42 if categorical else 0.4  # inches for the title (two lines)
    for i, (title, series) in enumerate(panels):
        ax = fig.add_axes(((i * width + gutter) / total, 0.3 / height,
                           (width - gutter - 0.15) / total, (height - 0.3 - top) / height))
        note = (_categorical_panel(ax, series) if categorical
                else _numeric_panel(ax, series, kind == "temporal"))
        ax.set_title(title if not note else f"{title}\n{note}", loc="left")
        if legend and ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", frameon=False, handlelength=1.0)
    return fig


# -- evaluation charts ----------------------------------------------------------------------


def _finite(*arrays: Sequence[float]) -> tuple[np.ndarray, ...]:
    floats = tuple(np.asarray(a, dtype=float) for a in arrays)
    keep = np.logical_and.reduce([np.isfinite(a) for a in floats])
    return tuple(a[keep] for a in floats)


def curves(kind: str, lines: Sequence[tuple[str, Sequence[float], Sequence[float]]],
           reference: float | None = None, title: str = "") -> Figure:
    """ROC (`kind="roc"`: x false positive rate, y true positive rate, the chance diagonal) or
    PR (`kind="pr"`: x recall, y precision, `reference` the positive rate) curves, one line
    each; a line whose points are all NaN is named as not drawn."""
    fig = Figure(figsize=(3.3, 2.9))
    ax = fig.subplots()
    missing = []
    for i, (label, raw_x, raw_y) in enumerate(lines):
        x, y = _finite(raw_x, raw_y)
        if not len(x):
            missing.append(label)
            continue
        ax.plot(x, y, color=PALETTE[i % len(PALETTE)], linewidth=1.4, label=label,
                drawstyle="steps-post" if kind == "pr" else "default")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], linestyle="--", color=REFERENCE, linewidth=0.8, label="chance")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
    else:
        if reference is not None and math.isfinite(reference):
            ax.axhline(reference, linestyle="--", color=REFERENCE, linewidth=0.8,
                       label=f"positive rate {reference:.3g}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title + (f"\nnot drawn (no finite points): {', '.join(missing)}"
                          if missing else ""), loc="left")
    ax.legend(loc="lower right" if kind == "roc" else "lower left", frameon=False)
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.15, top=0.88)
    return fig


def calibration(lines: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[int]]],
                title: str = "calibration") -> Figure:
    """Reliability diagram: per score bin, the mean predicted probability (x) against the
    observed frequency (y), points sized by their rows; the diagonal is perfect calibration."""
    fig = Figure(figsize=(3.3, 2.9))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color=REFERENCE, linewidth=0.8, label="perfect")
    for i, (label, predicted, observed, counts) in enumerate(lines):
        p, o, c = _finite(predicted, observed, counts)
        keep = c > 0
        p, o, c = p[keep], o[keep], c[keep]
        if not len(p):
            continue
        color = PALETTE[i % len(PALETTE)]
        ax.plot(p, o, color=color, linewidth=1.0, label=label)
        ax.scatter(p, o, s=6 + 40 * c / c.max(), color=color, zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(title, loc="left")
    ax.legend(loc="upper left", frameon=False)
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.15, top=0.9)
    return fig


def confusion(matrix: np.ndarray, labels: Sequence[str], title: str = "") -> Figure:
    """Heat map of a confusion matrix (rows: true class, columns: predicted), shaded by the
    share of each true class, with counts written in when the matrix is small."""
    m = np.asarray(matrix, dtype=float)
    k = len(m)
    size = min(6.0, 2.2 + 0.28 * k)
    fig = Figure(figsize=(size + 0.6, size))
    ax = fig.subplots()
    support = m.sum(axis=1, keepdims=True)
    share = np.divide(m, support, out=np.zeros_like(m), where=support > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest",
                      aspect="auto")
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(m[i, j]):,}", ha="center", va="center", fontsize=6,
                        color="white" if share[i, j] > 0.6 else "#1d2330")
    names = [_label(label, 14) for label in labels]
    ax.set_xticks(range(k), names, rotation=90 if k > 4 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.spines[:].set_visible(False)
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, format=matplotlib.ticker.PercentFormatter(
        1.0, decimals=0)).set_label("share of the true class", fontsize=6)
    ax.set_title(title, loc="left")
    fig.subplots_adjust(left=0.28 if k > 4 else 0.2, right=0.86, bottom=0.28 if k > 4 else 0.15,
                        top=0.9)
    return fig


def regression(actual: Sequence[float], predicted: Sequence[float], title: str = "") -> Figure:
    """Predicted vs actual (with the identity line), residuals (predicted - actual) against
    predicted, and the residuals' histogram: three panels over the same rows. Points are
    rasterized (a PNG inside the SVG) so thousands of them stay small."""
    y, p = _finite(actual, predicted)
    fig = Figure(figsize=(9.6, 2.9))
    axes = fig.subplots(1, 3)
    if not len(y):
        for ax in axes:
            _empty(ax, "no finite predictions")
        return fig
    r = p - y
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    alpha = 0.7 if len(y) < 1000 else 0.3
    axes[0].scatter(y, p, s=5, alpha=alpha, color=CURRENT, linewidths=0, rasterized=True)
    axes[0].plot([lo, hi], [lo, hi], linestyle="--", color=REFERENCE, linewidth=0.8)
    axes[0].set_xlabel("actual")
    axes[0].set_ylabel("predicted")
    axes[0].set_title(title or "predicted vs actual", loc="left")
    axes[1].scatter(p, r, s=5, alpha=alpha, color=CURRENT, linewidths=0, rasterized=True)
    axes[1].axhline(0, linestyle="--", color=REFERENCE, linewidth=0.8)
    axes[1].set_xlabel("predicted")
    axes[1].set_ylabel("residual (predicted - actual)")
    axes[1].set_title("residuals vs predicted", loc="left")
    span = float(np.ptp(r)) or 1.0
    edges = np.linspace(r.min() - 0.01 * span, r.max() + 0.01 * span, BINS + 1)
    axes[2].stairs(np.histogram(r, edges)[0], edges, fill=True, color=CURRENT)
    axes[2].axvline(0, linestyle="--", color=REFERENCE, linewidth=0.8)
    axes[2].set_xlabel("residual")
    axes[2].set_ylabel("rows")
    axes[2].set_title("residuals", loc="left")
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.16, top=0.9, wspace=0.35)
    return fig


def render(make, key: str, *args, name: str = "", **kwargs) -> str:
    """Draw a chart with conveyor's settings (fonts as paths, no math text) and return it as
    inline SVG, ids prefixed by `key`, `name` its accessible name (default the title)."""
    with matplotlib.rc_context(RC):
        return svg(make(*args, **kwargs), key, name or kwargs.get("title", ""))
