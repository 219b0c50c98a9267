"""Is the candidate really better than the baseline? A paired comparison on the same rows.

The candidate and the baseline answer the same evaluation rows, so their errors are correlated
and a paired test is the fair one (two unpaired intervals overlap far more often than the
difference is in doubt). For each task's primary metric, an interval for the improvement
(candidate minus baseline, signed so that positive is better) and a one-sided p-value of "the
candidate is no better":

- AUC (binary): DeLong, DeLong and Clarke-Pearson (1988), the paired version: each row's
  placement value against the other class, their covariances between the two models. Scores
  are kept as 16-bit bins (65,536 equal-width bins of [0, 1]) for up to `max_rows` rows, a
  uniform sample beyond that (the result says so); ties count one half.
- accuracy (multiclass; binary too when asked): McNemar's test on the rows exactly one of the
  two gets right, as its mid-p version (the exact binomial tail, the observed count weighted
  one half): the exact test is conservative for the few discordant rows of a small eval split
  (4 rows to 0 gives p = 0.0625), mid-p keeps close to the nominal level (Fagerland, Lydersen
  and Laake, 2013); and a Wald interval for the paired difference of proportions. Counts only:
  memory does not grow with the rows.
- RMSE, MAE, log loss: the per-row losses' paired differences; the delta method for RMSE (the
  square root of a mean). Sums only.

All of them are O(rows) after the batches are seen; nothing resamples (a bootstrap of 1 M rows
x 1,000 replicates is 10^9 draws).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

SCORE_BINS = 1 << 16
MAX_ROWS = 2_000_000  # rows whose scores the AUC comparison keeps (5 bytes each, + a priority)
METHODS = {"auc": "DeLong (paired)", "accuracy": "McNemar mid-p / paired Wald interval",
           "rmse": "paired squared errors, delta method", "mae": "paired absolute errors",
           "log_loss": "paired per-row log loss"}
LOWER_IS_BETTER = {"rmse", "mae", "log_loss"}
_TASK_METRICS = {"binary": ("auc", "accuracy", "log_loss"), "multiclass": ("accuracy", "log_loss"),
                 "regression": ("rmse", "mae")}


def metrics_for(task: str) -> tuple[str, ...]:
    """The metrics a paired test exists for, for a model of `task`."""
    return _TASK_METRICS.get(task, ())


def supported(task: str, metric: str) -> bool:
    return metric in metrics_for(task)


def _binomial_tail(k: int, n: int, mid: bool = False) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly; with `mid`, P(X > k) + P(X = k) / 2 (the
    mid-p value). Summed in logs from the far side of the mode, where the terms only shrink, and
    stopped once they no longer count: O(sqrt(n)) terms, whatever n."""
    if k > n:
        return 0.0
    if k <= 0:
        return 1.0 if not mid or k < 0 else 1.0 - 0.5 ** (n + 1)
    if 2 * k <= n:  # mostly mass: 1 - P(X <= k - 1) = 1 - P(X >= n - k + 1), by symmetry
        below = _binomial_tail(n - k + 1, n)
        at = math.exp(_log_choose(n, k) + n * math.log(0.5))
        return min(1.0, max(0.0, 1.0 - below - (at / 2 if mid else 0.0)))
    log_term = _log_choose(n, k) + n * math.log(0.5)
    total, first = 0.0, log_term
    for i in range(k, n + 1):
        weight = 0.5 if mid and i == k else 1.0
        total += weight * math.exp(log_term - first)
        if log_term - first < -40:
            break
        log_term += math.log(n - i) - math.log(i + 1) if i < n else 0.0
    return min(1.0, math.exp(first) * total)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


