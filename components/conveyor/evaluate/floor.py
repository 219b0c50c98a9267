"""The naive reference and the quality floor: a model that does not clearly beat predicting the
training data's prior (classification) or mean (regression) is not worth serving.

The naive reference predicts, for every eval row, what a model that learned nothing from the
features would: classification, the train class prior (probabilities = `label_counts` / their
sum, so its accuracy is the share of the train-majority class, its AUC 0.5, its log loss the
prior's); regression, the train mean in label units (`label_stats["raw_mean"]`). Models exported
before transform recorded those have none: the prior (mean) is then counted on the Dataset's
`train` split, or, with no such split, on the evaluated split itself (a slightly stronger
reference, since it knows the eval distribution). `NaiveReference.source` says which.

The floor, by default (`DEFAULT_FLOOR`), on the same eval rows:

- binary: AUC >= naive (0.5) + margin, margin = max(10% of the way from 0.5 to 1 (so AUC >=
  0.55), 2 standard errors of a no-skill AUC on these rows, sqrt((P + N + 1) / (12 P N)), the
  Mann-Whitney null); and log loss below the prior's;
- multiclass: accuracy >= the train-majority class's share + margin, margin = max(10% of the way
  from that share to 1, 2 binomial standard errors of that share on these rows); and log loss
  below the prior's. A 1,000-class model at 0.76 % accuracy (majority share 0.3 %) needs 10 %;
- regression: RMSE <= naive RMSE minus margin, margin = max(5% of the naive RMSE, what 2 paired
  standard errors of the per-row squared-error difference are worth in RMSE); the same against
  the train median (`label_stats["raw_median"]`, when the transform recorded it); and, always,
  even with the floor off, R2 > 0 on the eval rows (`r2_check`).

The mean is not a floor the data cannot poison: one label of 1e30 among penguins' body masses
made it 3.8e27, so a model at R2 = -5.6e22 (every prediction ~2e14 g, its log-scale smearing
factor dragged by the same row) beat it by 24 orders of magnitude and was blessed (issue 25).
The median hardly moves for a few extreme rows, and R2 > 0 asks the candidate to beat the eval
rows' own mean, the best constant there is for them: no train statistic enters it at all.

The standard-error terms keep chance from blessing on a small eval split (a model trained on
shuffled labels scores around the reference, give or take noise); on large splits the skill
fractions dominate. Thresholds change it per metric with `min_improvement_over_naive` (an exact
margin in the metric's units, along its direction, no noise term; these then replace the
defaults), and `"naive_floor": false` turns it off. A metric that is not finite fails its check.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from conveyor.errors import InputError
from conveyor.evaluate.metrics import HIGHER_IS_BETTER

NAIVE_FLOOR = "naive_floor"  # thresholds key: false turns the floor off
OVER_NAIVE = "min_improvement_over_naive"  # per-metric rule key: an exact margin
Z = 2.0  # standard errors the default margins allow for chance
#: per task: metric -> the share of the naive reference's distance to a perfect score (higher
#: is better: 1; lower is better: 0) the candidate must cover; 0 means "strictly better"
DEFAULT_FLOOR = {"binary": {"auc": 0.10, "log_loss": 0.0},
                 "multiclass": {"accuracy": 0.10, "log_loss": 0.0},
                 "regression": {"rmse": 0.05}}
STRICT = 1e-6  # "strictly better": the margin of a 0 share
_PERFECT = {"auc": 1.0, "accuracy": 1.0, "auc_pr": 1.0, "precision": 1.0, "recall": 1.0,
            "macro_f1": 1.0, "weighted_f1": 1.0, "r2": 1.0}


@dataclasses.dataclass
class NaiveReference:
    """What the naive model predicts for every row, and where that came from."""

    task: str
    prediction: Any  # binary: P(class 1); multiclass: the prior vector; regression: the mean
    source: str
    median: float | None = None  # regression: the train median, a second, robust reference

    def predict(self, rows: int) -> np.ndarray:
        if self.task == "multiclass":
            return np.tile(np.asarray(self.prediction, dtype=np.float64), (rows, 1))
        return np.full(rows, float(self.prediction), dtype=np.float64)

    def describe(self, classes: list[str]) -> str:
        if self.task == "regression":
            median = (f"; and the train median {self.median:.6g}" if self.median is not None
                      else "")
            return (f"the train mean {float(self.prediction):.6g} for every row ({self.source})"
                    + median)
        prior = (self.prediction if self.task == "multiclass"
                 else [1 - self.prediction, self.prediction])
        shown = ", ".join(f"{c}: {p:.3f}" for c, p in list(zip(classes, prior))[:10])
        more = f", ... ({len(classes)} classes)" if len(classes) > 10 else ""
        return f"the train class prior for every row ({shown}{more}; {self.source})"


def naive_reference(task: str, label_counts: list[int] | None,
                    label_stats: Mapping[str, Any] | None, fallback) -> NaiveReference:
    """The naive reference from the candidate's transform; `fallback()` -> (counts or mean,
    source) counts it from data when the transform predates `label_counts` / `raw_mean`."""
    if task == "regression":
        median = (label_stats or {}).get("raw_median")
        median = float(median) if median is not None and math.isfinite(median) else None
        if label_stats and label_stats.get("raw_mean") is not None:
            return NaiveReference(task, float(label_stats["raw_mean"]),
                                  "the transform's train mean", median)
        mean, source = fallback()
        return NaiveReference(task, float(mean), source, median)
    counts, source = ((label_counts, "the transform's train label counts") if label_counts
                      else fallback())
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise InputError(f"evaluate: no label counts to make the naive reference from ({source})")
    prior = counts / counts.sum()
    return NaiveReference(task, float(prior[1]) if task == "binary" else prior.tolist(), source)


class PairedSquaredError:
    """Per-row squared-error differences naive - candidate (regression): their mean is the MSE
    the candidate saves, their standard error how sure that is."""

    def __init__(self) -> None:
        self.n = 0
        self.sum = self.sum2 = 0.0

    def update(self, y: np.ndarray, p: np.ndarray, naive: np.ndarray) -> None:
        y = y.astype(np.float64)
        d = (naive - y) ** 2 - (p.astype(np.float64) - y) ** 2
        self.n += len(d)
        self.sum += float(d.sum())
        self.sum2 += float(np.sum(d * d))

    def standard_error(self) -> float:
        if self.n < 2:
            return float("inf")
        mean = self.sum / self.n
        var = max(self.sum2 / self.n - mean * mean, 0.0) * self.n / (self.n - 1)
        return math.sqrt(var / self.n)


def parse_floor(thresholds: Mapping[str, Any] | None, task: str) -> dict[str, float | None]:
    """metric -> an exact margin (given), or None (the default margin); {} when turned off."""
    thresholds = thresholds or {}
    if NAIVE_FLOOR in thresholds:
        switch = thresholds[NAIVE_FLOOR]
        if not isinstance(switch, bool):
            raise InputError(f"thresholds: {NAIVE_FLOOR!r} is true or false (false: no naive "
                             f"floor), got {switch!r}")
        if not switch:
            return {}
    given = {m: r[OVER_NAIVE] for m, r in thresholds.items()
             if m != NAIVE_FLOOR and isinstance(r, Mapping) and OVER_NAIVE in r}
    for metric, margin in given.items():
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) \
                or not math.isfinite(margin):
            raise InputError(f"thresholds: {metric!r} {OVER_NAIVE} must be a finite number "
                             f"(the margin in {metric}'s units), got {margin!r}")
    if given:
        return {m: float(v) for m, v in given.items()}
    return {m: None for m in DEFAULT_FLOOR[task]}


@dataclasses.dataclass
class RowStats:
    """What the default margins' noise terms need, from the evaluated rows."""

    rows: int = 0
    positives: int = 0  # binary
    paired: PairedSquaredError | None = None  # regression: vs the train mean
    paired_median: PairedSquaredError | None = None  # regression: vs the train median
    label_ss: float | None = None  # regression: the eval labels' squared deviations, summed


