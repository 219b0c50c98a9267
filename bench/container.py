"""Tasks in containers vs subprocesses: `conveyor run training --local` and the same with
`--docker`, alternated in pairs, per task (conveyor's own task lines) and whole-run wall time.

    python bench/container.py --table pen.penguins --label species --pairs 3
    python bench/container.py --reference 200000 --pairs 3   # bench/pipeline.py's workload

Needs a running stack (`eval "$(conveyor local env)"`, with the table loaded: `conveyor local
seed --reference 200000` for the reference workload) and the image (`make image`). Each run
pushes into a fresh local model base path, so every run does the same work (version 1, no
baseline). Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINE = re.compile(r"^  done +(?P<task>\S+) +(?P<seconds>[0-9.]+) s", re.MULTILINE)


def reference_params(rows: int) -> list[str]:
    """bench/pipeline.py's training parameters for the reference workload of `rows` rows."""
    sys.path.insert(0, str(HERE))
    from pipeline import HPARAMS

    from conveyor.local.seed import reference_table

    params = {"table": reference_table(rows), "label": "label", "task": "binary",
              "split_ratios": {"train": 2 / 3, "eval": 1 / 3}, "policy": "warn",
              "feature_spec_uri": str(HERE / "reference_spec.yaml"), "hyperparameters": HPARAMS,
              "slices": ["c0"], "thresholds": {"accuracy": {"min": 0.6}}}
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in params.items()]


def one_run(docker: bool, params: list[str], work: Path, index: int) -> dict[str, float]:
    """Seconds per task of one run, plus 'whole run (wall)'."""
    mode = "docker" if docker else "subprocess"
    command = [sys.executable, "-m", "conveyor", "run", "training", "--local",
               *(["--docker"] if docker else []),
               *[part for param in params for part in ("--param", param)],
               "--param", f"model_base_path={work / f'models-{mode}-{index}'}",
               "--pipeline-root", str(work / mode)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    figures = {m["task"]: float(m["seconds"]) for m in LINE.finditer(done.stdout)}
    figures["whole run (wall)"] = round(wall, 1)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="with --label: a table of your own (2 epochs)")
    parser.add_argument("--label")
    parser.add_argument("--reference", type=int, metavar="ROWS",
                        help="bench/pipeline.py's reference workload of ROWS rows instead")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    if args.reference:
        params = reference_params(args.reference)
    elif args.table and args.label:
        params = [f"table={args.table}", f"label={args.label}", 'hyperparameters={"epochs": 2}']
    else:
        parser.error("give --table and --label, or --reference ROWS")
    runs: dict[str, list[dict[str, float]]] = {"subprocess": [], "docker": []}
    loads: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-container-") as folder:
        for index in range(args.pairs):
            for mode, done in runs.items():
                loads.append(f"{os.getloadavg()[0]:.1f}")
                done.append(one_run(mode == "docker", params, Path(folder), index))
                print(f"pair {index + 1} {mode}: {done[-1]}", file=sys.stderr)
    tasks = list(runs["subprocess"][0])
    print("| task | subprocess | median | `--docker` | median |")
    print("|---|---|---:|---|---:|")
    for task in tasks:
        cells = []
        for done in runs.values():
            values = [r.get(task, float("nan")) for r in done]
            cells += [", ".join(f"{v:.1f}" for v in values), f"{statistics.median(values):.1f}"]
        print(f"| {task} | " + " | ".join(cells) + " |")
    print(f"\nload average (1 min) at each run's start, in order: {', '.join(loads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
