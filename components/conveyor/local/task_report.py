"""What a finished task left behind, read for the console and for RunResult.

`figures`: one or two key figures from its executor output (`executor_output.json` in its folder:
artifact metadata and parameters), recognized by the shape of conveyor's components' outputs;
`artifact_paths`: where its output artifacts are; `link_reports`: its HTML and Markdown reports
under names that end in `.html` / `.md`; `task_folder`: its folder, from the executor input its
log shows; `task_error`: why it failed (conveyor's fail-fast record, else the exception line(s)
of the last traceback in its log); `is_input_error`: whether that was bad input (exit 2).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: kfp.local indents each line of a task's stream by four spaces (logging_utils.indented_print).
_INDENT = "    "


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


# -- figures from a task's outputs ---------------------------------------------------------------

def _artifacts(outputs: dict) -> dict[str, dict]:
    """name -> {"uri": ..., "metadata": {...}} of the first artifact of each output."""
    out = {}
    for name, value in (outputs.get("artifacts") or {}).items():
        items = value.get("artifacts") or []
        if items:
            out[name] = {"uri": items[0].get("uri", ""), "metadata": items[0].get("metadata") or {}}
    return out


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def figures(outputs: dict, log_text: str = "") -> str:
    """One or two key figures of a finished task, from its executor output (recognized by the
    shape of conveyor's components' outputs, whatever the task is called); '' if none."""
    arts = _artifacts(outputs)
    params = outputs.get("parameterValues") or {}
    meta = {name: a["metadata"] for name, a in arts.items()}
    if "pushed_model" in meta:
        m = meta["pushed_model"]
        if m.get("skipped"):
            return f"not pushed: {m['skipped']}"
        return f"pushed version {_num(m.get('version'))} -> {m.get('uri', '')}"
    if "evaluation" in meta:
        from conveyor.evaluate.metrics import PRIMARY

        m, e = meta.get("metrics", {}), meta["evaluation"]
        primary = PRIMARY.get(e.get("task", ""), "")
        parts = []
        if primary in m:
            text = f"{primary} {m[primary]:.4f}"
            refs = [f"{who} {m[key]:.4f}" for who, key in (("baseline", f"baseline_{primary}"),
                                                          ("naive", f"naive_{primary}"))
                    if key in m]
            parts.append(text + (f" ({', '.join(refs)})" if refs else ""))
        parts.append("BLESSED" if e.get("blessed") else "NOT BLESSED")
        return ", ".join(parts)
    if "model" in meta and "tensorboard" in meta:
        m = meta.get("metrics", {})
        parts = []
        if "epochs_run" in m:
            parts.append(f"{_num(m['epochs_run'])} epochs"
                         + (f" (best {_num(m['best_epoch'])})" if "best_epoch" in m else ""))
        for key in ("val_accuracy", "val_auc", "val_rmse", "val_loss"):
            if key in m:
                parts.append(f"{key} {m[key]:.4f}")
                break
        return ", ".join(parts)
    if "preprocessing" in meta:
        m = meta["preprocessing"]
        features = m.get("features") or []
        return f"{m.get('task', '?')} on {m.get('label', '?')}, {len(features)} features"
    if "statistics" in meta and "suite" in meta:
        m, s = meta.get("metrics", {}), meta["statistics"]
        failed = int(m.get("failed_expectations", 0) or 0)
        checks = "checks passed" if failed == 0 else f"{failed} checks failed"
        drifted = s.get("drifted_columns") or []
        drift = (f"drifted: {', '.join(drifted[:4])}{' ...' if len(drifted) > 4 else ''}"
                 if drifted else "nothing drifted")
        return f"{checks}, {drift}"
    if "dataset" in meta and "metrics" in meta and "rows_total" in meta["metrics"]:
        m = meta["metrics"]
        splits = [f"{k[5:]} {_num(v)}" for k, v in m.items()
                  if k.startswith("rows_") and k != "rows_total"]
        return f"{_num(m['rows_total'])} rows" + (f" ({', '.join(splits)})" if splits else "")
    if "metrics" in meta and "rows" in meta["metrics"]:  # batch_predict
        text = f"{_num(meta['metrics']['rows'])} rows predicted"
        found = re.search(r"predictions of model version (\S+) to (\S+)", log_text)
        return text + (f" by version {found.group(1)} -> {found.group(2)}" if found else "")
    if isinstance(params.get("Output"), str):  # e.g. preflight's summary line
        first = params["Output"].strip().splitlines()
        return re.sub(r"^preflight: ", "", first[0])[:100] if first else ""
    if "Output" in params:
        return f"Output: {params['Output']}"
    for m in meta.values():  # any other component: its first two numeric metrics
        numbers = [(k, v) for k, v in m.items() if isinstance(v, (int, float))
                   and not isinstance(v, bool)]
        if numbers:
            return ", ".join(f"{k} {_num(v)}" for k, v in numbers[:2])
    return ""


def artifact_paths(outputs: dict) -> dict[str, str]:
    """Output artifact name -> URI, metrics left out (their figures are in the progress line)."""
    return {name: a["uri"] for name, a in _artifacts(outputs).items()
            if name not in ("metrics", "classification_metrics") and a["uri"]}


#: KFP artifact types that a person opens: the suffix their file gets beside the artifact.
REPORT_SUFFIXES = {"system.HTML": ".html", "system.Markdown": ".md"}


def link_reports(folder: Path, types: Mapping[str, str]) -> dict[str, Path]:
    """A task's reports under names a browser or an editor opens as such: beside each HTML or
    Markdown artifact of `folder` (`types`: output name -> KFP schema title), the same file
    with its suffix (`report` -> `report.html`, a hard link, else a copy). The artifact itself
    keeps its path: it is the file the Kubeflow UI renders, and the path kfp hands the next
    task. Output name -> the file with the suffix, for each report the task wrote."""
    out = {}
    for name, schema in types.items():
        suffix = REPORT_SUFFIXES.get(schema)
        artifact = folder / name
        if suffix is None or not artifact.is_file():
            continue
        target = folder / f"{name}{suffix}"
        target.unlink(missing_ok=True)  # a retried task's earlier attempt
        try:
            os.link(artifact, target)
        except OSError:
            shutil.copyfile(artifact, target)
        out[name] = target
    return out


# -- errors from a task's log ---------------------------------------------------------------------

_OUTPUT_FILE = re.compile(r'"outputFile": "([^"]+)/executor_output\.json"')


def task_folder(log_text: str) -> Path | None:
    """The task's folder as kfp.local gave it to the task: the parent of the executor output
    file named in the executor input its log shows (exact even when runs share a root)."""
    found = _OUTPUT_FILE.findall(log_text)
    return Path(found[-1]) if found else None


def task_error(log_text: str, task_dir: Path | None = None) -> tuple[str, str]:
    """(exception type, message) of a failed task: conveyor's fail-fast record beside an output
    if there is one, else the exception line(s) of the last traceback in its log."""
    if task_dir is not None and task_dir.is_dir():
        from conveyor.failfast import MARKER_SUFFIX

        for marker in sorted(task_dir.glob(f"*{MARKER_SUFFIX}")):
            try:
                record = json.loads(marker.read_text())
                return f"conveyor.errors.{record['type']}", str(record["message"])
            except (OSError, ValueError, KeyError):
                continue
    lines = [line[len(_INDENT):] if line.startswith(_INDENT) else line
             for line in strip_ansi(log_text).splitlines()]
    starts = [i for i, line in enumerate(lines)
              if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return "", ""
    for i in range(starts[-1] + 1, len(lines)):
        line = lines[i]
        if line and not line[0].isspace():
            kind, sep, message = line.partition(": ")
            if not sep:
                kind, message = line.rstrip(":"), ""
            more = []
            for follow in lines[i + 1:i + 12]:  # a multi-line message, up to a blank line
                if not follow.strip() or follow.startswith(("[KFP Executor", "Traceback")):
                    break
                more.append(follow.rstrip())
            return kind.strip(), "\n".join([message.strip(), *more]).strip()
    return "", ""


def is_input_error(kind: str) -> bool:
    """Whether an exception type named in a traceback ('conveyor.errors.SchemaError') is one of
    conveyor's InputErrors (bad input: exit 2). Only conveyor's own modules are imported."""
    from conveyor.errors import InputError

    module, _, name = kind.rpartition(".")
    if not module or not (module == "conveyor" or module.startswith("conveyor.")):
        return False
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except Exception:  # an unimportable module: not ours to judge
        return False
    return isinstance(cls, type) and issubclass(cls, InputError)
