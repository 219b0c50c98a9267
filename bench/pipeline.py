#!/usr/bin/env python
"""The whole training pipeline, conveyor vs TensorFlow Extended, on the reference workload.

conveyor: `pipelines/training` through kfp.local on the local stack: ingest from the emulated
BigQuery (conveyor's normal path: the table is seeded first, untimed), validate (inferred suite,
statistics), transform (z-score f0..f7, vocabulary + 1 OOV for c0/c1: bench/reference_spec.yaml),
train (Embedding(vocab+1, 4), Dense(16), Adam(1e-2), 200 steps x 256), evaluate (AUC, accuracy
>= 0.6, overall and by c0) and push to a fresh local model base path.
TFX: ../shared/bench/tfx-baseline/tfx_pipeline.py (TFX 1.16 LocalDagRunner, caching off) in the
venv its setup_venv.sh makes (default ~/.cache/conveyor/tfx-venv; `--tfx-venv`), on the same
synthetic rows (same generator and seed), split 2:1 by hash.

Runs alternate conveyor, TFX, conveyor, TFX... per row count. Each run is a fresh process under
/usr/bin/time: wall seconds, peak RSS (the largest process of the run), CPU seconds. conveyor's
wall is the whole `python` process (imports included); TFX's is its run minus generating its CSV.

    python bench/pipeline.py                              # 20k, 200k, 1M rows, 3 repeats
    python bench/pipeline.py --rows 200000 --repeat 1 --no-tfx
    python bench/pipeline.py --rows 1000000 --rows 10000000 --repeat 1 --no-tfx --read-streams 4
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from harness import machine

HERE = Path(__file__).resolve().parent
TFX_DIR = HERE.parent.parent / "shared" / "bench" / "tfx-baseline"
DEFAULT_VENV = Path.home() / ".cache" / "conveyor" / "tfx-venv"
HPARAMS = {"hidden_units": [16], "embedding_dim": 4, "learning_rate": 0.01, "batch_size": 256,
           "steps": 200, "epochs": 1}
_TASK_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - (Executing task|Task) .*?'(.+?)'")


def one_conveyor(rows: int, out: str, read_streams: int = 1) -> None:
    """Child: run the training pipeline once (the stack's environment is inherited)."""
    from kfp import local

    from conveyor.local.seed import reference_table
    from conveyor.pipelines import training

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=out + "/runs",
               raise_on_error=True)
    training.pipeline(
        table=reference_table(rows), label="label", task="binary",
        split_ratios={"train": 2 / 3, "eval": 1 / 3}, policy="warn",
        feature_spec_uri=str(HERE / "reference_spec.yaml"), hyperparameters=HPARAMS,
        model_base_path=out + "/serving", slices=["c0"],
        thresholds={"accuracy": {"min": 0.6}}, read_streams=read_streams)


def timed(cmd: list[str], env=None, cwd=None) -> tuple[dict, str]:
    fmt = "CONVEYOR-TIME %e %M %U %S"
    run = subprocess.run(["/usr/bin/time", "-f", fmt, *cmd], capture_output=True, text=True,
                         env=env, cwd=cwd)
    line = [x for x in run.stderr.splitlines() if x.startswith("CONVEYOR-TIME")]
    if run.returncode or not line:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    wall, rss, user, system = line[-1].split()[1:]
    return ({"wall_s": float(wall), "peak_rss_mb": round(int(rss) / 1024),
             "cpu_s": round(float(user) + float(system), 1)}, run.stdout + run.stderr)


def task_seconds(log: str) -> dict[str, float]:
    """Per-task seconds from kfp.local's 'Executing task' / 'Task ... finished' lines."""
    started, out = {}, {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines():
        m = _TASK_LINE.match(line)
        if not m:
            continue
        h, mi, s = m.group(1).split(":")
        t = int(h) * 3600 + int(mi) * 60 + float(s)
        if m.group(2) == "Executing task":
            started[m.group(3)] = t
        elif "finished" in line and m.group(3) in started:
            out[m.group(3)] = round(t - started.pop(m.group(3)), 2)
    return out


def run_conveyor(rows: int, work: Path, read_streams: int = 1) -> dict:
    import os

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    probe = work / "task_rss.jsonl"  # each task process's own peak (bench/taskrss)
    env = {**os.environ, "CONVEYOR_BENCH_TASK_RSS": str(probe),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "taskrss"),
                                                       os.environ.get("PYTHONPATH")]))}
    figures, log = timed([sys.executable, __file__, "--one-conveyor", str(rows), str(work),
                          str(read_streams)], env=env)
    serving = work / "serving"
    pushed = sorted(p.name for p in serving.iterdir()) if serving.exists() else []
    task_rss: dict[str, int] = {}
    for line in probe.read_text().splitlines() if probe.exists() else []:
        record = json.loads(line)
        task_rss[record["task"]] = max(task_rss.get(record["task"], 0), record["peak_rss_mb"])
    return {"system": "conveyor", "rows": rows, "read_streams": read_streams, **figures,
            "pushed": pushed,
            "components": task_seconds(log), "task_rss_mb": task_rss}