def default_margin(task: str, metric: str, naive: float, stats: RowStats) -> tuple[float, str]:
    """The default margin for `metric` over the naive value, and how it was chosen."""
    share = DEFAULT_FLOOR[task].get(metric, 0.0)
    higher = HIGHER_IS_BETTER[metric]
    gap = (_PERFECT.get(metric, 1.0) - naive) if higher else naive
    skill = share * max(gap, 0.0)
    if share == 0.0:
        return STRICT, "strictly better"
    why = f"{share:.0%} of the way to a perfect score"
    noise = 0.0
    n = stats.rows
    if metric == "auc":
        pos, neg = stats.positives, n - stats.positives
        noise = Z * math.sqrt((pos + neg + 1) / (12 * pos * neg)) if pos and neg else math.inf
    elif metric == "accuracy":
        noise = Z * math.sqrt(naive * (1 - naive) / n) if n else math.inf
    elif metric == "rmse" and stats.paired is not None:
        mse = naive * naive
        se = stats.paired.standard_error()
        noise = naive - math.sqrt(max(mse - Z * se, 0.0)) if math.isfinite(se) else math.inf
    if noise > skill:
        if math.isinf(noise):
            return noise, ("chance cannot be ruled out: too few rows" +
                           (" or a single class" if metric == "auc" else ""))
        return noise, f"{Z:g} standard errors of chance on {n} rows, more than {why} ({skill:.4g})"
    return skill, why + (f", more than {Z:g} standard errors of chance on {n} rows ({noise:.4g})"
                         if noise else "")


