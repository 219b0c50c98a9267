"""Distribution distance between two sets of column statistics, as TFDV measures it.

- numeric columns: Jensen-Shannon divergence (base 2, in [0, 1]) of the two distributions over
  shared bins: the baseline's 5%-quantiles (20 equal-mass bins), read from both value samples;
- categorical columns (and small integer domains): L-infinity distance, the largest absolute
  difference between the two value frequencies.

Used for drift (current data against a baseline's statistics) and for skew (train against eval
within one dataset). A feature drifts when its distance exceeds its threshold **and** the
distance that sampling alone reaches with probability `NOISE_SIGNIFICANCE` for these two sample
sizes (`noise`): a 50-row split of clean data reaches a Jensen-Shannon of 0.2 by luck, a
100 k-row one does not. For Jensen-Shannon over K bins, 8 ln2 n1 n2 / (n1 + n2) x JS is about
chi-square with K - 1 degrees of freedom; for L-infinity, the largest share difference is
compared with z x its standard error (Bonferroni over the categories). Drift is never
breakage: `figures` says what moved (mean and quantiles, category shares, new categories) so a
pipeline can decide to retrain, and a person can see why.
"""

from __future__ import annotations

import dataclasses
import math
import statistics as _statistics
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from conveyor.stats.columns import CATEGORICAL, NUMERIC, TEMPORAL, ColumnStatistics, SplitStatistics

JS, LINF = "jensen_shannon", "l_infinity"
BIN_QUANTILES = tuple(np.linspace(0.05, 0.95, 19))
MAX_INT_CATEGORIES = 20  # an int64 column with at most this many values is compared as categories
NOISE_SIGNIFICANCE = 0.001


@dataclasses.dataclass(frozen=True)
class Distance:
    column: str
    metric: str
    value: float
    threshold: float
    noise: float = 0.0  # what sampling alone reaches (probability NOISE_SIGNIFICANCE)

    @property
    def exceeded(self) -> bool:
        return self.value > self.threshold and self.value > self.noise

    def to_dict(self) -> dict:
        return {"column": self.column, "metric": self.metric, "value": round(self.value, 6),
                "threshold": self.threshold, "noise": round(self.noise, 6),
                "exceeded": self.exceeded}


def _z(p: float) -> float:
    return _statistics.NormalDist().inv_cdf(p)


def chi2_quantile(df: int, p: float) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile."""
    if df <= 0:
        return 0.0
    a = 2 / (9 * df)
    return df * max(0.0, 1 - a + _z(p) * math.sqrt(a)) ** 3


def js_noise(bins: int, n1: int, n2: int, significance: float = NOISE_SIGNIFICANCE) -> float:
    if n1 <= 0 or n2 <= 0:
        return 1.0
    n_h = n1 * n2 / (n1 + n2)
    return min(1.0, chi2_quantile(bins - 1, 1 - significance) / (8 * math.log(2) * n_h))


def linf_noise(p: Mapping, q: Mapping, n1: int, n2: int,
               significance: float = NOISE_SIGNIFICANCE) -> float:
    """z x the standard error of the share difference of the category that moved most."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    keys = set(p) | set(q)
    if not keys:
        return 0.0
    k = max(keys, key=lambda key: (abs(p.get(key, 0.0) - q.get(key, 0.0)), str(key)))
    m = (p.get(k, 0.0) * n1 + q.get(k, 0.0) * n2) / (n1 + n2)
    z = _z(1 - significance / (2 * max(len(keys), 1)))
    return min(1.0, z * math.sqrt(max(m * (1 - m), 1 / (n1 + n2)) * (1 / n1 + 1 / n2)))


def _categories_seen(stats: ColumnStatistics) -> int:
    return sum(stats.values.values()) if stats.values else 0


def _sampled(stats: ColumnStatistics) -> int:
    return len(stats.sample.values) if stats.sample is not None else 0


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum() if p.sum() else p
    q = q / q.sum() if q.sum() else q
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float((a[mask] * np.log2(a[mask] / b[mask])).sum())

    return max(0.0, min(1.0, (kl(p, m) + kl(q, m)) / 2))


def l_infinity(p: Mapping, q: Mapping) -> float:
    keys = set(p) | set(q)
    return max((abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys), default=0.0)


def _as_categories(stats: ColumnStatistics) -> bool:
    if stats.kind == CATEGORICAL:
        return True
    return (stats.type == "int64" and stats.values is not None and not stats.truncated
            and len(stats.values) <= MAX_INT_CATEGORIES)


