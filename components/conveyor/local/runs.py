"""Local runs' history: `run.json` in every run folder, `conveyor runs` to list and compare.

A finished local run (`conveyor.local.run`) writes `<run folder>/run.json`: the pipeline, its
arguments, status, time, seconds, and each task's status, seconds and figures (the metrics its
summary line shows). `conveyor runs` lists the runs under a pipeline root, newest first, with
their key figures; `conveyor runs A B` compares two (run folders, or their names under the root):
the arguments that differ and each task's figures side by side. Nothing else is read from a run
folder, and a `run.json` that is not a conveyor run record is named and skipped, never trusted.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.errors import InputError

RECORD = "run.json"
FORMAT = "conveyor-run/1"


def write_record(result, arguments: Mapping[str, Any]) -> Path | None:
    """Write `result`'s run.json into its run folder (written whole: a dot-file renamed)."""
    if result.run_dir is None:
        return None
    record = {
        "format": FORMAT, "pipeline": result.pipeline, "name": result.name,
        "status": result.status, "seconds": result.seconds,
        "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "arguments": {k: v for k, v in arguments.items() if _jsonable(v)},
        "tasks": [{"name": t.name, "status": t.status, "seconds": t.seconds,
                   "figures": t.figures} for t in result.tasks],
        "error": result.error_line() if not result.ok else "",
    }
    path = Path(result.run_dir) / RECORD
    temporary = path.with_name(f".{RECORD}.{os.getpid()}")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(temporary, path)
    return path


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def read_record(folder: Path) -> dict[str, Any]:
    """A run folder's record; an InputError naming the file when it is missing or not one."""
    path = folder / RECORD
    try:
        record = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"runs: {folder} has no readable {RECORD} ({exc.strerror or exc}); "
                         "it is not a finished conveyor run folder") from None
    except ValueError:
        raise InputError(f"runs: {path} is not JSON; skip it or remove it") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT \
            or not isinstance(record.get("tasks"), list):
        raise InputError(f"runs: {path} is not a conveyor run record ({FORMAT})")
    return record


def records(root: Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """(folder, record) of every run under `root`, newest first, and a line per skipped one."""
    found, skipped = [], []
    for path in sorted(root.glob(f"*/{RECORD}")):
        try:
            found.append((path.parent, read_record(path.parent)))
        except InputError as exc:
            skipped.append(str(exc))
    found.sort(key=lambda item: str(item[1].get("finished", "")), reverse=True)
    return found, skipped


def _key_figures(record: Mapping[str, Any]) -> str:
    """The evaluate task's figures (else the last task's that has some)."""
    tasks = [t for t in record["tasks"] if isinstance(t, dict) and t.get("figures")]
    evaluate = [t for t in tasks if "evaluate" in str(t.get("name"))]
    chosen = (evaluate or tasks[-1:] or [{}])[-1]
    return str(chosen.get("figures", ""))


def listing(root: Path) -> str:
    """`conveyor runs`: one line per run under `root`, newest first."""
    found, skipped = records(root)
    if not found and not skipped:
        return f"no runs under {root} (a run folder holds {RECORD}; `conveyor run` writes it)"
    lines = [f"{'finished (UTC)':<21} {'status':<8} {'seconds':>8}  {'run folder':<44} figures"]
    for folder, r in found:
        lines.append(f"{str(r.get('finished', '?')):<21} {str(r.get('status', '?')):<8} "
                     f"{float(r.get('seconds') or 0):>8.1f}  {folder.name:<44} {_key_figures(r)}")
    lines += [f"skipped: {line}" for line in skipped]
    return "\n".join(lines)


def locate(root: Path, name: str) -> Path:
    """A run folder named by path or by its name under `root`."""
    given = Path(name)
    for folder in (given, root / name):
        if (folder / RECORD).is_file():
            return folder
    raise InputError(f"runs: no run {name!r} (neither a folder holding {RECORD} nor a run under "
                     f"{root}); `conveyor runs --root {root}` lists them")


def compare(root: Path, first: str, second: str) -> str:
    """`conveyor runs A B`: the arguments that differ and every task's figures, side by side."""
    a_dir, b_dir = locate(root, first), locate(root, second)
    a, b = read_record(a_dir), read_record(b_dir)
    lines = [f"A: {a_dir}  ({a.get('name')}, {a.get('status')}, {a.get('finished')})",
             f"B: {b_dir}  ({b.get('name')}, {b.get('status')}, {b.get('finished')})", "",
             "arguments that differ:"]
    a_args, b_args = dict(a.get("arguments") or {}), dict(b.get("arguments") or {})
    differ = [k for k in sorted({*a_args, *b_args}) if a_args.get(k) != b_args.get(k)]
    lines += [f"  {k}: A {json.dumps(a_args.get(k))}  B {json.dumps(b_args.get(k))}"
              for k in differ] or ["  none"]
    lines += ["", "tasks (seconds, figures):"]
    a_tasks = {str(t.get("name")): t for t in a["tasks"] if isinstance(t, dict)}
    b_tasks = {str(t.get("name")): t for t in b["tasks"] if isinstance(t, dict)}
    for name in [*a_tasks, *[n for n in b_tasks if n not in a_tasks]]:
        lines.append(f"  {name}")
        for tag, tasks in (("A", a_tasks), ("B", b_tasks)):
            t = tasks.get(name)
            lines.append(f"    {tag}: " + ("did not run" if t is None else
                                          f"{t.get('status')} {float(t.get('seconds') or 0):.1f} s"
                                          f"  {t.get('figures') or ''}".rstrip()))
    return "\n".join(lines)
