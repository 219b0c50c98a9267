"""The work behind the evaluate KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

import math
from typing import Any


def evaluate(model, dataset, evaluation, *args, **kwargs) -> bool:
    """`_evaluate` under `conveyor.failfast.fail_once`: after an attempt that failed on bad input,
    a retry fails at once with the same error (marker beside the `evaluation` output)."""
    from conveyor.failfast import fail_once

    with fail_once(evaluation.path, "evaluate"):
        return _evaluate(model, dataset, evaluation, *args, **kwargs)


def _evaluate(model, dataset, evaluation, metrics, classification_metrics, report, *,
             html_report=None, baseline_model=None, model_base_path: str = "", split: str = "eval",
             slices: list | None = None, thresholds: dict | None = None,
             allow_breaking_signature: bool = False, tracking_uri: str = "",
             pipeline_run: str = "") -> bool:
    from conveyor.evaluate.evaluate import evaluate_model
    from conveyor.evaluate.outputs import write_outputs

    baseline_path = baseline_model.path if baseline_model is not None else None
    result = evaluate_model(model.path, dataset.path, split=split, slices=slices or (),
                            baseline_path=baseline_path, baseline_uri=baseline_path,
                            model_base_path=model_base_path or None,
                            thresholds=thresholds or None,
                            allow_breaking_signature=bool(allow_breaking_signature),
                            model_uri=getattr(model, "uri", None) or model.path)
    write_outputs(result, evaluation.path, report.path,
                  html_report.path if html_report is not None else None)
    _publish(result, metrics, classification_metrics)
    evaluation.metadata.update({
        "blessed": result.blessed, "task": result.task, "baseline": result.baseline_uri or "",
        "newest_version": result.newest_version_uri or "",
        "skipped_baselines": len(result.skipped_baselines),
        "signature_breaking": bool(result.signature_diff and result.signature_diff["breaking"])})
    if html_report is not None:
        html_report.metadata.update({"blessed": result.blessed, "task": result.task})
    for skipped in result.skipped_baselines:
        print(f"baseline skipped: {skipped['uri']}: {skipped['reason']}", flush=True)
    print("\n".join(c.line() for c in result.checks), flush=True)
    print("BLESSED" if result.blessed else "NOT BLESSED", flush=True)
    _track(result, dict(split=split, slices=slices or [], thresholds=thresholds or {},
                        allow_breaking_signature=bool(allow_breaking_signature)),
           {"evaluation": evaluation, "report": report, "html_report": html_report},
           tracking_uri, pipeline_run)
    return result.blessed


def _track(result, params: dict, outputs: dict, tracking_uri: str, pipeline_run: str) -> None:
    """The metrics artifact's figures, the verdict (tag `conveyor.blessed`), the baseline and
    the outputs' URIs, to MLflow when tracking is configured (`conveyor.tracking`)."""
    from conveyor import tracking
    from conveyor.model.layout import EVALUATION_FILE
    from conveyor.tracking.runs import artifact_uri

    tracking.log_step(tracking.Step(
        "evaluate", params=params, metrics=finite_metrics(result),
        tags={"blessed": str(result.blessed).lower(), "task": result.task,
              "evaluate.baseline": result.baseline_uri or "none"},
        artifacts={**{name: artifact_uri(a) for name, a in outputs.items()},
                   "evaluation_json": f"{artifact_uri(outputs['evaluation'])}/{EVALUATION_FILE}"}),
        tracking_uri=tracking_uri, pipeline_run=pipeline_run)


def finite_metrics(result) -> dict[str, float]:
    """What the metrics artifact gets: the candidate's overall metrics, `baseline_<m>`,
    `naive_<m>`, `blessed`; a value that is not finite is left out (KFP metrics are never NaN)."""
    out = {}
    for prefix, values in (("", result.metrics["overall"]),
                           ("baseline_", (result.baseline_metrics or {}).get("overall", {})),
                           ("naive_", (result.naive_metrics or {}).get("overall", {}))):
        for name, value in values.items():
            if math.isfinite(float(value)):
                out[prefix + name] = round(float(value), 6)
    out["blessed"] = float(result.blessed)
    out["skipped_baselines"] = float(len(result.skipped_baselines))
    return out


def _publish(result, metrics: Any, classification_metrics: Any) -> None:
    for name, value in finite_metrics(result).items():
        metrics.log_metric(name, value)
    if result.roc:
        classification_metrics.log_roc_curve(result.roc["fpr"], result.roc["tpr"],
                                             result.roc["threshold"])
    if result.confusion:
        categories = result.classes if result.task == "multiclass" else ["0", "1"]
        classification_metrics.log_confusion_matrix(categories, result.confusion)
