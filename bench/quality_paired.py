"""Paired differences on the same evaluation rows, with a bootstrap interval: is conveyor better
than a baseline, worse, or is it a tie?

One evaluation split gives one point estimate per model, and two models' scores on the same
rows move together (a hard row is hard for both). So the difference is judged paired: each
bootstrap resample draws the eval rows with replacement once and scores both models on that
same draw; the 2.5th and 97.5th percentiles of the differences are the 95 % interval
(percentile bootstrap, 2,000 resamples, seeded). The difference is signed so that positive means
conveyor is better: baseline RMSE - conveyor RMSE, conveyor AUC - baseline AUC, conveyor
accuracy - baseline accuracy. An interval above 0 is "better", below 0 "worse", across 0 "tie".

The resampled AUC is the weighted Mann-Whitney statistic (ties count one half), computed from
each model's presorted scores in O(rows) per resample, so a resample costs a few passes over
the rows for every metric.

conveyor's per-row predictions come from its trained SavedModel scored on the run's own
Dataset splits (`predict_splits`, in a child process: TensorFlow), through the serving
signature that evaluate and serving use (`conveyor.evaluate.loading.ServingModel`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
BATCH_ROWS = 16_384
PREDICTIONS_FILE = "conveyor_predictions.npz"


# -- metrics with row weights (a bootstrap resample is a vector of counts) ---------------------

def weighted_rmse(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    return math.sqrt(float(np.dot(w, (y - p) ** 2)) / float(w.sum()))


def weighted_accuracy(correct: np.ndarray, w: np.ndarray) -> float:
    return float(np.dot(w, correct)) / float(w.sum())


class RankedScores:
    """One model's scores sorted once, with their groups of equal scores, for the weighted AUC
    of any resample (row weights) in one pass."""

    def __init__(self, positive: np.ndarray, score: np.ndarray):
        self.order = np.argsort(score, kind="mergesort")
        ranked = np.asarray(score, dtype="float64")[self.order]
        self.starts = np.concatenate([[0], np.flatnonzero(np.diff(ranked) != 0) + 1])
        self.positive = np.asarray(positive, dtype="float64")[self.order]

    def auc(self, w: np.ndarray) -> float:
        """P(score of a positive > score of a negative) + P(equal) / 2, rows weighted by `w`."""
        weights = np.asarray(w, dtype="float64")[self.order]
        pos = np.add.reduceat(weights * self.positive, self.starts)
        neg = np.add.reduceat(weights * (1.0 - self.positive), self.starts)
        total_pos, total_neg = float(pos.sum()), float(neg.sum())
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        below = np.cumsum(neg) - neg
        return float(np.dot(pos, below + 0.5 * neg)) / (total_pos * total_neg)


def _scorer(metric: str, y: np.ndarray, prediction: np.ndarray):
    """metric(w) for one model: RMSE of values, AUC of positive-class scores (y: is positive),
    accuracy of predicted labels (compared with y as text)."""
    if metric == "rmse":
        y_f, p_f = np.asarray(y, dtype="float64"), np.asarray(prediction, dtype="float64")
        return lambda w: weighted_rmse(y_f, p_f, w)
    if metric == "auc":
        return RankedScores(np.asarray(y, dtype=bool), np.asarray(prediction, dtype="float64")).auc
    if metric == "accuracy":
        same = np.asarray(y).astype(str) == np.asarray(prediction).astype(str)
        correct = same.astype("float64")
        return lambda w: weighted_accuracy(correct, w)
    raise ValueError(f"no paired bootstrap for metric {metric!r}")


def verdict_of(low: float, high: float) -> str:
    """better / worse when the interval excludes 0, else tie."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "tie"


def paired_difference(metric: str, y, conveyor, baseline, resamples: int = RESAMPLES,
                      seed: int = SEED, level: float = LEVEL) -> dict:
    """conveyor's advantage over the baseline on the same rows (positive: conveyor better), with
    its percentile-bootstrap interval and verdict. `y`: labels (RMSE: values; AUC: is the row of
    the positive class; accuracy: labels); `conveyor`, `baseline`: each model's prediction per
    row (value, positive-class score or label)."""
    y = np.asarray(y)
    n = len(y)
    if not n or len(conveyor) != n or len(baseline) != n:
        raise ValueError(f"paired rows differ: labels {n}, conveyor {len(conveyor)}, "
                         f"baseline {len(baseline)}")
    ours, theirs = _scorer(metric, y, conveyor), _scorer(metric, y, baseline)
    sign = -1.0 if metric == "rmse" else 1.0  # lower RMSE is better

    def advantage(w):
        return sign * (ours(w) - theirs(w))

    ones = np.ones(n)
    rng = np.random.default_rng(seed)
    draws = np.array([advantage(np.bincount(rng.integers(0, n, n), minlength=n))
                      for _ in range(resamples)])
    draws = draws[np.isfinite(draws)]
    tail = (1 - level) / 2
    low, high = (float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))) \
        if len(draws) else (float("nan"), float("nan"))
    return {"conveyor": ours(ones), "baseline": theirs(ones), "diff": advantage(ones),
            "low": low, "high": high, "level": level, "resamples": int(len(draws)),
            "rows": n, "verdict": verdict_of(low, high) if len(draws) else "unknown"}


