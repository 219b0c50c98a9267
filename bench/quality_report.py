"""bench/quality.py's judgement and report: each set against the best linear model (the paired
difference and its 95 % interval: better, tie or worse) and against HistGradientBoosting (the
relative gap), the training-split score beside the eval one (memorization), and one line per
criterion of issue 26's "done when"."""

from __future__ import annotations

import statistics

METRIC = {"regression": "rmse", "binary": "auc", "multiclass": "accuracy"}
TOLERANCE = {"rmse": 0.05, "auc": 0.02, "accuracy": 0.02}  # the lead's target vs HGB
#: a training score this close to perfect is memorization when eval trails the linear model
PERFECT_TRAIN = 0.9995  # accuracy (classification) or R² (regression) on the train split


def conveyor_value(record: dict) -> float | None:
    """conveyor's eval score on the set's metric: from its per-row predictions when the
    benchmark scored them (exact, as the baselines), else evaluate's evaluation.json."""
    c = record.get("conveyor") or {}
    if c.get("task") != record["task"]:
        return None
    metric = METRIC[record["task"]]
    scored = (c.get("eval") or {}).get(metric)
    return scored if scored is not None else (c.get("metrics") or {}).get(metric)


def train_fit(record: dict) -> float | None:
    """How well conveyor fits its own training rows: accuracy (classification) or R²."""
    train = (record.get("conveyor") or {}).get("train") or {}
    return train.get("r2" if record["task"] == "regression" else "accuracy")


def compare(record: dict) -> None:
    """Ratios and gaps conveyor / baseline on the primary metric, the paired verdict against the
    best linear model, and whether a perfect training score hides a weak model."""
    metric = METRIC[record["task"]]
    record["metric"] = metric
    conveyor = conveyor_value(record)
    if conveyor is None:
        return
    higher = metric != "rmse"
    for key in ("linear", "hgb"):
        base = (record.get("sklearn") or {}).get(key, {}).get(metric)
        if base is None:
            continue
        ratio = conveyor / base if base else float("nan")
        record[f"ratio_{key}"] = round(ratio, 4)
        # gap: how much worse conveyor is, as a share of the baseline (negative: better)
        record[f"gap_{key}"] = round((1 - ratio) if higher else (ratio - 1), 4)
    if "gap_linear" in record:
        record["beats_linear"] = record["gap_linear"] <= 0
    if "gap_hgb" in record:
        record["within_hgb_target"] = record["gap_hgb"] <= TOLERANCE[metric]
    paired = (record.get("paired") or {}).get("linear") or {}
    if paired.get("verdict") in ("better", "tie", "worse"):
        record["verdict_linear"] = paired["verdict"]
        record["not_worse_than_linear"] = paired["verdict"] != "worse"
    fit = train_fit(record)
    record["memorized"] = bool(fit is not None and fit >= PERFECT_TRAIN
                               and record.get("gap_linear", 0) > 0)


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.{digits}g}"
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _score(metric: str, value: float | None, signed: bool = False) -> str:
    """AUC and accuracy to 4 decimals; RMSE (any scale) to 5 significant digits, a difference
    of RMSEs to 4."""
    if value is None:
        return "—"
    if metric != "rmse":
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return f"{value:+,.4g}" if signed else f"{value:,.5g}"


def _interval(metric: str, paired: dict | None) -> str:
    if not paired or paired.get("low") is None:
        return "—"
    return (f"{_score(metric, paired['diff'], True)} [{_score(metric, paired['low'], True)}, "
            f"{_score(metric, paired['high'], True)}]")


def _train_cell(record: dict) -> str:
    train = (record.get("conveyor") or {}).get("train") or {}
    metric = METRIC[record["task"]]
    if train.get(metric) is None:
        return "—"
    extra = (f" (acc {train['accuracy']:.3f})" if record["task"] == "binary"
             else f" (R² {train['r2']:.3f})" if record["task"] == "regression" else "")
    return (_score(metric, train[metric]) + extra
            + (" **memorized**" if record.get("memorized") else ""))


HEADER = ("| set | trait | rows | task | metric | conveyor | best linear | HGB | "
          "diff vs linear [95 % CI] | verdict | gap to HGB | train | wall s | blessed | pushed |")


