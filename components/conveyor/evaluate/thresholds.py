"""evaluate's thresholds: the metric names and rule keys a `thresholds` argument may use, each
defined once, and the check of everything about it that does not depend on the task.

Evaluate parses them (`conveyor.evaluate.verdict.parse_thresholds`, `floor.parse_floor`) with
the task at hand; `conveyor run` runs `check` before anything starts (`conveyor.pipelines.checks`),
so a misspelt metric is refused in seconds instead of at evaluate, minutes into a run. A metric
known but not computed for the task (`r2` of a classifier) can only be refused by evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from conveyor.evaluate.floor import NAIVE_FLOOR, OVER_NAIVE
from conveyor.evaluate.metrics import HIGHER_IS_BETTER
from conveyor.params import close_match

#: every metric a rule may name (evaluate computes a task's subset of them)
METRICS: tuple[str, ...] = tuple(sorted(HIGHER_IS_BETTER))
#: rule keys that compare with bounds or with the baseline
BASELINE_KEYS = frozenset({"min", "max", "min_improvement", "min_improvement_relative",
                           "significance"})
#: every rule key (the naive floor's margin too: `conveyor.evaluate.floor`)
RULE_KEYS = BASELINE_KEYS | {OVER_NAIVE}


def unknown_metric(metric: str) -> str:
    match = close_match(metric, [*METRICS, NAIVE_FLOOR])
    hint = f" (did you mean {match!r}?)" if match else ""
    return (f"thresholds: unknown metric {metric!r}{hint} (known: {', '.join(METRICS)}; or "
            f"{NAIVE_FLOOR!r}: false)")


def check(thresholds: Any) -> list[str]:
    """Every problem with a `thresholds` argument that does not depend on the task, one line
    each naming the metric and what was expected; [] when there is none."""
    if not thresholds:
        return []
    if not isinstance(thresholds, Mapping):
        return [f"thresholds: a JSON object of metric -> rule, got {thresholds!r}"]
    problems = []
    for metric, rule in thresholds.items():
        if metric == NAIVE_FLOOR:
            if not isinstance(rule, bool):
                problems.append(f"thresholds: {NAIVE_FLOOR!r} is true or false (false: no naive "
                                f"floor), got {rule!r}")
            continue
        if metric not in HIGHER_IS_BETTER:
            problems.append(unknown_metric(metric))
            continue
        problems += _rule_problems(metric, rule)
    return problems


def _rule_problems(metric: str, rule: Any) -> list[str]:
    if not isinstance(rule, Mapping) or not rule:
        return [f"thresholds: {metric!r} needs some of {sorted(RULE_KEYS)}, got {rule!r}"]
    out = []
    for key, value in rule.items():
        if key not in RULE_KEYS:
            match = close_match(key, RULE_KEYS)
            out.append(f"thresholds: {metric!r}: unknown rule {key!r}"
                       + (f" (did you mean {match!r}?)" if match else "")
                       + f" (known: {', '.join(sorted(RULE_KEYS))})")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            out.append(f"thresholds: {metric!r} {key} must be a finite number, got {value!r}")
        elif key == "significance" and not 0 < value < 0.5:
            out.append(f"thresholds: {metric!r} significance is the level of a one-sided test "
                       "of 'no better than the baseline', between 0 and 0.5 (e.g. 0.05), got "
                       f"{value!r}")
    return out
