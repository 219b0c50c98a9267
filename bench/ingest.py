#!/usr/bin/env python
"""Ingest throughput and peak memory: BigQuery Storage Read API versus the REST path.

Runs `conveyor.ingest.bigquery.ingest_bigquery` on the reference workload of the TFX baseline
(../shared/bench/tfx-baseline/README.md; 11 columns, row-content split 2:1 train/eval) seeded
into the local BigQuery emulator, each measurement in a fresh process so that its peak RSS and CPU
time are its own. The emulator's own time (materializing the split) is inside the wall time;
its memory is not in the peak RSS (it is another process).

    python bench/ingest.py                       # 200k and 1M rows, storage and rest, 3 repeats
    python bench/ingest.py --rows 200000 --repeat 1 --methods storage

Prints one line per run and a median table (markdown) for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(rows: int, method: str, out: str) -> None:
    """Child process: ingest once and print a JSON line of figures."""
    from conveyor.ingest.bigquery import ingest_bigquery
    from conveyor.local.seed import reference_table

    start = time.monotonic()
    result = ingest_bigquery(out, table=reference_table(rows), read_method=method,
                             split_ratios={"train": 2 / 3, "eval": 1 / 3})
    wall = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "rows": rows, "method": method, "wall_s": round(wall, 2),
        "rows_per_s": round(rows / wall), "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "phases": {k: round(v, 2) for k, v in result.phases.items()},
        "bytes_read": result.bytes_read, "splits": {n: s.rows for n, s in result.info.splits.items()},
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="default: 200000 and 1000000")
    parser.add_argument("--methods", nargs="+", default=["storage", "rest"])
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
        for rep in range(args.repeat):
            for rows in row_counts:
                for method in args.methods:
                    out = tempfile.mkdtemp(prefix="conveyor-bench-")
                    try:
                        run = subprocess.run(
                            [sys.executable, __file__, "--one", str(rows), method, out + "/ds"],
                            capture_output=True, text=True, check=True)
                    finally:
                        shutil.rmtree(out, ignore_errors=True)
                    figures = json.loads(run.stdout.strip().splitlines()[-1])
                    results.append(figures)
                    print(json.dumps(figures), flush=True)
    finally:
        stack.down()

    print(f"\nmachine: {os.cpu_count()} cores, {platform.platform()}, Python "
          f"{platform.python_version()}; medians of {args.repeat} run(s)\n")
    print("| rows | read path | wall s | rows/s | peak RSS MB | CPU s | materialize s | read+write s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for rows in row_counts:
        for method in args.methods:
            runs = [r for r in results if r["rows"] == rows and r["method"] == method]
            med = lambda key, sub=None: statistics.median(
                r["phases"][sub] if sub else r[key] for r in runs)
            print(f"| {rows:,} | {method} | {med('wall_s'):.1f} | {med('rows_per_s'):,.0f} | "
                  f"{med('peak_rss_mb'):.0f} | {med('cpu_s'):.1f} | "
                  f"{med(None, 'materialize'):.1f} | {med(None, 'read'):.1f} |")


if __name__ == "__main__":
    main()
