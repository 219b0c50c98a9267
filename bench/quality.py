#!/usr/bin/env python
"""Model quality: conveyor's training pipeline with only a table and a label, vs scikit-learn.

For each public data set of bench/quality_data.py (read from files inside installed packages):
load it into the emulated BigQuery of a local stack, run `pipelines/training` through kfp.local
(`SubprocessRunner(use_venv=False)`, each set in a fresh interpreter) with only `table`, `label`
and a fresh `model_base_path` (no feature spec, hyper-parameters or thresholds; `slices` is
passed as [] only when the pipeline's default slice columns are not in the table, since a slice
column that is missing fails evaluate), then read the Dataset the run's ingest wrote and fit, on
exactly its train split, scored on exactly its eval split:

- linear: LinearRegression and RidgeCV (best of the two on eval: generous to the baseline) or
  LogisticRegression; median imputation + standard scaling of numbers, one-hot encoding of
  strings and bools (missing its own category), dates as day numbers;
- HGB: HistGradientBoosting{Regressor,Classifier}, defaults, native categorical support (strings
  and bools as pandas categories; above 250 levels the train split's 250 most frequent are
  kept, the rest missing), dates as day numbers.

Each is scored with the metric conveyor's evaluate reports in evaluation.json: RMSE (and R²) for
regression, AUC for binary, accuracy for multiclass (rows with a NULL label left out, as
evaluate does). A run that fails is recorded with its first error line and the others go on.

    python bench/quality.py                       # every set
    python bench/quality.py --sets cars,fair --out /tmp/quality
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quality_data import SETS, arrow_table, load_into_bigquery  # noqa: E402

METRIC = {"regression": "rmse", "binary": "auc", "multiclass": "accuracy"}
TOLERANCE = {"rmse": 0.05, "auc": 0.02, "accuracy": 0.02}  # the lead's target vs HGB
RUN_TIMEOUT_S = 40 * 60
MAX_HGB_LEVELS = 250
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


# -- scikit-learn on the same splits ---------------------------------------------------------------

def _frames(dataset_path: str, label: str):
    """Train and eval splits as pandas (NULL labels dropped), and each feature's contract type."""
    from conveyor.io import Dataset

    dataset = Dataset(dataset_path)
    types = {c.name: c.type for c in dataset.info.columns}
    frames = []
    for split in ("train", "eval"):
        table = dataset.read_table(split)
        frame = table.to_pandas(types_mapper=None)
        frame = frame[frame[label].notna()].reset_index(drop=True)
        frames.append(frame)
    return frames[0], frames[1], {k: v for k, v in types.items() if k != label}


def _matrix(frame, types: dict[str, str], categorical_as: str):
    """Features as sklearn takes them: numbers float (NaN), dates day numbers, categories object
    strings ('__missing__') for one-hot, or left for `_hgb_categories`."""
    import numpy as np
    import pandas as pd

    out = {}
    for name, ctype in types.items():
        s = frame[name]
        if ctype in ("int64", "float64"):
            out[name] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif ctype in ("date", "timestamp"):
            days = pd.to_datetime(s, utc=ctype == "timestamp")
            epoch = pd.Timestamp("1970-01-01", tz="UTC" if ctype == "timestamp" else None)
            out[name] = ((days - epoch) / pd.Timedelta(days=1)).astype("float64")
        else:
            values = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                      for v in s.astype(object)]
            out[name] = (np.array(["__missing__" if v is None else v for v in values], dtype=object)
                         if categorical_as == "onehot" else values)
    return pd.DataFrame(out)


def _hgb_categories(train, evaluation, types):
    import pandas as pd

    for name, ctype in types.items():
        if ctype not in ("string", "bool"):
            continue
        counts = pd.Series(train[name]).value_counts()
        levels = list(counts.index[:MAX_HGB_LEVELS])
        for frame in (train, evaluation):
            frame[name] = pd.Categorical(frame[name], categories=levels)
    return train, evaluation


