"""Tasks in containers vs subprocesses: `conveyor run training --local` and the same with
`--docker`, alternated in pairs, per task (conveyor's own task lines) and whole-run wall time.

    python bench/container.py --table pen.penguins --label species --pairs 3

Needs a running stack (`eval "$(conveyor local env)"`, with the table loaded) and the image
(`make image`). Each run pushes into a fresh local model base path, so every run does the same
work (version 1, no baseline). Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINE = re.compile(r"^  done +(?P<task>\S+) +(?P<seconds>[0-9.]+) s", re.MULTILINE)


def one_run(docker: bool, table: str, label: str, work: Path, index: int) -> dict[str, float]:
    """Seconds per task of one run, plus 'whole run (wall)'."""
    mode = "docker" if docker else "subprocess"
    command = [sys.executable, "-m", "conveyor", "run", "training", "--local",
               *(["--docker"] if docker else []),
               "--param", f"table={table}", "--param", f"label={label}",
               "--param", f"model_base_path={work / f'models-{mode}-{index}'}",
               "--param", 'hyperparameters={"epochs": 2}', "--pipeline-root", str(work / mode)]
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
    parser.add_argument("--table", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"subprocess": [], "docker": []}
    loads: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-container-") as folder:
        for index in range(args.pairs):
            for mode in runs:
                loads.append(f"{os.getloadavg()[0]:.1f}")
                runs[mode].append(one_run(mode == "docker", args.table, args.label,
                                          Path(folder), index))
                print(f"pair {index + 1} {mode}: {runs[mode][-1]}", file=sys.stderr)
    tasks = list(runs["subprocess"][0])
    print("| task | subprocess | median | `--docker` | median |")
    print("|---|---|---:|---|---:|")
    for task in tasks:
        cells = []
        for mode in runs:
            values = [r.get(task, float("nan")) for r in runs[mode]]
            cells += [", ".join(f"{v:.1f}" for v in values), f"{statistics.median(values):.1f}"]
        print(f"| {task} | " + " | ".join(cells) + " |")
    print(f"\nload average (1 min) at each run's start, in order: {', '.join(loads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
