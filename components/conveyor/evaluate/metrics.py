"""Streaming evaluation metrics (numpy only): accumulate batch by batch, read at the end.

- binary: AUC ROC and AUC PR (from score histograms over 10,000 equal-width thresholds, as
  Keras' AUC does with `num_thresholds`), accuracy, precision and recall at the decision
  threshold (0.5, `conveyor.model.decision`), log loss, and calibration (mean prediction / mean
  label); a ROC curve and a confusion matrix for the UI; the threshold table from the same
  histograms (`conveyor.evaluate.cutoffs`);
- multiclass: accuracy, macro and weighted F1, log loss, and the confusion matrix;
- regression: RMSE, MAE and R squared (from sums).

Each metric says whether higher is better (`HIGHER_IS_BETTER`), which thresholds use.

For the report's charts, in memory that does not grow with the rows: binary ROC/PR curves and
a reliability diagram come from the same score histograms (`Binary.curves`); a multiclass
accumulator can `track` one-vs-rest score histograms of up to `MAX_CURVE_CLASSES` classes and a
top-label confidence histogram (`Multiclass.curves`); a regression one can keep a uniform
sample of `SAMPLE_PAIRS` (actual, predicted) pairs (`Regression.curves`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from conveyor.evaluate import cutoffs
from conveyor.model import decision

EPS = 1e-7
BINS = 10_000
HIGHER_IS_BETTER = {
    "auc": True, "auc_pr": True, "accuracy": True, "precision": True, "recall": True,
    "macro_f1": True, "weighted_f1": True, "r2": True,
    "log_loss": False, "rmse": False, "mae": False, "calibration_error": False,
}
PRIMARY = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
CURVE_POINTS = 201  # points per ROC / PR curve in the report
CALIBRATION_BINS = 10
CURVE_BINS = 1000  # score bins of each tracked multiclass one-vs-rest curve
MAX_CURVE_CLASSES = 10
SAMPLE_PAIRS = 2048  # (actual, predicted) pairs kept for regression charts


def _round(values: np.ndarray) -> list[float]:
    return [float(f"{v:.5g}") if np.isfinite(v) else float(v) for v in np.asarray(values, float)]


def _curves(pos: np.ndarray, neg: np.ndarray, points: int = CURVE_POINTS) -> dict[str, Any]:
    """ROC and PR curves (`tpr` is the recall) from score histograms (`pos`, `neg` counts per
    equal-width bin) at up to `points` + 2 thresholds, and a reliability diagram over
    `CALIBRATION_BINS` bins (mean score from the bin centres, to 1/(2 x bins))."""
    bins = len(pos)
    tp = np.cumsum(pos[::-1])[::-1]
    fp = np.cumsum(neg[::-1])[::-1]
    p_all, n_all = pos.sum(), neg.sum()
    # Operating points: bins holding rows, thinned to `points` at equal shares of the rows,
    # from threshold 0 (everything positive) to above the top score (nothing positive).
    occupied = np.flatnonzero(pos + neg)
    if len(occupied) > points:
        share = np.cumsum((pos + neg)[occupied]) / (p_all + n_all)
        at = np.searchsorted(share, np.linspace(0, 1, points))
        occupied = occupied[np.clip(at, 0, len(occupied) - 1)]
    pick = np.unique(np.concatenate([[0], occupied]))
    tp_, fp_ = np.append(tp[pick], 0), np.append(fp[pick], 0)
    tpr = tp_ / p_all if p_all else np.full(len(tp_), np.nan)
    fpr = fp_ / n_all if n_all else np.full(len(tp_), np.nan)
    predicted = tp_ + fp_
    precision = np.where(predicted > 0, tp_ / np.maximum(predicted, 1), np.nan)
    thresholds = np.append(pick / bins, 1.0)
    centers = (np.arange(bins) + 0.5) / bins
    group = np.minimum((np.arange(bins) * CALIBRATION_BINS) // bins, CALIBRATION_BINS - 1)
    count = np.bincount(group, weights=pos + neg, minlength=CALIBRATION_BINS)
    mean_p = np.bincount(group, weights=(pos + neg) * centers, minlength=CALIBRATION_BINS)
    observed = np.bincount(group, weights=pos, minlength=CALIBRATION_BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted_mean, observed_rate = mean_p / count, observed / count
    return {"threshold": _round(thresholds), "fpr": _round(fpr), "tpr": _round(tpr),
            "precision": _round(precision),  # recall is tpr
            "positive_rate": float(p_all / (p_all + n_all)) if p_all + n_all else float("nan"),
            "calibration": {"predicted": _round(predicted_mean), "observed": _round(observed_rate),
                            "count": [int(c) for c in count]}}


class PairSample:
    """A uniform sample of at most `size` (actual, predicted) pairs: each row draws a priority
    from a generator seeded with 0, the lowest are kept (the same rows give the same sample)."""

    def __init__(self, size: int = SAMPLE_PAIRS) -> None:
        self.size = size
        self.rng = np.random.default_rng(0)
        self.priority = np.empty(0)
        self.pairs = np.empty((0, 2))

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        priority = np.concatenate([self.priority, self.rng.random(len(y))])
        pairs = np.concatenate([self.pairs, np.column_stack([y, p]).astype(np.float64)])
        if len(priority) > self.size:
            kept = np.argpartition(priority, self.size - 1)[: self.size]
            priority, pairs = priority[kept], pairs[kept]
        self.priority, self.pairs = priority, pairs


class Binary:
    def __init__(self) -> None:
        self.pos = np.zeros(BINS, dtype=np.int64)
        self.neg = np.zeros(BINS, dtype=np.int64)
        self.n = 0
        self.log_loss = 0.0
        self.sum_p = 0.0
        self.sum_y = 0.0

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        y = y.astype(bool)
        p = np.clip(p.astype(np.float64), 0.0, 1.0)
        bins = np.minimum((p * BINS).astype(np.int64), BINS - 1)
        self.pos += np.bincount(bins[y], minlength=BINS)
        self.neg += np.bincount(bins[~y], minlength=BINS)
        self.n += len(y)
        q = np.clip(p, EPS, 1 - EPS)
        self.log_loss -= float(np.sum(np.where(y, np.log(q), np.log(1 - q))))
        self.sum_p += float(p.sum())
        self.sum_y += float(y.sum())

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds, tp, fp, fn) for `score >= threshold`, thresholds descending."""
        tp = np.cumsum(self.pos[::-1])[::-1]
        fp = np.cumsum(self.neg[::-1])[::-1]
        fn = self.pos.sum() - tp
        return np.arange(BINS) / BINS, tp, fp, fn

    def roc(self, points: int = 101) -> dict[str, list[float]]:
        thresholds, tp, fp, _ = self.curve()
        pos, neg = max(self.pos.sum(), 1), max(self.neg.sum(), 1)
        pick = np.unique(np.linspace(0, BINS - 1, points).astype(int))
        return {"threshold": thresholds[pick].tolist(), "tpr": (tp[pick] / pos).tolist(),
                "fpr": (fp[pick] / neg).tolist()}

    def curves(self) -> dict[str, Any]:
        """ROC, PR (`CURVE_POINTS` thresholds) and calibration, from the score histograms."""
        return _curves(self.pos, self.neg)

    def confusion(self) -> list[list[int]]:
        """[[tn, fp], [fn, tp]] at the decision threshold (`conveyor.model.decision`)."""
        cut = int(round(decision.THRESHOLD * BINS))
        tn, fp = int(self.neg[:cut].sum()), int(self.neg[cut:].sum())
        fn, tp = int(self.pos[:cut].sum()), int(self.pos[cut:].sum())
        return [[tn, fp], [fn, tp]]

    def decision(self) -> dict[str, Any] | None:
        """The confusion matrix at the decision threshold and the threshold table
        (`conveyor.evaluate.cutoffs.summary`); None without rows."""
        if not self.n:
            return None
        return cutoffs.summary(self.pos, self.neg, self.sum_p / self.n)

    def result(self) -> dict[str, float]:
        if not self.n:
            return {}
        _, tp, fp, fn = self.curve()
        pos, neg = self.pos.sum(), self.neg.sum()
        tpr = np.concatenate([tp / max(pos, 1), [0.0]])
        fpr = np.concatenate([fp / max(neg, 1), [0.0]])
        auc = float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        recall = tp / max(pos, 1)
        r = np.concatenate([recall, [0.0]])
        auc_pr = float(np.sum((r[:-1] - r[1:]) * precision))
        (tn0, fp0), (fn0, tp0) = self.confusion()
        mean_p, mean_y = self.sum_p / self.n, self.sum_y / self.n
        return {
            "auc": auc, "auc_pr": auc_pr, "accuracy": (tp0 + tn0) / self.n,
            "precision": tp0 / (tp0 + fp0) if tp0 + fp0 else 0.0,
            "recall": tp0 / (tp0 + fn0) if tp0 + fn0 else 0.0,
            "log_loss": self.log_loss / self.n,
            "calibration": mean_p / mean_y if mean_y else float("nan"),
            "calibration_error": abs(mean_p - mean_y),
            "examples": float(self.n),
        }