def _score(task: str, y_true, model, x) -> dict:
    import numpy as np
    from sklearn.metrics import accuracy_score, roc_auc_score

    if task == "regression":
        p = np.asarray(model.predict(x), dtype="float64")
        y = np.asarray(y_true, dtype="float64")
        sse = float(np.sum((y - p) ** 2))
        sst = float(np.sum((y - y.mean()) ** 2))
        return {"rmse": math.sqrt(sse / len(y)), "r2": 1 - sse / sst if sst > 0 else 0.0}
    if task == "binary":
        # AUC of the second class's probability; the same value for either class as positive
        y = np.asarray([str(v) for v in y_true]) == str(model.classes_[1])
        return {"auc": float(roc_auc_score(y, model.predict_proba(x)[:, 1])),
                "accuracy": float(accuracy_score([str(v) for v in y_true],
                                                 [str(v) for v in model.predict(x)]))}
    return {"accuracy": float(accuracy_score([str(v) for v in y_true],
                                             [str(v) for v in model.predict(x)]))}


def sklearn_baselines(dataset_path: str, label: str, task: str) -> dict:
    """Best linear model and HistGradientBoosting on the run's exact train/eval split."""
    import warnings

    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, evaluation, types = _frames(dataset_path, label)
    y_train, y_eval = train[label], evaluation[label]
    if task != "regression":
        y_train = np.asarray([str(v) for v in y_train], dtype=object)
    numeric = [n for n, t in types.items() if t in ("int64", "float64", "date", "timestamp")]
    categorical = [n for n in types if n not in numeric]
    x_train, x_eval = _matrix(train, types, "onehot"), _matrix(evaluation, types, "onehot")
    pre = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
    ])
    out = {"train_rows": len(train), "eval_rows": len(evaluation)}
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the score says what it is
        if task == "regression":
            linear = {}
            for name, est in (("LinearRegression", LinearRegression()),
                              ("RidgeCV", RidgeCV(alphas=np.logspace(-3, 3, 13)))):
                model = make_pipeline(pre, est).fit(x_train, y_train)
                linear[name] = _score(task, y_eval, model, x_eval)
            best = min(linear, key=lambda k: linear[k]["rmse"])
        else:
            model = make_pipeline(pre, LogisticRegression(max_iter=5000)).fit(x_train, y_train)
            linear = {"LogisticRegression": _score(task, y_eval, model, x_eval)}
            best = "LogisticRegression"
        out["linear"] = {"model": best, **linear[best], "all": linear}
        h_train, h_eval = _hgb_categories(_matrix(train, types, "hgb"),
                                          _matrix(evaluation, types, "hgb"), types)
        hgb = (HistGradientBoostingRegressor(random_state=0) if task == "regression" else
               HistGradientBoostingClassifier(random_state=0))
        hgb.set_params(categorical_features="from_dtype")
        hgb.fit(h_train, y_train)
        out["hgb"] = _score(task, y_eval, hgb, h_eval)
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


# -- the whole benchmark ---------------------------------------------------------------------

def compare(record: dict) -> None:
    """Ratios conveyor / baseline on the primary metric, and whether the targets are met."""
    metric = METRIC[record["task"]]
    record["metric"] = metric
    conveyor = (record["conveyor"].get("metrics") or {}).get(metric)
    if conveyor is None or record["conveyor"].get("task") != record["task"]:
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


