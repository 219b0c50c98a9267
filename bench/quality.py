#!/usr/bin/env python
"""Model quality: conveyor's training pipeline with only a table and a label, vs scikit-learn.

For each public data set of bench/quality_data.py (read from files inside installed packages;
each carries a trait, such as name-like strings, an identifier in 100 k+ rows, hour and month
integers, a rare class, integer-coded classes, NULL labels or a pure-noise label): load it into
the emulated BigQuery of a local stack, run `pipelines/training` through kfp.local
(`SubprocessRunner(use_venv=False)`, each set in a fresh interpreter) with only `table`, `label`
and a fresh `model_base_path` (no feature spec, hyper-parameters or thresholds; `slices` is
passed as [] only when the pipeline's default slice columns are not in the table, since a slice
column that is missing fails evaluate), then read the Dataset the run's ingest wrote and:

- fit the references of bench/quality_baselines.py (best linear model, HistGradientBoosting) on
  exactly its train split, scored on exactly its eval split;
- score the SavedModel that the run's train step wrote on the same train and eval rows, in a
  child (its serving signature, as evaluate and serving call it): conveyor's eval score (exact,
  as the baselines: evaluate's own AUC is binned) and its training-split score (memorization);
- compare conveyor with each reference on the same eval rows: the paired difference and its
  bootstrap 95 % interval (bench/quality_paired.py), so a tie is called a tie.

Each is scored with the metric conveyor's evaluate reports in evaluation.json: RMSE (and R²) for
regression, AUC for binary, accuracy for multiclass (rows with a NULL label left out, as
evaluate does). A run that fails is recorded with its first error line and the others go on.
The summary checks each criterion of issue 26 (bench/quality_report.py).

    python bench/quality.py                       # every set
    python bench/quality.py --sets cars,fair --out /tmp/quality
    python bench/quality.py --table bench/out/quality/results.json   # the table again
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality_baselines as baselines  # noqa: E402
import quality_paired as paired  # noqa: E402
from quality_data import SETS, arrow_table, load_into_bigquery  # noqa: E402
from quality_report import METRIC, TOLERANCE, compare, table, verdict  # noqa: E402

RUN_TIMEOUT_S = 40 * 60
PREDICT_TIMEOUT_S = 20 * 60
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Failed|Exit)\b(?::|$)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# -- the child: one pipeline run -------------------------------------------------------------------

def one_run(table: str, label: str, work: str) -> int:
    """Child: run the training pipeline once; write work/child.json (run folder, seconds)."""
    from kfp import local

    from conveyor import gcp
    from conveyor.pipelines import training

    work_dir = Path(work)
    root = work_dir / "runs"
    root.mkdir(parents=True, exist_ok=True)
    arguments = {"table": table, "label": label, "model_base_path": str(work_dir / "serving")}
    default_slices = training.pipeline.component_spec.inputs["slices"].default or []
    columns = {f.name for f in gcp.bigquery_client().get_table(table).schema}
    if not set(default_slices) <= columns:
        arguments["slices"] = []
    record = {"arguments": arguments, "status": "failed"}
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    started = time.monotonic()
    try:
        training.pipeline(**arguments)
        record["status"] = "ok"
    finally:
        record["seconds"] = round(time.monotonic() - started, 1)
        runs = sorted(p for p in root.iterdir() if p.is_dir())
        record["run"] = str(runs[-1]) if runs else None
        (work_dir / "child.json").write_text(json.dumps(record))
    return 0


def first_error_line(log: str) -> str:
    """The first line of the log that names an exception (conveyor's own errors first)."""
    lines = [line.strip() for line in _ANSI.sub("", log).splitlines()]
    found = [i for i, line in enumerate(lines) if _ERROR_LINE.match(line)]
    first = found[0] if found else None
    chosen = next((i for i in found if lines[i].startswith("conveyor.")), first)
    if chosen is None:
        tail = [line for line in lines if line]
        return (tail[-1] if tail else "no output")[:500]
    text = lines[chosen]
    if text.endswith(":"):  # a message that lists its problems on the next lines
        more = []
        for line in lines[chosen + 1:chosen + 4]:
            if not line or line.startswith(("Traceback", "File ")):
                break
            more.append(line)
        text = " ".join([text, *more])
    return text[:700]


def run_conveyor(name: str, work: Path) -> dict:
    """Run the pipeline on set `name` in a fresh interpreter; what it did and where."""
    data_set = SETS[name]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log_path = work / "log.txt"
    started = time.monotonic()
    try:
        with open(log_path, "w") as log:
            child = subprocess.run(
                [sys.executable, __file__, "--one", data_set.table_id, data_set.label, str(work)],
                stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S)
        code = child.returncode
    except subprocess.TimeoutExpired:
        code = None
    wall = round(time.monotonic() - started, 1)
    log = log_path.read_text(errors="replace")
    child_record = (json.loads((work / "child.json").read_text())
                    if (work / "child.json").exists() else {})
    run = Path(child_record["run"]) if child_record.get("run") else None
    out = {"status": "ok" if code == 0 else "failed", "process_s": wall,
           "pipeline_s": child_record.get("seconds"), "run": str(run) if run else None,
           "arguments": child_record.get("arguments"), "log": str(log_path)}
    if code is None:
        out["error"] = f"timed out after {RUN_TIMEOUT_S} s"
    elif code:
        out["error"] = first_error_line(log)
    from pipeline import task_seconds  # bench/pipeline.py: per-task seconds from kfp's log

    out["tasks_s"] = task_seconds(log)
    if run is not None:
        dataset = run / "bigquery-ingest" / "dataset"
        out["dataset"] = str(dataset) if (dataset / "dataset.json").exists() else None
        model = run / "train" / "model"
        out["model"] = str(model) if (model / "saved_model.pb").exists() else None
        evaluation = run / "evaluate" / "evaluation" / "evaluation.json"
        if evaluation.exists():
            report = json.loads(evaluation.read_text())
            out["task"] = report["task"]
            out["metrics"] = report["metrics"]["overall"]
            out["blessed"] = bool(report["blessed"])
        serving = work / "serving"
        out["pushed_versions"] = (sorted(p.name for p in serving.iterdir() if p.name.isdigit())
                                  if serving.is_dir() else [])
        out["pushed"] = bool(out["pushed_versions"])
    return out


# -- the whole benchmark ---------------------------------------------------------------------

def run_baselines(dataset: str, label: str, task: str, work: Path) -> tuple[dict, dict]:
    """The scikit-learn references in a child with capped memory (quality_baselines)."""
    with open(work / "baselines_log.txt", "w") as log:
        child = subprocess.run([sys.executable, __file__, "--baselines", dataset, label, task,
                                str(work)], stdout=log, stderr=subprocess.STDOUT,
                               timeout=RUN_TIMEOUT_S)
    if child.returncode:
        raise RuntimeError(first_error_line((work / "baselines_log.txt").read_text(
            errors="replace")))
    return baselines.load_baselines(work)


def score_conveyor(record: dict, rows: dict | None, work: Path) -> None:
    """conveyor's trained model on the run's train and eval rows (a child: TensorFlow), its
    exact scores, and the paired differences with each reference on the eval rows."""
    conveyor, label = record["conveyor"], record["label"]
    started = time.monotonic()
    with open(work / "predict_log.txt", "w") as log:
        child = subprocess.run(
            [sys.executable, __file__, "--predict", conveyor["model"], conveyor["dataset"], label,
             str(work)], stdout=log, stderr=subprocess.STDOUT, timeout=PREDICT_TIMEOUT_S)
    if child.returncode:
        conveyor["predict_error"] = first_error_line(
            (work / "predict_log.txt").read_text(errors="replace"))
        return
    meta, predictions = paired.load_predictions(work)
    conveyor["scoring_s"] = round(time.monotonic() - started, 1)
    task = meta["task"]
    for split in ("train", "eval"):
        conveyor[split] = paired.conveyor_metrics(task, meta["classes"],
                                                  predictions[f"{split}_y"], predictions[split])
    if rows is None or task != record["task"]:
        return
    ours = predictions["eval"]
    if task == "binary":
        ours = paired.conveyor_positive_scores(meta, ours, rows["positive"])
    metric = METRIC[task]
    record["paired"] = {key: paired.paired_difference(metric, rows["y"], ours, rows[key])
                        for key in ("linear", "hgb")}


def run_set(name: str, out: Path) -> dict:
    data_set = SETS[name]
    frame, source = data_set.load()
    arrow = arrow_table(frame)
    record = {"set": name, "trait": data_set.trait, "package": data_set.package,
              "source_file": str(source), "table": data_set.table_id, "label": data_set.label,
              "task": data_set.task, "rows": arrow.num_rows, "columns": arrow.num_columns,
              "note": data_set.note, "noise": data_set.noise}
    try:
        load_into_bigquery(arrow, data_set.table_id)
    except Exception as exc:  # recorded, the other sets go on
        record["conveyor"] = {"status": "failed", "error": f"seeding BigQuery: {exc}"[:500]}
        return record
    print(f"[quality] {name}: {arrow.num_rows:,} rows loaded into {data_set.table_id}; "
          "running the training pipeline ...", flush=True)
    work = out / "runs" / name
    record["conveyor"] = conveyor = run_conveyor(name, work)
    if conveyor.get("task") and conveyor["task"] != data_set.task:
        conveyor["note"] = f"conveyor chose {conveyor['task']}, the set is {data_set.task}"
    rows = None
    if conveyor.get("dataset"):
        try:
            record["sklearn"], rows = run_baselines(conveyor["dataset"], data_set.label,
                                                    data_set.task, work)
        except Exception as exc:
            record["sklearn"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    if conveyor.get("model") and conveyor.get("dataset"):
        try:
            score_conveyor(record, rows, work)
        except Exception as exc:  # recorded, the set keeps its other figures
            conveyor["predict_error"] = f"{type(exc).__name__}: {exc}"[:500]
    compare(record)
    line = paired_line(record)
    print(f"[quality] {name}: {conveyor['status']} in {conveyor.get('process_s')} s; "
          f"{conveyor.get('error') or line}", flush=True)
    return record


def paired_line(record: dict) -> str:
    vs = (record.get("paired") or {}).get("linear")
    if not vs:
        return f"{record.get('metric')}: not compared"
    return (f"{record['metric']}: conveyor {vs['conveyor']:.4g}, linear {vs['baseline']:.4g}, "
            f"diff {vs['diff']:+.4g} [{vs['low']:+.3g}, {vs['high']:+.3g}]: {vs['verdict']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", help=f"comma-separated, default all: {','.join(SETS)}")
    parser.add_argument("--out", default=str(HERE / "out" / "quality"))
    parser.add_argument("--table", metavar="RESULTS_JSON",
                        help="print the table of an earlier run's results.json, and exit")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--predict", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--baselines", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_run(*args.one)
    if args.predict:
        return paired.predict_splits(*args.predict)
    if args.baselines:
        return baselines.baselines_child(*args.baselines)
    if args.table:
        document = json.loads(Path(args.table).read_text())
        for r in document["sets"]:  # error lines again from the logs (the parser may be newer)
            log = Path(r.get("conveyor", {}).get("log") or "/nonexistent")
            if r["conveyor"].get("error") and log.exists():
                r["conveyor"]["error"] = first_error_line(log.read_text(errors="replace"))
            compare(r)
        print(f"main at {document['commit']}, {document['date']}, {document['total_s']} s in all\n")
        print(table(document["sets"]) + "\n\n" + verdict(document["sets"],
                                                           noise_sets(document["sets"])))
        return 0
    names = [s.strip() for s in args.sets.split(",")] if args.sets else list(SETS)
    unknown = [n for n in names if n not in SETS]
    if unknown:
        parser.error(f"--sets: unknown {unknown}; known: {', '.join(SETS)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from harness import machine

    from conveyor.local import LocalStack

    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    # the editable install runs the work tree: name the files that differ from the commit
    dirty = subprocess.run(["git", "-C", str(HERE.parent), "status", "--short", "--",
                            "components"], capture_output=True, text=True).stdout.split("\n")
    commit_note = {"commit": commit, "uncommitted": [x[3:] for x in dirty if x.strip()]}
    stack = LocalStack(out / "stack")
    info = stack.up()
    saved = dict(os.environ)
    info.activate()
    records = []
    started = time.monotonic()
    try:
        for name in names:
            try:
                records.append(run_set(name, out))
            except Exception as exc:  # one set's trouble never stops the others
                records.append({"set": name, "task": SETS[name].task, "rows": 0,
                                "conveyor": {"status": "failed",
                                             "error": f"{type(exc).__name__}: {exc}"[:500]}})
            (out / "results.json").write_text(json.dumps(_document(records, commit_note),
                                                              indent=1))
    finally:
        stack.down()
        os.environ.clear()
        os.environ.update(saved)
    document = _document(records, commit_note, round(time.monotonic() - started))
    (out / "results.json").write_text(json.dumps(document, indent=1))
    edits = (f" with uncommitted edits to {len(commit_note['uncommitted'])} file(s) of components/"
             if commit_note["uncommitted"] else "")
    print(f"\n{machine(1).split('; medians')[0]}; one run per set; main at {commit}{edits}, "
          f"{document['date']}, {document['total_s']} s in all\n")
    print(table(records))
    print("\n" + verdict(records, noise_sets(records)))
    print(f"\nfigures: {out / 'results.json'}")
    return 0


def noise_sets(records: list[dict]) -> set[str]:
    """The sets whose label is noise (the record says so; older records: the set's name)."""
    return {r["set"] for r in records
            if r.get("noise", SETS[r["set"]].noise if r["set"] in SETS else False)}


def _document(records: list[dict], commit: dict, seconds: int | None = None) -> dict:
    return {"date": dt.date.today().isoformat(), **commit, "total_s": seconds,
            "metric": METRIC, "tolerance_vs_hgb": TOLERANCE, "sets": records}


if __name__ == "__main__":
    sys.exit(main())
