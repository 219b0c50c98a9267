"""The evaluation report as one self-contained HTML page (the Markdown report stays as it is).

From an `EvaluationResult`: the verdict, the charts (binary: ROC, PR and calibration of the
candidate and the baseline; multiclass: a confusion-matrix heat map of the most frequent
`MAX_MATRIX_CLASSES` classes, one-vs-rest ROC and PR of up to 10 classes, top-label
calibration; regression: predicted vs actual, residuals), the checks, the slice table with
candidate vs baseline vs naive reference, the overall comparison, the skipped baselines and the
serving-signature diff. Charts come from `result.curves`, which evaluate keeps bounded (score
histograms and a fixed-size sample), so the page's size does not grow with the rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from conveyor.reports import charts
from conveyor.reports.html import esc, figure, num, page, short, spec_text, table

MAX_MATRIX_CLASSES = 20
KEY_METRICS = {"binary": ("auc", "auc_pr", "accuracy", "log_loss"),
               "multiclass": ("accuracy", "macro_f1", "log_loss"),
               "regression": ("rmse", "mae", "r2")}


def _value(metrics: Mapping[str, float] | None, key: str) -> Any:
    if not metrics or key not in metrics:
        return ""
    value = float(metrics[key])
    return round(value, 4) if math.isfinite(value) else str(value)


def _binary_charts(result) -> list[str]:
    curves = result.curves or {}
    lines = [(name, c) for name, c in (("candidate", curves.get("candidate")),
                                        ("baseline", curves.get("baseline"))) if c]
    if not lines:
        return []
    positive_rate = lines[0][1].get("positive_rate")
    roc = charts.render(charts.curves, "roc", "roc",
                        [(n, c["fpr"], c["tpr"]) for n, c in lines], title="ROC curve")
    pr = charts.render(charts.curves, "pr", "pr",
                       [(n, c["tpr"], c["precision"]) for n, c in lines],
                       reference=positive_rate, title="precision-recall curve")
    cal = charts.render(charts.calibration, "cal",
                        [(n, c["calibration"]["predicted"], c["calibration"]["observed"],
                          c["calibration"]["count"]) for n, c in lines],
                        title="calibration (reliability)")
    return [figure(roc, "ROC: true vs false positive rate over every threshold"),
            figure(pr, "precision vs recall; dashed: the positive rate (a constant model)"),
            figure(cal, "observed frequency of positives per score bin (10 bins); the "
                   "diagonal is perfect calibration")]


def _multiclass_charts(result) -> list[str]:
    out = []
    classes = result.classes
    if result.confusion:
        m = np.asarray(result.confusion, dtype=float)
        support = m.sum(axis=1)
        keep = np.sort(np.argsort(-support, kind="stable")[:MAX_MATRIX_CLASSES])
        note = (f"; the {len(keep)} most frequent of {len(m)} classes (rows and columns of the "
                "others left out)" if len(keep) < len(m) else "")
        labels = [classes[i] if i < len(classes) else str(i) for i in keep]
        out.append(figure(charts.render(charts.confusion, "cm", m[np.ix_(keep, keep)], labels,
                                        title="confusion matrix"),
                          "rows: true class, columns: predicted; shaded by the share of the "
                          "true class" + note))
    curves = result.curves or {}
    per_class = curves.get("classes") or {}
    if per_class:
        named = [(short(classes[int(i)] if int(i) < len(classes) else i, 24), c)
                 for i, c in per_class.items()]
        extra = (f" ({len(named)} most frequent in train of {len(classes)})"
                 if len(named) < len(classes) else "")
        out.append(figure(charts.render(charts.curves, "roc", "roc",
                                        [(n, c["fpr"], c["tpr"]) for n, c in named],
                                        title="one-vs-rest ROC"),
                          "one class against the rest, per class" + extra))
        out.append(figure(charts.render(charts.curves, "pr", "pr",
                                        [(n, c["tpr"], c["precision"]) for n, c in named],
                                        title="one-vs-rest precision-recall"),
                          "one class against the rest, per class" + extra))
    top = curves.get("top_label_calibration")
    if top:
        out.append(figure(charts.render(charts.calibration, "cal",
                                        [("top label", top["predicted"], top["observed"],
                                          top["count"])], title="top-label calibration"),
                          "how often the predicted class is right per confidence bin"))
    return out


def _regression_charts(result) -> list[str]:
    curves = result.curves or {}
    if not curves.get("actual"):
        return []
    shown = len(curves["actual"])
    rows = curves.get("rows", shown)
    return [figure(charts.render(charts.regression, "reg", curves["actual"],
                                 curves["predicted"], title="predicted vs actual"),
                   f"{shown:,} rows" + (f" (a uniform sample of {rows:,})" if rows > shown
                                        else ""))]


def _signature(diff: dict | None) -> list[str]:
    if diff is None:
        return ["<p class='muted'>no served version to compare with</p>"]
    changes = [(part, kind, name) for part in ("inputs", "outputs")
               for kind in ("added", "removed") for name in diff[part][kind]]
    changed = [(part, c) for part in ("inputs", "outputs") for c in diff[part]["changed"]]
    if not changes and not changed:
        return [f"<p>same inputs and outputs as the served {esc(diff['against'])}</p>"]
    out = [f"<p>against the served {esc(diff['against'])}: "
           + ("<b>breaking</b>" if diff["breaking"] else "not breaking") + "</p>"]
    rows = [[esc(part), esc(kind), f"<code>{esc(name)}</code>", ""] for part, kind, name in changes]
    rows += [[esc(part), "changed", f"<code>{esc(c['name'])}</code>",
              esc(f"{spec_text(c['before'])} -> {spec_text(c['after'])}")] for part, c in changed]
    out.append(table(["part", "change", "name", "before -> after"], rows))
    if diff.get("reasons"):
        out.append("<ul>" + "".join(f"<li>breaking: {esc(r)}</li>" for r in diff["reasons"])
                   + "</ul>")
    return out


def render(result) -> str:
    """The HTML page of an `EvaluationResult`, section after section."""
    keys = sorted({k for m in result.metrics.values() for k in m} - {"examples"})
    parts = [*_verdict(result), *_checks(result), *_charts(result), *_overall(result, keys),
             *_comparison(result), *_slices(result, keys), *_skipped(result),
             "<h2>Serving signature</h2>", *_signature(result.signature_diff), _infra(result)]
    return page(f"conveyor evaluate: {'BLESSED' if result.blessed else 'NOT BLESSED'}", parts)


def _verdict(result) -> list[str]:
    """The title, the verdict with the checks passed and the rows, the baseline and naive."""
    verdict = ("<span class='verdict pass'>BLESSED</span>" if result.blessed else
               "<span class='verdict fail'>NOT BLESSED</span>")
    failed = [c for c in result.checks if not c.passed]
    parts = [f"<h1>conveyor evaluate: {esc(result.task)}</h1>",
             f"<p>{verdict} <span class='muted'>{len(result.checks) - len(failed)}/"
             f"{len(result.checks)} checks passed; "
             f"{int(result.metrics['overall'].get('examples', 0)):,} rows evaluated</span></p>",
             f"<p>baseline: {esc(result.baseline_uri) if result.baseline_uri else 'none'}"
             + ("" if result.baseline_uri else " (judged against the naive reference alone)")
             + f"<br>naive reference: {esc(result.naive)}</p>"]
    if result.baseline_note:
        parts.append(f"<p class='note'>{esc(result.baseline_note)}; the candidate is compared "
                     "with it on those rows</p>")
    return parts


def _checks(result) -> list[str]:
    return ["<h2>Checks</h2>",
            table(["result", "metric", "value", "compared with", "rule"],
                  ([("ok" if c.passed else "<b>FAIL</b>"), esc(c.metric),
                    c.value if math.isfinite(c.value) else str(c.value),
                    (f"{esc(c.reference)} {c.baseline:.6g}" if c.baseline is not None
                     else ""), esc(c.rule)] for c in result.checks),
                  [not c.passed for c in result.checks]) if result.checks
            else "<p class='muted'>none</p>"]


def _charts(result) -> list[str]:
    drawn = {"binary": _binary_charts, "multiclass": _multiclass_charts,
             "regression": _regression_charts}[result.task](result) if result.curves or \
        result.confusion else []
    return ["<h2>Charts</h2>",
            "<div class='charts'>" + "".join(drawn) + "</div>" if drawn else
            "<p class='muted'>no chart data in this result</p>"]


def _overall(result, keys: list[str]) -> list[str]:
    """Candidate (and on the baseline's rows) vs baseline vs naive, overall."""
    cand = result.metrics.get("overall", {})
    base = (result.baseline_metrics or {}).get("overall")
    naive = (result.naive_metrics or {}).get("overall", {})
    common = result.candidate_on_baseline_rows
    headers = ["metric", "candidate"] + (["candidate on baseline rows"] if common else []) + (
        ["baseline", "change"] if base else []) + ["naive"]
    rows = []
    for k in keys:
        row: list[Any] = [esc(k), _value(cand, k)]
        if common:
            row.append(_value(common, k))
        if base:
            ref = common or cand
            change = (ref.get(k, math.nan) - base.get(k, math.nan)) if k in base else math.nan
            row += [_value(base, k), f"{change:+.4f}" if math.isfinite(change) else ""]
        row.append(_value(naive, k))
        rows.append(row)
    return ["<h2>Candidate vs baseline vs naive (overall)</h2>", table(headers, rows)]


def _comparison(result) -> list[str]:
    """The paired tests of the candidate vs the baseline, when there is a baseline."""
    comparison = getattr(result, "comparison", None)
    if not comparison:
        return []
    rows = []
    for metric, c in comparison.items():
        low, high = c["interval"]
        rows.append([esc(metric), num(c["candidate"], 4), num(c["baseline"], 4),
                     f"{c['improvement']:+.4g}" if math.isfinite(c["improvement"]) else "",
                     f"{c['level']:.0%}: [{num(low, 4)}, {num(high, 4)}]",
                     num(c["p_value"], 3), esc(c["method"] + (f"; {c['note']}"
                                                              if c["note"] else ""))])
    return ["<h2>Improvement over the baseline, paired on the same rows</h2>",
            table(["metric", "candidate", "baseline", "improvement", "interval",
                   "one-sided p (no better)", "test"], rows)]


def _slices(result, keys: list[str]) -> list[str]:
    """The task's key metrics per slice for all three, then every metric of the candidate."""
    shown = [k for k in KEY_METRICS.get(result.task, ()) if k in keys]
    headers = ["slice", "examples"] + [f"{k} {who}" for k in shown
                                       for who in ("candidate", "baseline", "naive")]
    rows = []
    for name, m in result.metrics.items():
        b = (result.baseline_metrics or {}).get(name)
        n = (result.naive_metrics or {}).get(name)
        rows.append([esc(short(name)), int(m.get("examples", 0))]
                    + [v for k in shown for v in (_value(m, k), _value(b, k), _value(n, k))])
    return ["<h2>Slices: candidate / baseline / naive</h2>", table(headers, rows),
            "<h2>Metrics by slice (candidate)</h2>",
            table(["slice", "examples", *keys],
                  ([esc(short(name)), int(m.get("examples", 0)),
                    *(_value(m, k) for k in keys)] for name, m in result.metrics.items()))]


def _skipped(result) -> list[str]:
    if not result.skipped_baselines:
        return ["<h2>Baselines skipped</h2>", "<p class='muted'>none</p>"]
    return ["<h2>Baselines skipped</h2>",
            table(["baseline", "why it was skipped"],
                  ([esc(s["uri"]), esc(s["reason"])] for s in result.skipped_baselines))]


def _infra(result) -> str:
    return ("<p class='muted'>"
            + (f"infra check: {result.infra['rows']} rows answered by a process that loaded "
               "TensorFlow only for this model; push reuses this for the same files"
               if result.infra else f"infra check: not recorded here "
               f"({esc(result.infra_note)}); push runs its own") + "</p>")
