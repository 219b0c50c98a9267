"""The promotion rule, on the paired comparisons evaluate makes (docs/promotion.md).

Both comparisons are made on the same recent labeled rows: `forward` is the challenger against
the champion (positive improvement: the challenger is better), `reverse` is the champion
against the challenger (its one-sided p-value is that of "the champion is no better than the
challenger", so a small p says the challenger is significantly worse).

The challenger is promoted when

1. on the task's primary metric (AUC, accuracy, RMSE) it is at least as good as the champion
   (improvement >= 0: a tie promotes, the challenger being trained on the newer data and
   blessed by evaluate already), and
2. on no metric with a paired test (binary AUC, accuracy and log loss; multiclass accuracy and
   log loss; regression RMSE and MAE) is it significantly worse: the champion's one-sided
   p-value of being better is at least `significance` (0.05) for each.

Otherwise it is rolled back. A figure that is not finite (too few rows, one class) decides
against the challenger: no evidence keeps the champion.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from conveyor.errors import InputError
from conveyor.evaluate.metrics import PRIMARY

SIGNIFICANCE = 0.05  # the level of the one-sided tests (`evaluate.significance`)


@dataclasses.dataclass
class Decision:
    promote: bool
    primary: str
    reasons: list[str]
    forward: dict[str, dict]
    reverse: dict[str, dict]

    @property
    def action(self) -> str:
        return "promote" if self.promote else "rollback"


def decide(task: str, forward: dict[str, dict] | None, reverse: dict[str, dict] | None,
           significance: float = SIGNIFICANCE) -> Decision:
    if task not in PRIMARY:
        raise InputError(f"promote: unknown task {task!r}")
    if not 0 < significance < 0.5:
        raise InputError(f"promote: significance level {significance!r}: expected between 0 "
                         "and 0.5 (e.g. 0.05)")
    if not forward or not reverse:
        raise InputError("promote: the champion and the challenger could not be compared on "
                         "the same rows (one of them cannot be evaluated on this data); "
                         "nothing changed")
    primary = PRIMARY[task]
    if primary not in forward:
        raise InputError(f"promote: no paired comparison of {primary} between the versions")
    reasons, promote = [], True
    f = forward[primary]
    gain = f["improvement"]
    if not math.isfinite(gain):
        promote = False
        reasons.append(f"{primary}: the rows cannot tell ({f.get('note') or 'not finite'})")
    elif gain < 0:
        promote = False
        reasons.append(f"{primary}: challenger {f['candidate']:.4g} < champion "
                       f"{f['baseline']:.4g} on {f['rows']} rows")
    else:
        reasons.append(f"{primary}: challenger {f['candidate']:.4g} >= champion "
                       f"{f['baseline']:.4g} on {f['rows']} rows (improvement {gain:.4g}, "
                       f"one-sided p {f['p_value']:.3g})")
    for metric, r in sorted(reverse.items()):
        p = r["p_value"]
        if not math.isfinite(p):
            if metric == primary:
                continue  # said above
            reasons.append(f"{metric}: no paired test on these rows ({r.get('note') or 'NaN'})")
            continue
        if p < significance:
            promote = False
            reasons.append(f"{metric}: the challenger is significantly worse (champion "
                           f"{r['candidate']:.4g}, challenger {r['baseline']:.4g}; one-sided p "
                           f"{p:.3g} < {significance:g}, {r['method']})")
        else:
            reasons.append(f"{metric}: not significantly worse (one-sided p {p:.3g} >= "
                           f"{significance:g})")
    return Decision(promote, primary, reasons, forward, reverse)


def summary(decision: Decision) -> dict[str, Any]:
    return {"action": decision.action, "primary": decision.primary,
            "reasons": decision.reasons, "forward": decision.forward,
            "reverse": decision.reverse}