def floor_checks(task: str, floor: Mapping[str, float | None], metrics: Mapping[str, float],
                 naive: Mapping[str, float], stats: RowStats,
                 median: tuple[float, Mapping[str, float]] | None = None
                 ) -> list[tuple[str, str, float, float, bool]]:
    """(metric, rule, value, naive value, passed) per floor rule, on the overall metrics;
    `median` (the train median and its metrics on the same rows) adds, for a regression, the
    same rule against it."""
    out: list[tuple[str, str, float, float, bool]] = []
    for metric, given in floor.items():
        if metric not in metrics or metric not in naive:
            raise InputError(f"thresholds: {OVER_NAIVE} of {metric!r}: the metric is not "
                             f"computed for this task (computed: "
                             f"{', '.join(sorted(k for k in metrics if k != 'examples'))})")
        out.append(_versus(task, metric, given, float(metrics[metric]), float(naive[metric]),
                           stats, "the naive reference"))
        if median is not None and metric in median[1]:
            value, robust = float(median[1][metric]), dataclasses.replace(
                stats, paired=stats.paired_median)
            out.append(_versus(task, metric, given, float(metrics[metric]), value, robust,
                               f"the train median ({median[0]:.6g} for every row)"))
    return out


def _versus(task: str, metric: str, given: float | None, value: float, reference: float,
            stats: RowStats, name: str) -> tuple[str, str, float, float, bool]:
    if given is None:
        margin, why = default_margin(task, metric, reference, stats)
    else:
        margin, why = given, f"thresholds' {OVER_NAIVE}"
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    better = sign * (value - reference)
    passed = bool(math.isfinite(value) and math.isfinite(margin) and better >= margin)
    rule = (f"is better than {name}" if margin == STRICT and given is None
            else f"beats {name} by >= {margin:.4g}: {why}")
    return metric, rule, value, reference, passed


def r2_check(r2: float, stats: RowStats) -> tuple[str, str, float, float, bool] | None:
    """A regression model must have R2 > 0 on the eval rows: beat their own mean, the best
    constant for them, which no label of the train split can poison. Always on: a negative R2
    is never worth serving. None when the eval labels are all equal (R2 is undefined)."""
    if stats.label_ss is None or not stats.label_ss > 0:
        return None
    return ("r2", "is above 0: better than the eval rows' own mean for every row (any constant "
            "does no better)", r2, 0.0, bool(math.isfinite(r2) and r2 > 0))
