#!/usr/bin/env python
"""Ingest throughput and peak memory: BigQuery Storage Read API versus the REST path.

Runs `conveyor.ingest.bigquery.ingest_bigquery` on the reference workload of the TFX baseline
(../shared/bench/tfx-baseline/README.md; 11 columns, row-content split 2:1 train/eval) seeded
into the local BigQuery emulator, each measurement in a fresh process so that its peak RSS and CPU
time are its own. The emulator's own time (materializing the split) is inside the wall time;
its memory is not in the peak RSS (it is another process).

    python bench/ingest.py                       # 200k and 1M rows, storage and rest, 3 repeats
    python bench/ingest.py --rows 200000 --repeat 1 --methods storage
    python bench/ingest.py --rows 1000000 --methods storage:1 storage:4   # Storage Read streams

Prints one line per run and a median table (markdown) for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from harness import child_figures, machine, median_table, run_child

HERE = Path(__file__).resolve().parent


def one(rows: int, method: str, out: str) -> None:
    """Child process: ingest once and print a JSON line of figures."""
    from conveyor.ingest.bigquery import READ_STREAMS, ingest_bigquery
    from conveyor.local.seed import reference_table

    read_method, _, streams = method.partition(":")  # storage:N reads N streams at once
    start = time.monotonic()
    result = ingest_bigquery(out, table=reference_table(rows), read_method=read_method,
                             read_streams=int(streams or READ_STREAMS),
                             split_ratios={"train": 2 / 3, "eval": 1 / 3})
    wall = time.monotonic() - start
    child_figures(rows=rows, method=method, wall_s=round(wall, 2), rows_per_s=round(rows / wall),
                  phases={k: round(v, 2) for k, v in result.phases.items()},
                  bytes_read=result.bytes_read,
                  splits={n: s.rows for n, s in result.info.splits.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="default: 200000 and 1000000")
    parser.add_argument("--methods", nargs="+", default=["storage", "rest"],
                        help="storage, storage:N (N streams at once; default 1) or rest")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stack-dir", default=str(HERE / "out" / "stack"))
    parser.add_argument("--one", nargs=3, metavar=("ROWS", "METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(int(args.one[0]), args.one[1], args.one[2])

    from conveyor.local import LocalStack, seed

    row_counts = args.rows or [200_000, 1_000_000]
    stack = LocalStack(args.stack_dir)
    info = stack.up()
    info.activate()
    try:
        for rows in row_counts:
            if not seed.table_exists(seed.reference_table(rows)):
                t = time.monotonic()
                seed.seed_reference(rows)
                print(f"seeded {rows} rows in {time.monotonic() - t:.1f} s", flush=True)
        results = []
        for _ in range(args.repeat):
            for rows in row_counts:
                for method in args.methods:
                    out = tempfile.mkdtemp(prefix="conveyor-bench-")
                    try:
                        results.append(run_child(__file__, str(rows), method, out + "/ds"))
                    finally:
                        shutil.rmtree(out, ignore_errors=True)
    finally:
        stack.down()

    print("\n" + machine(args.repeat) + "\n")
    print(median_table(results, ["rows", "method"], [
        ("wall s", "wall_s"), ("rows/s", "rows_per_s"), ("peak RSS MB", "peak_rss_mb"),
        ("CPU s", "cpu_s"), ("materialize s", "phases.materialize"),
        ("read+write s", "phases.read")]))


if __name__ == "__main__":
    main()
