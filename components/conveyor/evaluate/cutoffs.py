"""A binary model's decisions at several cut-offs, read from the score histograms evaluate keeps
for its AUC (`conveyor.evaluate.metrics.Binary`: 10,000 equal-width bins), so their memory does
not grow with the rows: the confusion matrix at the decision threshold
(`conveyor.model.decision`), and precision, recall, F1 and the share predicted positive at
`CUTOFFS`, at that threshold and where F1 is highest.

A row counts as predicted positive when its probability is at least the cut-off, as the serving
signature decides; cut-offs are read on the bins' grid (multiples of 1/10,000), exact there.
A rate with nothing to divide by (no row predicted positive: precision; no positive row:
recall) is None (null in evaluation.json), not 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from conveyor.model import decision

CUTOFFS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def _row(threshold: float, tp: int, fp: int, fn: int, tn: int) -> dict[str, Any]:
    n = tp + fp + fn + tn
    return {"threshold": round(float(threshold), 4), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "predicted_positive": _ratio(tp + fp, n), "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "accuracy": _ratio(tp + tn, n)}


def at(pos: np.ndarray, neg: np.ndarray, threshold: float) -> dict[str, Any]:
    """The counts and rates of `score >= threshold` from positive and negative histograms."""
    bins = len(pos)
    k = int(np.clip(round(threshold * bins), 0, bins))
    tp, fp = int(pos[k:].sum()), int(neg[k:].sum())
    return _row(k / bins, tp, fp, int(pos.sum()) - tp, int(neg.sum()) - fp)


def best_f1(pos: np.ndarray, neg: np.ndarray) -> dict[str, Any] | None:
    """The cut-off (on the bins' grid) with the highest F1; the highest such cut-off on a tie.
    None without a positive row."""
    positives = int(pos.sum())
    if not positives:
        return None
    tp = np.cumsum(pos[::-1])[::-1]
    fp = np.cumsum(neg[::-1])[::-1]
    f1 = 2 * tp / (2 * tp + fp + (positives - tp))
    k = len(f1) - 1 - int(np.argmax(f1[::-1]))
    return at(pos, neg, k / len(pos))


def summary(pos: np.ndarray, neg: np.ndarray, mean_predicted: float,
            cutoffs: tuple[float, ...] = CUTOFFS) -> dict[str, Any]:
    """What evaluation.json's `decision` holds: the decision threshold and where it comes from,
    the confusion matrix there, the table at `cutoffs` plus that threshold (its row marked
    `chosen`), the cut-off with the highest F1, and the mean predicted probability and
    observed positive rate that calibration compares."""
    chosen = decision.THRESHOLD
    table = [at(pos, neg, t) for t in sorted({*cutoffs, chosen})]
    for row in table:
        row["chosen"] = row["threshold"] == round(chosen, 4)
    here = at(pos, neg, chosen)
    n = int(pos.sum() + neg.sum())
    return {"threshold": chosen, "source": decision.SOURCE,
            "confusion": {k: here[k] for k in ("tn", "fp", "fn", "tp")},
            "table": table, "best_f1": best_f1(pos, neg),
            "positive_rate": _ratio(int(pos.sum()), n), "mean_predicted": mean_predicted}
