"""What an evaluation found: each check, and the result evaluate writes as evaluation.json and
push, promote and the reports read."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Check:
    metric: str
    rule: str
    value: float
    baseline: float | None
    passed: bool
    reference: str = "baseline"  # what `baseline` holds: the baseline's value, or the naive one

    def line(self) -> str:
        base = (f" ({self.reference} {self.baseline:.6g})" if self.baseline is not None else "")
        verdict = "ok  " if self.passed else "FAIL"
        return f"{verdict} {self.metric} = {self.value:.6g}{base}: {self.rule}"


@dataclasses.dataclass
class EvaluationResult:
    task: str
    blessed: bool
    checks: list[Check]
    metrics: dict[str, dict[str, float]]  # slice -> metric -> value ("overall" first)
    baseline_metrics: dict[str, dict[str, float]] | None
    baseline_uri: str | None
    roc: dict[str, list[float]] | None
    confusion: list[list[int]] | None
    classes: list[str]
    seconds: float
    infra: dict | None = None  # the infra verdict push may reuse (see the module's docstring)
    infra_note: str = ""  # why there is none
    naive_metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    naive: str = ""  # what the naive reference predicts, and from what
    skipped_baselines: list[dict[str, str]] = dataclasses.field(default_factory=list)
    baseline_version: int | None = None
    newest_version_uri: str | None = None  # newest published version when evaluate looked
    baseline_note: str = ""  # e.g. the rows a baseline could not score, and why
    candidate_on_baseline_rows: dict[str, float] | None = None  # when they are not all rows
    signature_diff: dict | None = None
    signature: dict | None = None  # the candidate's serving signature
    # Candidate vs baseline on the same rows, per metric with a paired test
    # (`conveyor.evaluate.significance`): improvement, interval, one-sided p-value, method.
    comparison: dict[str, dict] | None = None
    # For the report's charts, bounded whatever the rows (`conveyor.evaluate.metrics`): binary
    # ROC/PR/calibration of the candidate (and "baseline"); multiclass one-vs-rest curves of up to
    # 10 classes (the most frequent in train) and top-label calibration; regression a uniform
    # sample of (actual, predicted) pairs.
    curves: dict | None = None
    # Statistics of the candidate's predictions (class_label or value) over the evaluated rows,
    # as `conveyor.monitor` reads them: written as predictions.json, copied by push into the
    # version's assets.extra, so the monitor compares serving predictions with eval-time ones.
    predictions: dict | None = None
    # Binary: the decision threshold and where it comes from, the confusion matrix there, and
    # precision / recall / F1 / share predicted positive at several cut-offs
    # (`conveyor.evaluate.cutoffs.summary`), from the AUC's histograms.
    decision: dict | None = None
    # What was evaluated, for the reports' header: the model's name (the model base path's
    # last folder), its URI, its version when it is a published one, else the version a push
    # would publish next, the label and the served version (`conveyor.evaluate.evaluate`).
    model: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "checks": [dataclasses.asdict(c) for c in self.checks]}