class Multiclass:
    def __init__(self, classes: int) -> None:
        self.matrix = np.zeros((classes, classes), dtype=np.int64)
        self.log_loss = 0.0
        self.n = 0
        self.tracked: np.ndarray | None = None  # class indices with one-vs-rest histograms

    def track(self, classes: np.ndarray | list[int]) -> None:
        """Keep one-vs-rest score histograms of these classes (at most `MAX_CURVE_CLASSES`)
        and a top-label confidence histogram, for `curves`."""
        self.tracked = np.asarray(list(classes)[:MAX_CURVE_CLASSES], dtype=np.int64)
        k = len(self.tracked)
        self.pos = np.zeros((k, CURVE_BINS), dtype=np.int64)
        self.neg = np.zeros((k, CURVE_BINS), dtype=np.int64)
        self.top = np.zeros((2, CURVE_BINS), dtype=np.int64)  # wrong, right per confidence bin

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        y = y.astype(np.int64)
        k = len(self.matrix)
        predicted = p.argmax(axis=1)
        np.add.at(self.matrix, (y, predicted), 1)
        self.log_loss -= float(np.sum(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))))
        self.n += len(y)
        assert k == p.shape[1]
        if self.tracked is not None and len(y):
            self._update_curves(y, np.asarray(p, dtype=np.float64), predicted, self.tracked)

    def _update_curves(self, y: np.ndarray, p: np.ndarray, predicted: np.ndarray,
                       tracked: np.ndarray) -> None:
        def bins(scores: np.ndarray) -> np.ndarray:
            return np.minimum((np.clip(scores, 0.0, 1.0) * CURVE_BINS).astype(np.int64),
                              CURVE_BINS - 1)

        k = len(tracked)
        if k:
            b = bins(p[:, tracked])  # rows x tracked
            is_class = y[:, None] == tracked[None, :]
            flat = b + np.arange(k)[None, :] * CURVE_BINS
            size = k * CURVE_BINS
            self.pos += np.bincount(flat[is_class], minlength=size).reshape(k, CURVE_BINS)
            self.neg += np.bincount(flat[~is_class], minlength=size).reshape(k, CURVE_BINS)
        confidence = bins(p[np.arange(len(y)), predicted])
        right = predicted == y
        self.top[1] += np.bincount(confidence[right], minlength=CURVE_BINS)
        self.top[0] += np.bincount(confidence[~right], minlength=CURVE_BINS)

    def curves(self) -> dict[str, Any] | None:
        """One-vs-rest ROC/PR of the tracked classes (by class index) and the calibration of
        the top label (its confidence against how often it is right); None if not tracked."""
        if self.tracked is None:
            return None
        per_class = {int(c): _curves(self.pos[i], self.neg[i]) for i, c in enumerate(self.tracked)}
        top = _curves(self.top[1], self.top[0])
        return {"classes": per_class, "top_label_calibration": top["calibration"]}

    def result(self) -> dict[str, float]:
        if not self.n:
            return {}
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        support = m.sum(axis=1)
        predicted = m.sum(axis=0)
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                       where=(precision + recall) > 0)
        present = support > 0
        return {"accuracy": float(tp.sum() / self.n),
                "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
                "weighted_f1": float((f1 * support).sum() / support.sum()),
                "log_loss": self.log_loss / self.n, "examples": float(self.n)}


