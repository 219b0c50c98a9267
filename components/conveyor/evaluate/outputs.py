"""Markdown and HTML reports of an evaluation, and evaluation.json / predictions.json."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from conveyor.evaluate.result import EvaluationResult
from conveyor.model.layout import EVALUATION_FILE, PREDICTIONS_FILE
from conveyor.reports.html import spec_text
from conveyor.reports.wording import calibration_line


def write_outputs(result: EvaluationResult, evaluation_dir: str | Path,
                  report_path: str | Path, html_report_path: str | Path | None = None) -> None:
    """evaluation.json in `evaluation_dir`, the Markdown report, and (given a path) the HTML
    report with charts (`conveyor.reports.evaluate`)."""
    folder = Path(evaluation_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / EVALUATION_FILE).write_text(json.dumps(result.to_dict(), indent=1, default=float))
    if result.predictions is not None:
        (folder / PREDICTIONS_FILE).write_text(json.dumps(result.predictions, default=float))
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(markdown(result))
    if html_report_path is not None:
        from conveyor.reports.evaluate import render

        path = Path(html_report_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(render(result), encoding="utf-8")
        partial.replace(path)


def _cell(metrics: Mapping[str, float] | None, key: str) -> str:
    if not metrics or key not in metrics:
        return ""
    value = metrics[key]
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def _model_line(result: EvaluationResult) -> list[str]:
    model = result.model
    if not model:
        return []
    version = (f"version {model['version']}" if model.get("version") is not None else
               "candidate, not published yet" + (f" (newest published: version "
                                                 f"{model['newest_version']})"
                                                 if model.get("newest_version") is not None
                                                 else ""))
    return [f"Model: {model.get('name') or 'model of ' + str(model.get('label'))}, {version}: "
            f"{model.get('uri')}" + (f" (base path {model['base_path']}"
                                     + (f", serving version {model['served_version']}"
                                        if model.get("served_version") is not None else "")
                                     + ")" if model.get("base_path") else "") + ".", ""]


def _decision(result: EvaluationResult) -> list[str]:
    d = result.decision
    if not d:
        return []
    c = d["confusion"]
    lines = ["", "## Decisions at the threshold", "",
             f"Decision threshold {d['threshold']:g}: {d['source']}. Confusion matrix there: "
             f"TN {c['tn']}, FP {c['fp']}, FN {c['fn']}, TP {c['tp']}.", "",
             "| cut-off | predicted positive | precision | recall | F1 |",
             "|---:|---:|---:|---:|---:|"]

    def rate(value):
        return "n/a" if value is None else f"{value:.3f}"

    for row in d["table"]:
        lines.append(f"| {row['threshold']:g}{' (decision)' if row.get('chosen') else ''} | "
                     f"{rate(row['predicted_positive'])} | {rate(row['precision'])} | "
                     f"{rate(row['recall'])} | {rate(row['f1'])} |")
    return lines


def markdown(result: EvaluationResult) -> str:
    lines = [f"# Evaluation: {'BLESSED' if result.blessed else 'NOT BLESSED'}", "",
             *_model_line(result),
             f"Task: {result.task}. Baseline: {result.baseline_uri or 'none'}"
             + ("" if result.baseline_uri else " (judged against the naive reference alone)")
             + ".", "",
             f"Naive reference: {result.naive}.", "",
             (f"Infra check: {result.infra['rows']} rows answered by a process that loaded "
              "TensorFlow only for this model; push reuses this for the same files."
              if result.infra else f"Infra check: not recorded here ({result.infra_note}); push "
              "runs its own."), "",
             "## Checks", ""]
    lines += [f"- {c.line()}" for c in result.checks] or ["- none"]
    if result.comparison:
        lines += ["", "## Improvement over the baseline, paired on the same rows", "",
                  "| metric | candidate | baseline | improvement | interval | one-sided p | "
                  "test |", "|---|---:|---:|---:|---|---:|---|"]
        for metric, c in result.comparison.items():
            low, high = c["interval"]
            lines.append(f"| {metric} | {c['candidate']:.4g} | {c['baseline']:.4g} | "
                         f"{c['improvement']:+.4g} | {c['level']:.0%}: [{low:.4g}, {high:.4g}] | "
                         f"{c['p_value']:.3g} | {c['method']}" + (f"; {c['note']}" if c["note"]
                                                                  else "") + " |")
    if result.skipped_baselines or result.baseline_note:
        lines += ["", "## Baselines skipped", ""]
        lines += [f"- {s['uri']}: {s['reason']}" for s in result.skipped_baselines]
        if result.baseline_note:
            lines += [f"- {result.baseline_note}; the candidate is compared with it on those "
                      "rows"]
    lines += _decision(result)
    lines += ["", "## Serving signature", ""]
    diff = result.signature_diff
    if diff is None:
        lines.append("No served version to compare with.")
    elif not any(diff[p][k] for p in ("inputs", "outputs") for k in ("added", "removed",
                                                                       "changed")):
        lines.append(f"Same inputs and outputs as the served {diff['against']}.")
    else:
        lines.append(f"Against the served {diff['against']}: "
                     + ("**breaking**" if diff["breaking"] else "not breaking") + ".")
        lines.append("")
        for part in ("inputs", "outputs"):
            for kind in ("added", "removed"):
                if diff[part][kind]:
                    lines.append(f"- {part} {kind}: "
                                 + ", ".join(f"`{n}`" for n in diff[part][kind]))
            for c in diff[part]["changed"]:
                lines.append(f"- {part[:-1]} `{c['name']}` changed: {spec_text(c['before'])} -> "
                             f"{spec_text(c['after'])}")
        lines += [f"- breaking: {r}" for r in diff["reasons"]]
    keys = sorted({k for m in result.metrics.values() for k in m} - {"examples"})
    lines += ["", "## Metrics by slice", "",
              "| slice | examples | " + " | ".join(keys) + " |",
              "|---|---:|" + "---:|" * len(keys)]
    for name, m in result.metrics.items():
        lines.append(f"| {name} | {int(m.get('examples', 0))} | "
                     + " | ".join(_cell(m, k) for k in keys) + " |")
    cand = result.metrics["overall"]
    naive = result.naive_metrics.get("overall", {})
    base = (result.baseline_metrics or {}).get("overall")
    common = result.candidate_on_baseline_rows
    title = "Candidate vs baseline vs naive (overall)" if base else "Candidate vs naive (overall)"
    header = "| metric | candidate | " + ("baseline | change | " if base else "") + "naive |"
    if common:
        header = header.replace("| baseline", "| candidate on baseline rows | baseline")
    lines += ["", f"## {title}", "", header, "|---|" + "---:|" * (header.count("|") - 2)]
    for k in keys:
        row = f"| {k} | {_cell(cand, k)} | "
        if base:
            ref = common or cand
            change = (f"{ref[k] - base[k]:+.4f}" if k in ref and k in base
                      and math.isfinite(ref[k] - base[k]) else "")
            row += (f"{_cell(common, k)} | " if common else "") + f"{_cell(base, k)} | {change} | "
        lines.append(row + f"{_cell(naive, k)} |")
    calibration = calibration_line(result)
    lines += ["", calibration + "."] if calibration else []
    return "\n".join(lines) + "\n"