def run_tfx(rows: int, work: Path, venv: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    figures, _ = timed([str(venv / "bin" / "python"), str(TFX_DIR / "tfx_pipeline.py"), str(rows),
                        "--workdir", str(work)], cwd=str(TFX_DIR))
    summary = json.loads((work / "timings.json").read_text())
    figures["wall_s"] = round(figures["wall_s"] - summary["data_gen_s"], 2)
    return {"system": "tfx", "rows": rows, **figures, "pushed": summary["pushed_versions"],
            "components": {c["component"]: c["seconds"] for c in summary["components"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append",
                        help="default: 20000, 200000 and 1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tfx-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--no-tfx", action="store_true")
    parser.add_argument("--read-streams", type=int, default=1,
                        help="conveyor's BigQuery Storage Read streams (default 1)")
    parser.add_argument("--out", default=str(HERE / "out" / "pipeline"))
    parser.add_argument("--one-conveyor", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_conveyor:
        rows, work, streams = args.one_conveyor
        return one_conveyor(int(rows), work, int(streams))
    tfx = not args.no_tfx
    if tfx and not (args.tfx_venv / "bin" / "python").exists():
        raise SystemExit(f"no TFX venv at {args.tfx_venv}: create it with\n  bash "
                         f"{TFX_DIR / 'setup_venv.sh'} {args.tfx_venv}\n(~100 s, ~3.2 GB), "
                         "or run with --no-tfx")
    from conveyor.local import LocalStack, seed

    row_counts = args.rows or [20_000, 200_000, 1_000_000]
    out = Path(args.out).resolve()  # TFX runs with its own folder as the working directory
    stack = LocalStack(out / "stack")
    info = stack.up()
    info.activate()
    results = []
    try:
        for rows in row_counts:
            if not seed.table_exists(seed.reference_table(rows)):
                seed.seed_reference(rows)
        for _ in range(args.repeat):
            for rows in row_counts:
                results.append(run_conveyor(rows, out / "conveyor", args.read_streams))
                print(json.dumps(results[-1]), flush=True)
                if tfx:
                    results.append(run_tfx(rows, out / "tfx", args.tfx_venv))
                    print(json.dumps(results[-1]), flush=True)
    finally:
        stack.down()
    report(results, row_counts, args.repeat, tfx)


def report(results: list[dict], row_counts: list[int], repeat: int, tfx: bool) -> None:
    med = statistics.median
    print("\n" + machine(repeat) + "\n")
    print("| rows | system | wall s (median) | peak RSS MB | CPU s | pushed |")
    print("|---:|---|---:|---:|---:|---|")
    for rows in row_counts:
        for system in ("conveyor", "tfx") if tfx else ("conveyor",):
            runs = [r for r in results if r["rows"] == rows and r["system"] == system]
            print(f"| {rows:,} | {system} | {med(r['wall_s'] for r in runs):.1f} | "
                  f"{med(r['peak_rss_mb'] for r in runs):,.0f} | "
                  f"{med(r['cpu_s'] for r in runs):.1f} | {runs[-1]['pushed']} |")
    if tfx:
        print("\n| rows | TFX / conveyor wall (min, median, max) | conveyor / TFX peak RSS |")
        print("|---:|---|---:|")
        for rows in row_counts:
            c = [r for r in results if r["rows"] == rows and r["system"] == "conveyor"]
            t = [r for r in results if r["rows"] == rows and r["system"] == "tfx"]
            ratios = sorted(b["wall_s"] / a["wall_s"] for a, b in zip(c, t))
            rss = med(a["peak_rss_mb"] for a in c) / med(b["peak_rss_mb"] for b in t)
            print(f"| {rows:,} | {ratios[0]:.2f}x, {med(ratios):.2f}x, {ratios[-1]:.2f}x | "
                  f"{rss:.2f} |")
    print("\nconveyor seconds per task (median):")
    for rows in row_counts:
        runs = [r for r in results if r["rows"] == rows and r["system"] == "conveyor"]
        tasks = sorted({t for r in runs for t in r["components"]})
        print(f"  {rows:,}: " + ", ".join(
            f"{t} {med(r['components'].get(t, 0) for r in runs):.1f}" for t in tasks))
    print("\nconveyor peak RSS MB per task process (median; the pipeline's own process is "
          "pipeline.py):")
    for rows in row_counts:
        runs = [r for r in results if r["rows"] == rows and r["system"] == "conveyor"]
        tasks = sorted({t for r in runs for t in r.get("task_rss_mb", {})})
        print(f"  {rows:,}: " + ", ".join(
            f"{t} {med(r['task_rss_mb'].get(t, 0) for r in runs):.0f}" for t in tasks))


if __name__ == "__main__":
    main()
