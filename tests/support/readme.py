"""The README as its tests read it, and a folder that stands for a user's fresh clone.

- `blocks()`: every fenced block of README.md with its line number, fence language and marker:
  the HTML comment `<!-- readme-test: WORD (why) -->` on the line just before the fence
  (`skip`: not a command; `needs-gcp`, `needs-docker`: checked offline, never run here).
- `commands(block)`: a shell block's commands, continuation lines joined, each with its line.
- `clone(folder)`: what a clone's folder holds for the README's commands: `.venv/bin/conveyor`
  and `.venv/bin/python` (this interpreter, so the package under test), the Makefile with its
  prerequisites and a fresh `.venv/.installed` (so `make demo` runs the demo and never
  installs), `pipelines/` (the compiled specs a command may name) and the user's `shops.csv`.
- `clean_env()`: this process's environment without any local stack in it.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
import re
import shlex
import shutil
import stat
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
STACK_VARIABLES = ("CONVEYOR_BIGQUERY_ENDPOINT", "CONVEYOR_BIGQUERY_STORAGE_ENDPOINT",
                   "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "CONVEYOR_STACK_DIR")
#: The markers a block may carry, and what each means to the tests.
MARKERS = {"skip": "not a command (an output sample, a listing)",
           "needs-gcp": "sends to Google Cloud or Kubeflow: checked offline (--dry-run, --help)",
           "needs-docker": "needs a Docker engine or a registry: checked offline (make -n, --help)"}
_MARKER = re.compile(r"<!--\s*readme-test:\s*([\w-]+)(.*?)-->")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: `line` is the README line of its first line of text (1-based)."""

    line: int
    lang: str
    text: str
    marker: str = ""

    def where(self) -> str:
        return f"README.md line {self.line} ({self.lang or 'no language'} block)"


def blocks(path: Path = README) -> list[Block]:
    """Every fenced block of the README, in order."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        lang = lines[i][3:].strip()
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marked = _MARKER.search(before)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        found.append(Block(i + 2, lang, "\n".join(lines[i + 1:end]) + "\n",
                           marked.group(1) if marked else ""))
        i = end + 1
    return found


def commands(block: Block) -> list[tuple[int, str]]:
    """(README line, command) for each command of a shell block: continuation lines and
    quotes over several lines joined (as bash reads them), comments kept."""
    out: list[tuple[int, str]] = []
    pending, first = "", 0
    for n, line in enumerate(block.text.splitlines()):
        if not pending:
            first = block.line + n
        pending += line + "\n"
        if not line.rstrip().endswith("\\") and _complete(pending):
            if pending.strip():
                out.append((first, pending))
            pending = ""
    return out


def _complete(command: str) -> bool:
    """No quote left open."""
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any stack in it (the session's stack fixture may
    have set one), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in STACK_VARIABLES}
    env.update(extra)
    return env


def write_shops(path: Path, rows: int = 240) -> Path:
    """The README's shops.csv: a shop id, a region, visits a day and whether it churned
    (mostly: few visits)."""
    rnd = random.Random(27)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["Shop ID", "Region", "visits/day", "Churned"])
        for i in range(rows):
            visits = rnd.randint(1, 100)
            churned = (visits < 40) != (rnd.random() < 0.1)
            out.writerow([i, rnd.choice("NSEW"), visits, int(churned)])
    return path


def _shim(path: Path, command: str) -> None:
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" {command}"$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def clone(home: Path) -> Path:
    """`home` made to stand for a fresh clone of the repository (see the module); returns it.
    Nothing in it points back into the repository's own `.venv`, so no command run there
    can install into or remove it."""
    venv_bin = home / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    _shim(venv_bin / "conveyor", "-m conveyor ")
    _shim(venv_bin / "python", "")
    for name in ("Makefile", "setup.py", "constraints.txt"):
        shutil.copy(REPO / name, home / name)
    (home / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "run", home / ".ci" / "run")
    for name in ("setup.py", "constraints.txt"):  # older than the install: make installs nothing
        os.utime(home / name, (0, 0))
    (home / ".venv" / ".installed").touch()
    (home / "pipelines").symlink_to(REPO / "pipelines")
    write_shops(home / "shops.csv")
    return home