# -- conveyor's predictions on the run's splits ---------------------------------------------

def labels_present(column):
    """Rows whose label is set (not NULL, not NaN): those evaluate scores and sklearn fits."""
    import pyarrow as pa
    import pyarrow.compute as pc

    present = pc.is_valid(column)
    if pa.types.is_floating(column.type):
        present = pc.and_(present, pc.invert(pc.fill_null(pc.is_nan(column), True)))
    return present


def predict_splits(model_dir: str, dataset_dir: str, label: str, out_dir: str,
                   splits: tuple[str, ...] = ("train", "eval")) -> int:
    """Child: score conveyor's SavedModel on each split's rows that have a label, in the
    Dataset's order; write PREDICTIONS_FILE (per split: the predictions, binary the probability
    of classes[1], multiclass class_label, regression value; and `<split>_y`, the labels, text
    unless regression) and predictions.json (task, classes, rows, seconds)."""
    import time

    from conveyor.evaluate.loading import ServingModel
    from conveyor.io import Dataset

    started = time.monotonic()
    model = ServingModel(model_dir)
    task = model.fitted.spec.task
    key = {"binary": "probability", "multiclass": "class_label"}.get(task, "value")
    dataset = Dataset(dataset_dir)
    arrays, rows = {}, {}
    for split in splits:
        table = dataset.read_table(split)
        table = table.filter(labels_present(table.column(label)))
        parts = [np.asarray(model.answer(b)[key]).reshape(-1)
                 for b in table.to_batches(BATCH_ROWS)]
        values = np.concatenate(parts) if parts else np.array([])
        if task == "multiclass":
            values = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values])
        else:
            values = values.astype("float64")
        y = table.column(label).to_pylist()
        arrays[split] = values
        arrays[f"{split}_y"] = (np.asarray(y, dtype="float64") if task == "regression"
                                else np.array([str(v) for v in y]))
        rows[split] = int(len(values))
    out = Path(out_dir)
    np.savez(out / PREDICTIONS_FILE, **arrays)
    (out / "predictions.json").write_text(json.dumps({
        "task": task, "classes": [str(c) for c in model.fitted.label_classes or []],
        "key": key, "rows": rows, "seconds": round(time.monotonic() - started, 1)}))
    return 0


def load_predictions(out_dir: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """predict_splits' output: (its predictions.json, split -> predictions)."""
    out = Path(out_dir)
    meta = json.loads((out / "predictions.json").read_text())
    with np.load(out / PREDICTIONS_FILE) as saved:
        return meta, {k: saved[k] for k in saved.files}


def conveyor_positive_scores(meta: dict, probability: np.ndarray, positive: str) -> np.ndarray:
    """conveyor's binary probability (of its classes[1]) as a score of sklearn's positive class."""
    classes = meta["classes"]
    if len(classes) != 2 or positive not in classes:
        raise ValueError(f"conveyor's classes {classes} do not hold the positive class "
                         f"{positive!r}")
    return probability if classes[1] == positive else 1.0 - probability


def conveyor_metrics(task: str, classes: list[str], y: np.ndarray, prediction: np.ndarray) -> dict:
    """conveyor's metrics from its per-row predictions (`predict_splits`), exactly as the
    baselines are scored: RMSE and R², AUC (of classes[1]) and accuracy at 0.5, accuracy."""
    if not len(y):
        return {}
    ones = np.ones(len(y))
    if task == "regression":
        y = np.asarray(y, dtype="float64")
        sst = float(np.sum((y - y.mean()) ** 2))
        sse = float(np.sum((y - prediction) ** 2))
        return {"rmse": weighted_rmse(y, prediction, ones), "r2": 1 - sse / sst if sst else 0.0}
    if task == "binary":
        positive = np.asarray(y).astype(str) == classes[1]
        predicted = np.where(prediction >= 0.5, classes[1], classes[0])
        return {"auc": RankedScores(positive, prediction).auc(ones),
                "accuracy": weighted_accuracy((predicted == np.asarray(y).astype(str)) * 1.0,
                                              ones)}
    return {"accuracy": weighted_accuracy((np.asarray(prediction).astype(str)
                                           == np.asarray(y).astype(str)) * 1.0, ones)}