def table(records: list[dict]) -> str:
    """The Markdown table, then a note per failure or surprise. diff: positive = conveyor
    better (RMSE: linear - conveyor; AUC, accuracy: conveyor - linear)."""
    lines = [HEADER, "|" + "|".join(["---"] * 2 + ["---:"] + ["---"] * 2 + ["---:"] * 4
                                     + ["---"] + ["---:"] * 3 + ["---"] * 2) + "|"]
    notes = []
    for r in records:
        c = r.get("conveyor", {})
        metric = METRIC[r["task"]]
        sk = r.get("sklearn") or {}
        linear = sk.get("linear", {})
        gap = r.get("gap_hgb")
        cells = [r["set"], r.get("trait", ""), fmt(r.get("rows")), r["task"], metric,
                 _score(metric, conveyor_value(r)),
                 _score(metric, linear.get(metric)) + (f" ({linear['model']})"
                                                       if linear.get("model") and
                                                       r["task"] == "regression" else ""),
                 _score(metric, sk.get("hgb", {}).get(metric)),
                 _interval(metric, (r.get("paired") or {}).get("linear")),
                 r.get("verdict_linear", "—"),
                 "—" if gap is None else f"{100 * gap:+.1f} %",
                 _train_cell(r), fmt(c.get("pipeline_s")), fmt(c.get("blessed")),
                 fmt(c.get("pushed"))]
        lines.append("| " + " | ".join(cells) + " |")
        for key, what in (("error", "FAILED"), ("note", "note"), ("predict_error",
                                                                  "scoring conveyor failed")):
            if c.get(key):
                notes.append(f"- {r['set']}: {what}: `{c[key]}`")
        if sk.get("error"):
            notes.append(f"- {r['set']}: scikit-learn failed: {sk['error']}")
    return "\n".join(lines + ([""] + notes if notes else []))


def _check(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def verdict(records: list[dict], noise_sets: set[str] | frozenset[str] = frozenset()) -> str:
    """One line per criterion of issue 26's "done when", each PASS or FAIL with the sets."""
    failed = [r["set"] for r in records if r.get("conveyor", {}).get("status") != "ok"]
    lines = [f"sets: {len(records)}; conveyor failed on {len(failed)}"
             + (f" ({', '.join(failed)})" if failed else "")]
    judged = [r for r in records if "not_worse_than_linear" in r]
    worse = [r["set"] for r in judged if not r["not_worse_than_linear"]]
    unjudged = [r["set"] for r in records if "not_worse_than_linear" not in r]
    tally = {v: sum(r.get("verdict_linear") == v for r in judged) for v in ("better", "tie",
                                                                           "worse")}
    lines.append(
        f"[{_check(not worse and not unjudged)}] not significantly worse than the best linear "
        f"model on every set (paired 95 % interval includes or exceeds 0): better on "
        f"{tally['better']}, tie on {tally['tie']}, worse on {tally['worse']}"
        + (f" ({', '.join(worse)})" if worse else "")
        + (f"; not judged: {', '.join(unjudged)}" if unjudged else ""))
    scored = [r for r in records if "gap_hgb" in r and r["set"] not in noise_sets]
    if scored:
        normalized = [r["gap_hgb"] / TOLERANCE[r["metric"]] for r in scored]
        median = statistics.median(normalized)
        lines.append(
            f"[{_check(median <= 1)}] median gap to HGB within the tolerance (2 % AUC/accuracy, "
            f"5 % RMSE): {median:.2f} in units of the tolerance (<= 1 passes; the noise set left "
            "out); per set: "
            + ", ".join(f"{r['set']} {100 * r['gap_hgb']:+.1f} %" for r in scored))
    else:
        lines.append("[FAIL] median gap to HGB: no set scored")
    noise = [r for r in records if r["set"] in noise_sets]
    pushed = [r["set"] for r in noise if (r.get("conveyor") or {}).get("pushed") is not False]
    lines.append((f"[{_check(not pushed)}]" if noise else "[n/a]")
                 + " the noise set is not pushed"
                 + (f": pushed or not run: {', '.join(pushed)}" if pushed else
                    "" if noise else ": no noise set in this run"))
    memorized = [r["set"] for r in records if r.get("memorized")]
    lines.append(f"[{_check(not memorized)}] no set with a perfect training fit (accuracy or R² "
                 f">= {PERFECT_TRAIN}) and eval below the linear model's"
                 + (f": {', '.join(memorized)}" if memorized else ""))
    return "\n".join(lines)
