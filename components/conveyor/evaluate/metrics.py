"""Streaming evaluation metrics (numpy only): accumulate batch by batch, read at the end.

- binary: AUC ROC and AUC PR (from score histograms over 10,000 equal-width thresholds, as
  Keras' AUC does with `num_thresholds`), accuracy, precision and recall at 0.5, log loss, and
  calibration (mean prediction / mean label); a ROC curve and a confusion matrix for the UI;
- multiclass: accuracy, macro and weighted F1, log loss, and the confusion matrix;
- regression: RMSE, MAE and R squared (from sums).

Each metric says whether higher is better (`HIGHER_IS_BETTER`), which thresholds use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-7
BINS = 10_000
HIGHER_IS_BETTER = {
    "auc": True, "auc_pr": True, "accuracy": True, "precision": True, "recall": True,
    "macro_f1": True, "weighted_f1": True, "r2": True,
    "log_loss": False, "rmse": False, "mae": False, "calibration_error": False,
}
PRIMARY = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}


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

    def confusion(self) -> list[list[int]]:
        cut = BINS // 2
        tn, fp = int(self.neg[:cut].sum()), int(self.neg[cut:].sum())
        fn, tp = int(self.pos[:cut].sum()), int(self.pos[cut:].sum())
        return [[tn, fp], [fn, tp]]

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

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        y = y.astype(np.int64)
        k = len(self.matrix)
        np.add.at(self.matrix, (y, p.argmax(axis=1)), 1)
        self.log_loss -= float(np.sum(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))))
        self.n += len(y)
        assert k == p.shape[1]

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
    def __init__(self) -> None:
        self.n = 0
        self.sse = self.sae = self.sum_y = self.sum_y2 = 0.0

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        y, p = y.astype(np.float64), p.astype(np.float64)
        e = p - y
        self.n += len(y)
        self.sse += float(np.sum(e * e))
        self.sae += float(np.sum(np.abs(e)))
        self.sum_y += float(y.sum())
        self.sum_y2 += float(np.sum(y * y))

    def result(self) -> dict[str, float]:
        if not self.n:
            return {}
        sst = self.sum_y2 - self.sum_y ** 2 / self.n
        return {"rmse": float(np.sqrt(self.sse / self.n)), "mae": self.sae / self.n,
                "r2": 1 - self.sse / sst if sst > 0 else 0.0, "examples": float(self.n)}


def accumulator(task: str, classes: int = 0) -> Any:
    return {"binary": Binary, "regression": Regression}.get(task, lambda: Multiclass(classes))()