def distance(baseline: ColumnStatistics, current: ColumnStatistics,
             threshold: float) -> Distance | None:
    """The distance between two statistics of one column, or None if it cannot be measured."""
    if _as_categories(baseline) and _as_categories(current):
        p, q = baseline.frequencies(), current.frequencies()
        return Distance(baseline.name, LINF, l_infinity(p, q), threshold,
                        linf_noise(p, q, _categories_seen(baseline), _categories_seen(current)))
    if baseline.kind == NUMERIC and current.kind == NUMERIC and baseline.finite \
            and current.finite:
        sample = baseline.sampled()  # finite values, so a sample
        edges = sorted({sample.quantile(q) for q in BIN_QUANTILES})
        return Distance(baseline.name, JS,
                        jensen_shannon(baseline.pmf(edges), current.pmf(edges)), threshold,
                        js_noise(len(edges) + 1, _sampled(baseline), _sampled(current)))
    return None


def compare(baseline: SplitStatistics, current: SplitStatistics, default_threshold: float,
            thresholds: Mapping[str, float] | None = None,
            skip: Collection[str] = ()) -> list[Distance]:
    """Distances of every column present in both but those in `skip` (excluded columns), with
    per-column thresholds."""
    thresholds = thresholds or {}
    out = []
    for name, base in baseline.columns.items():
        if name not in current.columns or name in skip:
            continue
        d = distance(base, current.columns[name], float(thresholds.get(name, default_threshold)))
        if d is not None:
            out.append(d)
    return out


# -- figures: what moved, in numbers a person reads ---------------------------------------------

SHOWN_QUANTILES = (0.05, 0.5, 0.95)
SHOWN_CATEGORIES = 8


def _plain(value: Any) -> Any:
    """A value as figures hold it: JSON-ready, a long string cut (a 10 MB category stays out)."""
    if isinstance(value, str) and len(value) > 80:
        return f"{value[:80]}... ({len(value)} characters)"
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else str(value)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _side(stats: ColumnStatistics) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": stats.rows, "null_fraction": round(stats.null_fraction, 6)}
    if _as_categories(stats):
        shares = stats.frequencies()
        top = sorted(shares.items(), key=lambda kv: (-kv[1], str(kv[0])))[:SHOWN_CATEGORIES]
        out["shares"] = [[_plain(k), round(v, 4)] for k, v in top]
        out["distinct"] = stats.distinct
    if stats.kind == NUMERIC and stats.finite:
        out.update(mean=_plain(stats.mean), std=_plain(stats.std), min=_plain(stats.min),
                   max=_plain(stats.max),
                   quantiles={f"p{round(q * 100)}": _plain(stats.quantile(q))
                              for q in SHOWN_QUANTILES})
    if stats.kind == TEMPORAL:
        out.update(min=_plain(stats.min), max=_plain(stats.max))
    return out


def figures(baseline: ColumnStatistics, current: ColumnStatistics) -> dict[str, Any]:
    """Baseline vs current of one column: both sides' figures, new categories and a one-line
    summary such as "mean 120 -> 180, p50 118 -> 177, p95 150 -> 225"."""
    base, cur = _side(baseline), _side(current)
    out: dict[str, Any] = {"baseline": base, "current": cur}
    parts = []
    if "mean" in base and "mean" in cur:
        parts.append(f"mean {_fmt(base['mean'])} -> {_fmt(cur['mean'])}")
        for q in ("p5", "p50", "p95"):
            parts.append(f"{q} {_fmt(base['quantiles'][q])} -> {_fmt(cur['quantiles'][q])}")
    if _as_categories(baseline) and _as_categories(current):
        b, c = baseline.frequencies(), current.frequencies()
        new = {k: v for k, v in c.items() if k not in b}
        if new:
            top = sorted(new.items(), key=lambda kv: (-kv[1], str(kv[0])))[:SHOWN_CATEGORIES]
            out["new_values"] = [[_plain(k), round(v, 4)] for k, v in top]
            out["new_share"] = round(sum(new.values()), 6)
            parts.append(f"new {', '.join(f'{_plain(k)!r} {v:.1%}' for k, v in top)}")
        moved = sorted(set(b) | set(c), key=lambda k: (-abs(c.get(k, 0) - b.get(k, 0)), str(k)))
        parts += [f"{_plain(k)!r} {b.get(k, 0):.1%} -> {c.get(k, 0):.1%}"
                  for k in moved[:3] if k in b and abs(c.get(k, 0) - b.get(k, 0)) >= 0.005]
    if abs(baseline.null_fraction - current.null_fraction) >= 0.005:
        parts.append(f"nulls {baseline.null_fraction:.1%} -> {current.null_fraction:.1%}")
    out["summary"] = ", ".join(parts)
    return out
