"""The evaluation report as one self-contained HTML page (the Markdown report stays as it is).

From an `EvaluationResult`: a header naming the model (its base path's last folder), the
candidate's URI and version, the newest and served versions, the label, split and time; the
verdict; the charts (binary: the confusion matrix at the decision threshold, ROC, PR and
calibration of the candidate and the baseline; multiclass: a confusion-matrix heat map of the
most frequent `MAX_MATRIX_CLASSES` classes, one-vs-rest ROC and PR of up to 10 classes,
top-label calibration; regression: predicted vs actual, residuals); for a binary model the
decision threshold, where it comes from, the confusion matrix there and precision / recall / F1
by cut-off; the overall comparison with calibration explained in one line; one slice table
(every metric of the candidate, the baseline's and the naive reference's under each); the
checks, the skipped baselines and the serving-signature diff. Charts and tables come from
`result.curves` and `result.decision`, which evaluate keeps bounded (score histograms and a
fixed-size sample), so the page's size does not grow with the rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from conveyor.reports import charts
from conveyor.reports.html import esc, figure, num, page, short, spec_text, table
from conveyor.reports.wording import calibration_line

MAX_MATRIX_CLASSES = 20
KEY_METRICS = {"binary": ("auc", "auc_pr", "accuracy", "log_loss"),
               "multiclass": ("accuracy", "macro_f1", "log_loss"),
               "regression": ("rmse", "mae", "r2")}


def _value(metrics: Mapping[str, float] | None, key: str) -> Any:
    if not metrics or key not in metrics:
        return ""
    value = float(metrics[key])
    return round(value, 4) if math.isfinite(value) else str(value)


def _binary_confusion(result) -> list[str]:
    """The candidate's 2 x 2 confusion matrix at the decision threshold, as a heat map."""
    if not result.confusion:
        return []
    decision = result.decision or {}
    threshold = decision.get("threshold", 0.5)
    labels = (result.classes if len(result.classes) == 2 else ["0", "1"])
    return [figure(charts.render(charts.confusion, "bcm", np.asarray(result.confusion, float),
                                 labels, title=f"confusion matrix at {threshold:g}"),
                   f"rows: true class, columns: predicted ({labels[1]!r} when its probability "
                   f"is at least {threshold:g}); shaded by the share of the true class")]


