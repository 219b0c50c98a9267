"""Binary evaluations built from scores counted by hand, for the evaluate and report tests."""

from __future__ import annotations

import numpy as np

from conveyor.evaluate import metrics as m
from conveyor.evaluate.result import Check, EvaluationResult

# Ten rows counted by hand at 0.5 (probability >= 0.5 is positive, 0.5 itself included):
# positives predicted: 0.5 (y 1), 0.55 (0), 0.65 (1), 0.85 (1), 0.95 (1) -> TP 4, FP 1
# negatives predicted: 0.05 (0), 0.15 (0), 0.35 (1), 0.45 (0), 0.49 (1) -> TN 3, FN 2
HAND_P = np.array([0.05, 0.15, 0.35, 0.45, 0.5, 0.55, 0.65, 0.85, 0.95, 0.49])
HAND_Y = np.array([0, 0, 1, 0, 1, 0, 1, 1, 1, 1], dtype=bool)


def accumulated(y, p, batch=100_000) -> m.Binary:
    acc = m.Binary()
    for i in range(0, len(y), batch):
        acc.update(y[i:i + batch], p[i:i + batch])
    return acc


def binary_result(acc: m.Binary, **kw) -> EvaluationResult:
    overall = acc.result()
    fields = dict(task="binary", blessed=True, checks=[Check("auc", ">= 0.5", 0.9, None, True)],
                  metrics={"overall": overall, "island=Dream": overall},
                  baseline_metrics={"overall": overall, "island=Dream": overall},
                  baseline_uri="/models/penguins/2", baseline_version=2, roc=acc.roc(),
                  confusion=acc.confusion(), classes=["female", "male"], seconds=0.1,
                  naive_metrics={"overall": overall, "island=Dream": overall},
                  naive="the train class prior", curves={"candidate": acc.curves()},
                  decision=acc.decision(),
                  model={"name": "penguins", "uri": "/runs/7/train/model",
                         "base_path": "/models/penguins", "version": None,
                         "newest_version": 2, "served_version": 2, "label": "sex",
                         "task": "binary", "split": "eval",
                         "evaluated_at": "2026-12-01T10:00:00+00:00"})
    fields.update(kw)
    return EvaluationResult(**fields)
