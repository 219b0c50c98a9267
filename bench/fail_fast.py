#!/usr/bin/env python
"""Bad input fails fast: seconds from the failing step's start to its error, for every case of
the bad-input corpus (`tests/pipelines/test_bad_input.py`).

The corpus runs the training pipeline's task functions in order in one process (so the emulators
and TensorFlow are loaded once); with CONVEYOR_BENCH_STEP_TIMES set, each refused case appends
which step raised, the error class and the seconds from that step's start to the error. A task
on Kubeflow, Vertex or kfp.local also pays a fresh process and its imports before the step's
work starts: that start-up is measured here per step (a fresh interpreter importing the step's
task module, median of 3) and added, so the total is what a task pod would see from its start to
the error. Task retries are not in these figures: a retry of a task that failed on bad input
fails at once (`conveyor.failfast`, `tests/pipelines/test_failfast.py`).

    python bench/fail_fast.py                 # the whole corpus, slow cases included
    python bench/fail_fast.py -k suite        # a pytest -k selection of it
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 10.0
# What a task process imports before its step can fail: the task module and the modules its
# work loads lazily (TensorFlow for train and evaluate; the corpus loads them once, in process).
TASK_MODULES = {
    "ingest": "conveyor.ingest.tasks, conveyor.ingest.bigquery, conveyor.ingest.gcs",
    "validate": "conveyor.validate.tasks, conveyor.validate.validate",
    "transform": "conveyor.transform.tasks, conveyor.transform.fit",
    "train": "conveyor.train.tasks, conveyor.train.train, tensorflow, keras",
    "evaluate": "conveyor.evaluate.tasks, conveyor.evaluate.evaluate, conveyor.evaluate.outputs, "
                "tensorflow",
    "push": "conveyor.push.tasks, conveyor.push.push",
}


def startup_seconds(modules: str, repeat: int = 3) -> float:
    """Wall seconds of a fresh interpreter that imports kfp's executor and `modules`."""
    code = f"import kfp.dsl.executor_main, {modules}"
    times = []
    for _ in range(repeat):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="a pytest -k expression selecting cases")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "steps.jsonl"
        env = {**os.environ, "CONVEYOR_BENCH_STEP_TIMES": str(times)}
        command = [sys.executable, "-m", "pytest", "tests/pipelines/test_bad_input.py", "-q",
                   "-p", "no:cacheprovider", "--durations=0"] + (["-k", args.k] if args.k else [])
        run = subprocess.run(command, cwd=REPO, env=env)
        rows = [json.loads(line) for line in times.read_text().splitlines()] \
            if times.exists() else []
    if not rows:
        print("no case recorded a failing step", file=sys.stderr)
        return 1
    steps = sorted({row["step"] for row in rows})
    startup = {step: startup_seconds(TASK_MODULES[step]) for step in steps}
    print(f"\n{'case':<78} {'step':<9} {'error':<20} {'step s':>7} {'+start':>7} {'total':>7}")
    for row in rows:
        total = row["seconds"] + startup[row["step"]]
        case = row["case"].split("::", 1)[-1]
        print(f"{case[:78]:<78} {row['step']:<9} {row['error'][:20]:<20} {row['seconds']:7.2f} "
              f"{startup[row['step']]:7.2f} {total:7.2f}")
    totals = [row["seconds"] + startup[row["step"]] for row in rows]
    over = sum(total > TARGET_SECONDS for total in totals)
    print("\nload average (1, 5, 15 min) at the end: "
          + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores")
    print(f"{len(rows)} cases; task start-up (fresh interpreter, imports): "
          + ", ".join(f"{step} {startup[step]:.2f} s" for step in steps))
    print(f"step start to error: median {statistics.median(totals):.2f} s, max {max(totals):.2f} s;"
          f" {over} over the {TARGET_SECONDS:.0f} s target")
    return run.returncode or (1 if over else 0)


if __name__ == "__main__":
    sys.exit(main())
