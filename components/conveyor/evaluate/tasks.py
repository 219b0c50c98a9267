"""The work behind the evaluate KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

import tempfile
from typing import Any


def evaluate(model, dataset, evaluation, metrics, classification_metrics, report, *,
             baseline_model=None, model_base_path: str = "", split: str = "eval",
             slices: list | None = None, thresholds: dict | None = None) -> bool:
    from conveyor.evaluate.evaluate import evaluate_model, write_outputs

    baseline_path, baseline_uri = None, None
    with tempfile.TemporaryDirectory(prefix="conveyor-baseline-") as scratch:
        if baseline_model is not None:
            baseline_path = baseline_uri = baseline_model.path
        elif model_base_path:
            from conveyor.push.base_path import ModelBasePath

            base = ModelBasePath(model_base_path)
            latest = base.latest()
            if latest is not None:
                baseline_path = base.fetch(latest, scratch)
                baseline_uri = base.version_uri(latest)
        result = evaluate_model(model.path, dataset.path, split=split, slices=slices or (),
                                baseline_path=baseline_path, baseline_uri=baseline_uri,
                                thresholds=thresholds or None)
    write_outputs(result, evaluation.path, report.path)
    _publish(result, metrics, classification_metrics)
    evaluation.metadata.update({"blessed": result.blessed, "task": result.task,
                                "baseline": result.baseline_uri or ""})
    print("\n".join(c.line() for c in result.checks), flush=True)
    print("BLESSED" if result.blessed else "NOT BLESSED", flush=True)
    return result.blessed


def _publish(result, metrics: Any, classification_metrics: Any) -> None:
    for name, value in result.metrics["overall"].items():
        metrics.log_metric(name, round(float(value), 6))
    for name, value in (result.baseline_metrics or {}).get("overall", {}).items():
        metrics.log_metric(f"baseline_{name}", round(float(value), 6))
    metrics.log_metric("blessed", float(result.blessed))
    if result.roc:
        classification_metrics.log_roc_curve(result.roc["fpr"], result.roc["tpr"],
                                             result.roc["threshold"])
    if result.confusion:
        categories = result.classes if result.task == "multiclass" else ["0", "1"]
        classification_metrics.log_confusion_matrix(categories, result.confusion)
