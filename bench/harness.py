"""What the benchmarks share: measuring a step in a fresh process, and printing medians."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from collections.abc import Sequence


def peak_rss_mb() -> int:
    """This process's own peak RSS: VmHWM, the high-water mark of its address space.

    Not `ru_maxrss`: Linux carries that across exec from the parent (a child started by
    `subprocess` reports at least its parent's peak: a parent that had seeded 3 M rows made an
    ingest child "peak" at 1,077 MB when its own peak was 338 MB)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def child_figures(**figures) -> None:
    """In the measured process: print its figures, with its own peak RSS and CPU time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures.update(peak_rss_mb=peak_rss_mb(), cpu_s=round(usage.ru_utime + usage.ru_stime, 2))
    print(json.dumps(figures), flush=True)


def run_child(script: str, *args: str) -> dict:
    """Run `script --one ARGS` in a fresh interpreter; its last line of output is its figures."""
    run = subprocess.run([sys.executable, script, "--one", *args], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"{script} --one {' '.join(args)} failed:\n{run.stderr[-4000:]}")
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(figures), flush=True)
    return figures


def reference_dataset(rows: int, path) -> None:
    """The reference workload (seed 0) as a conveyor Dataset split 2:1 by row hash, as ingest
    splits it; written once (reused if present)."""
    from pathlib import Path

    import pyarrow as pa

    from conveyor.io import DatasetWriter
    from conveyor.io.split import SplitSpec
    from conveyor.local.seed import reference_rows

    if (Path(path) / "dataset.json").exists():
        return
    table = reference_rows(rows)
    spec = SplitSpec.parse({"train": 2 / 3, "eval": 1 / 3})
    with DatasetWriter(path, table.schema, spec.names, {"type": "bench"}) as writer:
        for batch in table.to_batches(max_chunksize=128 * 1024):
            index = spec.assign(batch)
            for i, name in enumerate(spec.names):
                writer.write(name, batch.filter(pa.array(index == i)))


def machine(repeats: int) -> str:
    return (f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
            f"{platform.python_version()}; medians of {repeats} run(s)")


def median_table(results: Sequence[dict], group: Sequence[str],
                 columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table: one row per distinct `group` values, the median of each column key."""
    keys = []
    for r in results:
        k = tuple(r[g] for g in group)
        if k not in keys:
            keys.append(k)
    lines = ["| " + " | ".join([*group, *(title for title, _ in columns)]) + " |",
             "|" + "---|" * (len(group) + len(columns))]
    for k in keys:
        runs = [r for r in results if tuple(r[g] for g in group) == k]
        cells = [f"{v:,}" if isinstance(v, int) else str(v) for v in k]
        for _, key in columns:
            value = statistics.median(_get(r, key) for r in runs)
            whole = float(value).is_integer() or value >= 1000
            cells.append(f"{value:,.0f}" if whole else f"{value:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _get(record: dict, key: str):
    for part in key.split("."):
        record = record[part]
    return record
