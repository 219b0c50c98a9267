"""The verdict's checks: thresholds parsed into rules, the candidate against them and the
baseline (with the paired significance tests), the naive floor, finite metrics and the served
serving contract. The model is blessed when every check passes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from conveyor.errors import InputError
from conveyor.evaluate import floor as fl
from conveyor.evaluate import significance as sg
from conveyor.evaluate import thresholds as th
from conveyor.evaluate.metrics import HIGHER_IS_BETTER, PRIMARY
from conveyor.evaluate.result import Check

_BASELINE_KEYS = th.BASELINE_KEYS
_THRESHOLD_KEYS = th.RULE_KEYS
DEFAULT_IMPROVEMENT = 1e-6
# Without thresholds, a candidate must beat the baseline on the task's primary metric by more
# than the eval rows' noise: a one-sided paired test at this level (`significance`). A push is a
# deploy; on a 60-row eval split a "better" AUC by 1e-6 is a coin toss.
DEFAULT_SIGNIFICANCE = 0.05


def parse_thresholds(thresholds: Mapping[str, Any] | None, task: str) -> dict[str, dict]:
    """Metric rules vs bounds and the baseline (the naive floor's keys: `floor.parse_floor`)."""
    out = {}
    for metric, rule in (thresholds or {}).items():
        if metric == fl.NAIVE_FLOOR:
            continue
        if metric not in HIGHER_IS_BETTER:
            raise InputError(th.unknown_metric(metric))
        if not isinstance(rule, Mapping) or not rule or set(rule) - _THRESHOLD_KEYS:
            raise InputError(f"thresholds: {metric!r} needs some of {sorted(_THRESHOLD_KEYS)}, "
                             f"got {rule!r}")
        for key, value in rule.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise InputError(f"thresholds: {metric!r} {key} must be a finite number, "
                                 f"got {value!r}")
        if "significance" in rule:
            if not 0 < rule["significance"] < 0.5:
                raise InputError(f"thresholds: {metric!r} significance is the level of a "
                                 "one-sided test of 'no better than the baseline', between 0 "
                                 f"and 0.5 (e.g. 0.05), got {rule['significance']!r}")
            if not sg.supported(task, metric):
                raise InputError(f"thresholds: {metric!r} significance: no paired test of "
                                 f"{metric} for a {task} model (tests: "
                                 f"{', '.join(sg.metrics_for(task))})")
        kept = {k: float(v) for k, v in rule.items() if k in _BASELINE_KEYS}
        if kept:
            out[metric] = kept
    if not out:
        return {PRIMARY[task]: {"min_improvement": DEFAULT_IMPROVEMENT,
                                "significance": DEFAULT_SIGNIFICANCE}}
    return out


def significance_checks(rules: dict[str, dict], comparisons: dict[str, dict],
                         metrics: dict[str, float],
                         baseline: dict[str, float] | None) -> list[Check]:
    out = []
    for metric, rule in rules.items():
        if "significance" not in rule:
            continue
        found = comparisons[metric]
        level, p = rule["significance"], found["p_value"]
        low, high = found["interval"]
        out.append(Check(
            metric, f"improves on the baseline significantly: one-sided p {p:.3g} < {level:g} "
                    f"({found['method']}, {found['rows']} paired rows; {found['level']:.0%} "
                    f"interval of the improvement [{low:.4g}, {high:.4g}])",
            metrics[metric], (baseline or {}).get(metric), bool(math.isfinite(p) and p < level)))
    return out


def rule_checks(rules: dict[str, dict], metrics: dict[str, float],
            baseline: dict[str, float] | None) -> list[Check]:
    out = []
    for metric, rule in rules.items():
        if metric not in metrics:
            raise InputError(f"thresholds: metric {metric!r} is not computed for this task "
                             f"(computed: {', '.join(sorted(metrics))})")
        value = metrics[metric]
        base = baseline.get(metric) if baseline else None
        if "min" in rule:
            out.append(Check(metric, f">= {rule['min']:g}", value, base, value >= rule["min"]))
        if "max" in rule:
            out.append(Check(metric, f"<= {rule['max']:g}", value, base, value <= rule["max"]))
        if base is None:
            continue
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        better = sign * (value - base)
        if "min_improvement" in rule:
            out.append(Check(metric, f"improves on the baseline by >= {rule['min_improvement']:g}",
                             value, base, bool(better >= rule["min_improvement"])))
        if "min_improvement_relative" in rule:
            rel = better / abs(base) if base else float("inf") * np.sign(better)
            out.append(Check(metric, "improves on the baseline by >= "
                             f"{rule['min_improvement_relative']:.2%}", value, base,
                             bool(rel >= rule["min_improvement_relative"])))
    return out


def signature_check(diff: dict, served_uri: str, allow_breaking_signature: bool) -> Check | None:
    """A breaking change of the serving contract vs the served version (`diff`) fails unless
    allowed; a change that breaks no client is no check at all."""
    if not diff["breaking"]:
        return None
    allowed = bool(allow_breaking_signature)
    return Check(
        "signature", ("breaking changes vs the served " + served_uri + " allowed "
                      "(allow_breaking_signature)" if allowed else
                      "no breaking change vs the served " + served_uri + ": "
                      + "; ".join(diff["reasons"][:5])
                      + " (set allow_breaking_signature to accept)"),
        float(len(diff["reasons"])), None, allowed)
