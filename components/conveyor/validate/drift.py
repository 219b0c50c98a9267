"""Distribution distance between two sets of column statistics, as TFDV measures it.

- numeric columns: Jensen-Shannon divergence (base 2, in [0, 1]) of the two distributions over
  shared bins: the baseline's 5%-quantiles (20 equal-mass bins), read from both value samples;
- categorical columns (and small integer domains): L-infinity distance, the largest absolute
  difference between the two value frequencies.

Used for drift (current data against a baseline's statistics) and for skew (train against eval
within one dataset). A feature drifts when its distance exceeds its threshold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from conveyor.validate.stats import CATEGORICAL, NUMERIC, ColumnStatistics, SplitStatistics

JS, LINF = "jensen_shannon", "l_infinity"
BIN_QUANTILES = tuple(np.linspace(0.05, 0.95, 19))
MAX_INT_CATEGORIES = 20  # an int64 column with at most this many values is compared as categories


@dataclasses.dataclass(frozen=True)
class Distance:
    column: str
    metric: str
    value: float
    threshold: float

    @property
    def exceeded(self) -> bool:
        return self.value > self.threshold

    def to_dict(self) -> dict:
        return {"column": self.column, "metric": self.metric, "value": round(self.value, 6),
                "threshold": self.threshold, "exceeded": self.exceeded}


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
        return Distance(baseline.name, LINF,
                        l_infinity(baseline.frequencies(), current.frequencies()), threshold)
    if baseline.kind == NUMERIC and current.kind == NUMERIC and baseline.finite \
            and current.finite:
        edges = sorted({baseline.quantile(q) for q in BIN_QUANTILES})
        return Distance(baseline.name, JS,
                        jensen_shannon(baseline.pmf(edges), current.pmf(edges)), threshold)
    return None


def compare(baseline: SplitStatistics, current: SplitStatistics, default_threshold: float,
            thresholds: Mapping[str, float] | None = None) -> list[Distance]:
    """Distances of every column present in both, with per-column thresholds."""
    thresholds = thresholds or {}
    out = []
    for name, base in baseline.columns.items():
        if name not in current.columns:
            continue
        d = distance(base, current.columns[name], float(thresholds.get(name, default_threshold)))
        if d is not None:
            out.append(d)
    return out