class PairedComparison:
    """Accumulate (label, candidate answer, baseline answer) batch by batch; `result()` says by
    how much the candidate is better on `metric` and how sure that is."""

    def __init__(self, task: str, metric: str, *, level: float = 0.95,
                 max_rows: int = MAX_ROWS, seed: int = 0) -> None:
        if not supported(task, metric):
            raise ValueError(f"no paired comparison of {metric!r} for a {task} model")
        self.task, self.metric, self.level = task, metric, level
        self.rows = 0
        self.sums = np.zeros(5)  # a, b, a^2, b^2, ab of the per-row losses (or correct flags)
        self.discordant = [0, 0]  # rows only the candidate / only the baseline gets right
        self.max_rows = max_rows
        self.rng = np.random.default_rng(seed)
        self.kept = {"y": np.empty(0, bool), "a": np.empty(0, np.uint16),
                     "b": np.empty(0, np.uint16), "priority": np.empty(0)}

    # -- accumulating ---------------------------------------------------------------------

    def update(self, y: np.ndarray, candidate: np.ndarray, baseline: np.ndarray) -> None:
        """`y`: labels (class indices, or values for regression); `candidate`, `baseline`: the
        models' answers on the same rows (probabilities of class 1 for binary, a row of class
        probabilities for multiclass, predicted values for regression)."""
        n = len(y)
        if not n:
            return
        self.rows += n
        if self.metric == "auc":
            self._keep(np.asarray(y).astype(bool), self._bins(candidate), self._bins(baseline))
            return
        if self.metric == "accuracy":
            a, b = self._correct(y, candidate), self._correct(y, baseline)
            self.discordant[0] += int(np.sum(a & ~b))
            self.discordant[1] += int(np.sum(b & ~a))
            a, b = a.astype(np.float64), b.astype(np.float64)
        else:
            a, b = self._loss(y, candidate), self._loss(y, baseline)
        self.sums += [a.sum(), b.sum(), (a * a).sum(), (b * b).sum(), (a * b).sum()]

    @staticmethod
    def _bins(p: np.ndarray) -> np.ndarray:
        p = np.clip(np.nan_to_num(np.asarray(p, np.float64).reshape(-1), nan=0.0), 0.0, 1.0)
        return np.minimum((p * SCORE_BINS).astype(np.int64), SCORE_BINS - 1).astype(np.uint16)

    def _correct(self, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p)
        guess = (p.reshape(-1) >= 0.5).astype(np.int64) if self.task == "binary" \
            else np.argmax(p, axis=1)
        return guess == np.asarray(y).astype(np.int64)

    def _loss(self, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            error = np.asarray(p, np.float64).reshape(-1) - np.asarray(y, np.float64)
            return error * error if self.metric == "rmse" else np.abs(error)
        eps = 1e-7
        y = np.asarray(y).astype(np.int64)
        if self.task == "binary":
            q = np.clip(np.asarray(p, np.float64).reshape(-1), eps, 1 - eps)
            return -np.where(y == 1, np.log(q), np.log(1 - q))
        q = np.clip(np.asarray(p, np.float64)[np.arange(len(y)), y], eps, 1.0)
        return -np.log(q)

    def _keep(self, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        kept = self.kept
        priority = np.concatenate([kept["priority"], self.rng.random(len(y))])
        columns = {"y": np.concatenate([kept["y"], y]), "a": np.concatenate([kept["a"], a]),
                   "b": np.concatenate([kept["b"], b])}
        if len(priority) > self.max_rows:  # a uniform sample: the lowest priorities stay
            chosen = np.argpartition(priority, self.max_rows - 1)[: self.max_rows]
            priority = priority[chosen]
            columns = {k: v[chosen] for k, v in columns.items()}
        self.kept = {**columns, "priority": priority}

    # -- the answer -------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """{metric, method, rows, candidate, baseline, improvement, interval [low, high] of the
        improvement at `level`, p_value (one-sided: no better), note}; figures are NaN where
        the rows cannot tell (no rows, one class, no variance)."""
        estimate, se, p_value, values, note = self._estimate()
        z = NormalDist().inv_cdf(0.5 + self.level / 2)
        low, high = (estimate - z * se, estimate + z * se) if math.isfinite(se) else (
            math.nan, math.nan)
        return {"metric": self.metric, "method": METHODS[self.metric], "rows": self.rows,
                "level": self.level, "candidate": float(values[0]),
                "baseline": float(values[1]), "improvement": float(estimate),
                "interval": [float(low), float(high)], "p_value": float(p_value), "note": note}

    def _estimate(self) -> tuple[float, float, float, tuple[float, float], str]:
        nan = math.nan
        if not self.rows:
            return nan, nan, nan, (nan, nan), "no rows"
        if self.metric == "auc":
            return self._delong()
        n = self.rows
        sa, sb, saa, sbb, sab = self.sums
        ma, mb = sa / n, sb / n
        var_a = max(saa / n - ma * ma, 0.0)
        var_b = max(sbb / n - mb * mb, 0.0)
        cov = sab / n - ma * mb
        if self.metric == "accuracy":
            only_a, only_b = self.discordant
            improvement = (only_a - only_b) / n
            se = math.sqrt(max((only_a + only_b) / n - improvement ** 2, 0.0) / n)
            p_value = (_binomial_tail(only_a, only_a + only_b, mid=True) if only_a + only_b
                       else 1.0)
            return improvement, se, p_value, (ma, mb), (
                f"{only_a} rows only the candidate gets right, {only_b} only the baseline")
        var_diff = max(var_a + var_b - 2 * cov, 0.0) / n
        if self.metric == "rmse":
            ra, rb = math.sqrt(ma), math.sqrt(mb)
            values = (ra, rb)
            improvement = rb - ra
            if ra > 0 and rb > 0:  # delta method: d sqrt(m) = dm / (2 sqrt(m))
                ga, gb = 1 / (2 * ra), 1 / (2 * rb)
                var = (ga * ga * var_a + gb * gb * var_b - 2 * ga * gb * cov) / n
                se = math.sqrt(max(var, 0.0))
            else:
                se = math.sqrt(var_diff)
        else:
            values = (ma, mb)
            improvement = mb - ma
            se = math.sqrt(var_diff)
        return improvement, se, self._p(improvement, se), values, ""

    @staticmethod
    def _p(improvement: float, se: float) -> float:
        if se > 0:
            return 1.0 - NormalDist().cdf(improvement / se)
        return 0.0 if improvement > 0 else 1.0

    def _delong(self) -> tuple[float, float, float, tuple[float, float], str]:
        y, kept = self.kept["y"], len(self.kept["y"])
        note = "" if kept == self.rows else (
            f"scores of a uniform sample of {kept} of the {self.rows} rows")
        positives, negatives = int(y.sum()), int((~y).sum())
        if not positives or not negatives:
            nan = math.nan
            return nan, nan, nan, (nan, nan), "one class only: AUC is undefined"
        aucs, v10, v01 = [], [], []
        for scores in (self.kept["a"], self.kept["b"]):
            pos = np.bincount(scores[y], minlength=SCORE_BINS).astype(np.float64)
            neg = np.bincount(scores[~y], minlength=SCORE_BINS).astype(np.float64)
            neg_below = np.cumsum(neg) - neg  # negatives scored strictly lower, per bin
            pos_above = pos.sum() - np.cumsum(pos)  # positives scored strictly higher
            place_pos = (neg_below + 0.5 * neg)[scores[y]] / negatives  # V10 per positive
            place_neg = (pos_above + 0.5 * pos)[scores[~y]] / positives  # V01 per negative
            aucs.append(float(place_pos.mean()))
            v10.append(place_pos)
            v01.append(place_neg)
        s10 = np.cov(np.vstack(v10)) if positives > 1 else np.zeros((2, 2))
        s01 = np.cov(np.vstack(v01)) if negatives > 1 else np.zeros((2, 2))
        var = ((s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / positives
               + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / negatives)
        improvement = aucs[0] - aucs[1]
        se = math.sqrt(max(float(var), 0.0))
        return improvement, se, self._p(improvement, se), (aucs[0], aucs[1]), note