class Regression:
    """RMSE, MAE and R2 from running sums; the labels' mean and sum of squared deviations are
    merged batch by batch (Chan et al.), not read from sum(y^2) - sum(y)^2 / n, which loses
    every digit when the labels are large next to their spread."""

    def __init__(self) -> None:
        self.n = 0
        self.sse = self.sae = self.mean_y = self.m2_y = 0.0
        self.sample: PairSample | None = None

    def track(self, size: int = SAMPLE_PAIRS) -> None:
        """Keep a uniform sample of `size` (actual, predicted) pairs, for `curves`."""
        self.sample = PairSample(size)

    def curves(self) -> dict[str, Any] | None:
        if self.sample is None:
            return None
        pairs = self.sample.pairs
        return {"actual": _round(pairs[:, 0]), "predicted": _round(pairs[:, 1]),
                "rows": self.n}

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        y, p = y.astype(np.float64), p.astype(np.float64)
        if not len(y):
            return
        if self.sample is not None:
            self.sample.update(y.ravel(), p.ravel())
        e = p - y
        self.sse += float(np.sum(e * e))
        self.sae += float(np.sum(np.abs(e)))
        n_b, mean_b = len(y), float(y.mean())
        m2_b = float(np.sum((y - mean_b) ** 2))
        n = self.n + n_b
        delta = mean_b - self.mean_y
        self.m2_y += m2_b + delta * delta * self.n * n_b / n
        self.mean_y += delta * n_b / n
        self.n = n

    @property
    def sst(self) -> float:
        """The labels' sum of squared deviations from their own mean (R2's denominator)."""
        return self.m2_y

    def result(self) -> dict[str, float]:
        if not self.n:
            return {}
        sst = self.m2_y
        return {"rmse": float(np.sqrt(self.sse / self.n)), "mae": self.sae / self.n,
                "r2": 1 - self.sse / sst if sst > 0 else 0.0, "examples": float(self.n)}


def accumulator(task: str, classes: int = 0) -> Any:
    return {"binary": Binary, "regression": Regression}.get(task, lambda: Multiclass(classes))()