def run_set(name: str, out: Path) -> dict:
    data_set = SETS[name]
    frame, source = data_set.load()
    table = arrow_table(frame)
    record = {"set": name, "package": data_set.package, "source_file": str(source),
              "table": data_set.table_id, "label": data_set.label, "task": data_set.task,
              "rows": table.num_rows, "columns": table.num_columns, "note": data_set.note}
    try:
        load_into_bigquery(table, data_set.table_id)
    except Exception as exc:  # recorded, the other sets go on
        record["conveyor"] = {"status": "failed", "error": f"seeding BigQuery: {exc}"[:500]}
        return record
    print(f"[quality] {name}: {table.num_rows:,} rows loaded into {data_set.table_id}; "
          "running the training pipeline ...", flush=True)
    record["conveyor"] = conveyor = run_conveyor(name, out / "runs" / name)
    if conveyor.get("task") and conveyor["task"] != data_set.task:
        conveyor["note"] = f"conveyor chose {conveyor['task']}, the set is {data_set.task}"
    if conveyor.get("dataset"):
        try:
            record["sklearn"] = sklearn_baselines(conveyor["dataset"], data_set.label,
                                                  data_set.task)
        except Exception as exc:
            record["sklearn"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    compare(record)
    value = (conveyor.get("metrics") or {}).get(record.get("metric"))
    summary = conveyor.get("error") or f"{record.get('metric')}: conveyor {_fmt(value)}"
    print(f"[quality] {name}: {conveyor['status']} in {conveyor.get('process_s')} s; {summary}",
          flush=True)
    return record


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.{digits}g}"
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def table(records: list[dict]) -> str:
    lines = ["| set | rows | task | metric | conveyor | best linear | HGB | conveyor / linear | "
             "conveyor / HGB | conveyor wall s | blessed | pushed |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    notes = []
    for r in records:
        c = r.get("conveyor", {})
        metric = METRIC[r["task"]]
        sk = r.get("sklearn") or {}
        linear = sk.get("linear", {})
        cells = [r["set"], f"{r['rows']:,}", r["task"], metric,
                 _fmt((c.get("metrics") or {}).get(metric)),
                 _fmt(linear.get(metric)) + (f" ({linear['model']})" if linear.get("model") and
                                            r["task"] == "regression" else ""),
                 _fmt(sk.get("hgb", {}).get(metric)),
                 _fmt(r.get("ratio_linear"), 3), _fmt(r.get("ratio_hgb"), 3),
                 _fmt(c.get("pipeline_s")), _fmt(c.get("blessed")), _fmt(c.get("pushed"))]
        lines.append("| " + " | ".join(cells) + " |")
        if c.get("error"):
            notes.append(f"- {r['set']}: FAILED: `{c['error']}`")
        if c.get("note"):
            notes.append(f"- {r['set']}: {c['note']}")
        if sk.get("error"):
            notes.append(f"- {r['set']}: scikit-learn failed: {sk['error']}")
    return "\n".join(lines + ([""] + notes if notes else []))


def verdict(records: list[dict]) -> str:
    scored = [r for r in records if "gap_hgb" in r]
    failed = [r["set"] for r in records if r.get("conveyor", {}).get("status") != "ok"]
    lines = [f"sets: {len(records)}; conveyor failed on {len(failed)}"
             + (f" ({', '.join(failed)})" if failed else "")]
    if scored:
        beats = [r["set"] for r in scored if r.get("beats_linear")]
        lines.append(f"conveyor >= best linear on {len(beats)} of {len(scored)} scored sets "
                     f"(target: all {len(records)})")
        normalized = [r["gap_hgb"] / TOLERANCE[r["metric"]] for r in scored]
        median = statistics.median(normalized)
        lines.append(
            f"median gap to HGB, in units of the tolerance (2 % AUC/accuracy, 5 % RMSE): "
            f"{median:.2f} ({'within' if median <= 1 else 'outside'} the target; <= 1 is within); "
            "per set: " + ", ".join(f"{r['set']} {100 * r['gap_hgb']:+.1f} %" for r in scored))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", help=f"comma-separated, default all: {','.join(SETS)}")
    parser.add_argument("--out", default=str(HERE / "out" / "quality"))
    parser.add_argument("--table", metavar="RESULTS_JSON",
                        help="print the table of an earlier run's results.json, and exit")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_run(*args.one)
    if args.table:
        document = json.loads(Path(args.table).read_text())
        for r in document["sets"]:  # error lines again from the logs (the parser may be newer)
            log = Path(r.get("conveyor", {}).get("log") or "/nonexistent")
            if r["conveyor"].get("error") and log.exists():
                r["conveyor"]["error"] = first_error_line(log.read_text(errors="replace"))
            compare(r)
        print(f"main at {document['commit']}, {document['date']}, {document['total_s']} s in all\n")
        print(table(document["sets"]) + "\n\n" + verdict(document["sets"]))
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
    print("\n" + verdict(records))
    print(f"\nfigures: {out / 'results.json'}")
    return 0


def _document(records: list[dict], commit: dict, seconds: int | None = None) -> dict:
    return {"date": dt.date.today().isoformat(), **commit, "total_s": seconds,
            "metric": METRIC, "tolerance_vs_hgb": TOLERANCE, "sets": records}


if __name__ == "__main__":
    sys.exit(main())
