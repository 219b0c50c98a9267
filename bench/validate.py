#!/usr/bin/env python
"""Validate throughput and peak memory: statistics + expectations + drift on the reference workload.

Writes the reference workload (../shared/bench/tfx-baseline/README.md; seed 0, split 2:1 by row
hash as ingest splits it) as a conveyor Dataset at each row count, infers a suite and statistics
from it once (the baseline), then measures, each in a fresh process, `validate_dataset` of that
dataset with the baseline's suite (22 expectations) and statistics (drift on 11 columns, skew
train vs eval). `work_s` is the component's work after imports; `import_s` is importing
conveyor.validate with Great Expectations.

    python bench/validate.py                        # 200k and 1M rows, 3 repeats
    python bench/validate.py --rows 1000000 --repeat 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import child_figures, machine, median_table, reference_dataset, run_child

HERE = Path(__file__).resolve().parent


def one(rows: int, folder: str) -> None:
    start = time.monotonic()
    import great_expectations  # noqa: F401  (its import is most of the fixed cost)

    from conveyor.validate.validate import validate_dataset

    imported = time.monotonic()
    base = Path(folder)
    result = validate_dataset(base / "ds", report_path=base / "run" / "report.html",
                              statistics_path=base / "run" / "stats",
                              suite_path=base / "run" / "suite", suite=base / "baseline" / "suite",
                              baseline_statistics=base / "baseline" / "stats", policy="warn")
    work = time.monotonic() - imported
    child_figures(rows=rows, passed=result.passed, checks=len(result.checks),
                  import_s=round(imported - start, 2), work_s=round(work, 2),
                  rows_per_s=round(rows / work))


def prepare(rows: int, folder: Path) -> None:
    """The dataset and its baseline suite and statistics (not measured)."""
    from conveyor.validate.validate import validate_dataset

    if (folder / "baseline" / "stats").exists():
        return
    reference_dataset(rows, folder / "ds")
    validate_dataset(folder / "ds", report_path=folder / "baseline" / "report.html",
                     statistics_path=folder / "baseline" / "stats",
                     suite_path=folder / "baseline" / "suite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="default: 200000 and 1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "out" / "validate"))
    parser.add_argument("--one", nargs=2, metavar=("ROWS", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(int(args.one[0]), args.one[1])
    row_counts = args.rows or [200_000, 1_000_000]
    for rows in row_counts:
        prepare(rows, Path(args.out) / str(rows))
    results = [run_child(__file__, str(rows), str(Path(args.out) / str(rows)))
               for _ in range(args.repeat) for rows in row_counts]
    print("\n" + machine(args.repeat) + "\n")
    print(median_table(results, ["rows"], [
        ("work s", "work_s"), ("rows/s", "rows_per_s"), ("import s", "import_s"),
        ("peak RSS MB", "peak_rss_mb"), ("CPU s", "cpu_s"), ("checks", "checks")]))


if __name__ == "__main__":
    main()