def _binary_charts(result) -> list[str]:
    curves = result.curves or {}
    lines = [(name, c) for name, c in (("candidate", curves.get("candidate")),
                                        ("baseline", curves.get("baseline"))) if c]
    if not lines:
        return _binary_confusion(result)
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
    return [*_binary_confusion(result),
            figure(roc, "ROC: true vs false positive rate over every threshold"),
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
    parts = [*_verdict(result), *_checks(result), *_charts(result), *_decision(result),
             *_overall(result, keys), *_comparison(result), *_slices(result, keys),
             *_skipped(result), "<h2>Serving signature</h2>", *_signature(result.signature_diff),
             _infra(result)]
    return page(f"conveyor evaluate: {_name(result)}: "
                f"{'BLESSED' if result.blessed else 'NOT BLESSED'}", parts)


def _name(result) -> str:
    """The model's name (its base path's last folder), else what it predicts."""
    model = result.model or {}
    return model.get("name") or f"model of {model.get('label') or result.task}"


def _header(result) -> list[str]:
    """The title naming the model, then what was evaluated: the candidate's URI and version,
    the newest and served versions, the label, the split and when."""
    model = result.model or {}
    title = f"<h1>conveyor evaluate: {esc(short(_name(result)))}</h1>"
    if not model:
        return [title]
    version = model.get("version")
    newest = model.get("newest_version")
    what = (f"version {version}" if version is not None else
            "candidate, not published yet" + (f" (newest published: version {newest})"
                                              if newest is not None else
                                              " (no version published yet)"
                                              if model.get("base_path") else ""))
    facts = [f"<b>{esc(what)}</b>: <code>{esc(short(model.get('uri', ''), 160))}</code>"]
    if model.get("base_path"):
        served = model.get("served_version")
        facts.append(f"model base path <code>{esc(short(model['base_path'], 160))}</code>"
                     + (f", serving version {served}" if served is not None else ""))
    facts.append(f"predicts <code>{esc(short(model.get('label', '')))}</code> "
                 f"({esc(model.get('task', result.task))}), scored on split "
                 f"<code>{esc(short(model.get('split', '')))}</code>"
                 + (f" at {esc(model['evaluated_at'])}" if model.get("evaluated_at") else ""))
    return [title, "<p class='muted'>" + "<br>".join(facts) + "</p>"]


def _verdict(result) -> list[str]:
    """The title, the verdict with the checks passed and the rows, the baseline and naive."""
    verdict = ("<span class='verdict pass'>BLESSED</span>" if result.blessed else
               "<span class='verdict fail'>NOT BLESSED</span>")
    failed = [c for c in result.checks if not c.passed]
    base_version = getattr(result, "baseline_version", None)
    parts = [*_header(result),
             f"<p>{verdict} <span class='muted'>{len(result.checks) - len(failed)}/"
             f"{len(result.checks)} checks passed; "
             f"{int(result.metrics['overall'].get('examples', 0)):,} rows evaluated</span></p>",
             "<p>baseline: " + (f"version {base_version}: " if base_version is not None else "")
             + f"{esc(result.baseline_uri) if result.baseline_uri else 'none'}"
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
    line = calibration_line(result)
    return ["<h2>Candidate vs baseline vs naive (overall)</h2>", table(headers, rows),
            *([f"<p class='note'>{esc(line)}</p>"] if line else [])]


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


def _slice_cell(m: Mapping[str, float] | None, b: Mapping[str, float] | None,
                n: Mapping[str, float] | None, key: str) -> str:
    """The candidate's value, with the baseline's and the naive reference's under it."""
    value = _value(m, key)
    others = [f"{who} {_value(ref, key)}" for who, ref in (("b", b), ("n", n))
              if _value(ref, key) != ""]
    return ("<div style='text-align:right'>" + esc(value)
            + ("<br><span class='muted' style='font-size:11px'>" + esc(" · ".join(others))
               + "</span>" if others else "") + "</div>")


def _slices(result, keys: list[str]) -> list[str]:
    """One table: per slice, the rows and every metric of the candidate, each with the
    baseline's (b) and the naive reference's (n) on the same slice under it; the task's key
    metrics first."""
    first = [k for k in KEY_METRICS.get(result.task, ()) if k in keys]
    shown = first + [k for k in keys if k not in first]
    rows = []
    for name, m in result.metrics.items():
        b = (result.baseline_metrics or {}).get(name)
        n = (result.naive_metrics or {}).get(name)
        rows.append([esc(short(name)), int(m.get("examples", 0))]
                    + [_slice_cell(m, b, n, k) for k in shown])
    legend = ("each cell: the candidate; under it b: the baseline"
              + (f" (version {result.baseline_version})"
                 if getattr(result, "baseline_version", None) is not None else "")
              + ", n: the naive reference, on the same rows"
              if result.baseline_metrics else
              "each cell: the candidate; under it n: the naive reference, on the same rows")
    return ["<h2>Metrics by slice</h2>", f"<p class='note'>{esc(legend)}</p>",
            table(["slice", "examples", *shown], rows)]


def _decision(result) -> list[str]:
    """Binary: the decision threshold and where it comes from, the confusion matrix there
    with each cell's share of its true class, and precision / recall / F1 by cut-off."""
    d = getattr(result, "decision", None)
    if result.task != "binary" or not d:
        return []
    labels = result.classes if len(result.classes) == 2 else ["0", "1"]
    c = d["confusion"]
    out = ["<h2>Decisions at the threshold</h2>",
           f"<p>decision threshold <b>{d['threshold']:g}</b>: {esc(d['source'])}. Accuracy, "
           "precision and recall above are read there; a row is predicted "
           f"<code>{esc(short(labels[1]))}</code> when its probability is at least "
           f"{d['threshold']:g}.</p>"]
    grid = []
    for truth, (wrong, right) in ((labels[0], ("tn", "fp")), (labels[1], ("fn", "tp"))):
        total = c[wrong] + c[right]
        grid.append([f"true <code>{esc(short(truth))}</code>", *(
            f"{c[k]:,} <span class='muted'>({c[k] / total:.1%}, {k.upper()})</span>"
            if total else f"{c[k]:,} ({k.upper()})" for k in (wrong, right)), total])
    out.append(table(["", f"predicted {short(labels[0])}", f"predicted {short(labels[1])}",
                      "rows"], grid))
    out += _cutoff_table(d)
    return out


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cutoff_table(d: Mapping[str, Any]) -> list[str]:
    rows = [dict(r, note="decision threshold" if r.get("chosen") else "") for r in d["table"]]
    best = d.get("best_f1")
    if best is not None:
        same = [r for r in rows if r["threshold"] == best["threshold"]]
        if same:
            same[0]["note"] = ", ".join(filter(None, [same[0]["note"], "highest F1"]))
        else:
            rows.append(dict(best, note="highest F1"))
            rows.sort(key=lambda r: r["threshold"])
    cells = [[(f"<b>{r['threshold']:g}</b>" if r.get("chosen") else f"{r['threshold']:g}"),
              _rate(r["predicted_positive"]), _rate(r["precision"]), _rate(r["recall"]),
              _rate(r["f1"]), _rate(r["accuracy"]), r["fp"], r["fn"], esc(r["note"])]
             for r in rows]
    return ["<h3>Precision, recall and F1 by cut-off</h3>",
            "<p class='note'>predicted positive: the share of rows at or above the cut-off; "
            "n/a: nothing to divide by (no row predicted positive, or no positive row)</p>",
            table(["cut-off", "predicted positive", "precision", "recall", "F1", "accuracy",
                   "false positives", "false negatives", "note"], cells)]


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
