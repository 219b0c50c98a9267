"""Sentences the evaluation's HTML and Markdown reports share, without matplotlib: what a metric
means, said the same way in both."""

from __future__ import annotations

import math


def calibration_line(result) -> str:
    """Calibration in one line: what the ratio is, which way it errs."""
    value = result.metrics.get("overall", {}).get("calibration")
    if value is None:
        return ""
    d = getattr(result, "decision", None) or {}
    mean_p, rate = d.get("mean_predicted"), d.get("positive_rate")
    parts = (f"mean predicted probability {mean_p:.4g} / observed positive rate {rate:.4g}"
             if mean_p is not None and rate is not None else
             "mean predicted probability / observed positive rate")
    if not math.isfinite(value):
        way = "undefined: no positive row"
    elif abs(value - 1) < 0.005:
        way = "about right"
    else:
        way = "over-predicts positives" if value > 1 else "under-predicts positives"
    return (f"calibration {value:.4g} = {parts}: 1 is perfect, above 1 over-predicts, below 1 "
            f"under-predicts (here: {way}); calibration_error is the absolute difference of "
            "the two")
