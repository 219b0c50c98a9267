"""`conveyor runs` (issue 28): every local run leaves run.json in its folder; the command lists
the runs under a root, newest first, with their key figures, and compares two (the arguments
that differ, each task's figures side by side). Run for real through `conveyor run --local`
with a small pipeline of the user's own; a record that is not one is named and skipped."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conveyor.errors import InputError
from conveyor.local import runs

TINY = '''
from kfp import dsl
from kfp.dsl import Metrics, Output

@dsl.component(base_image="python:3.11")
def score(factor: float, metrics: Output[Metrics]):
    metrics.log_metric("accuracy", round(0.5 * factor, 3))

@dsl.pipeline(name="tiny-scores")
def tiny(factor: float = 1.0):
    score(factor=factor)
'''


def conveyor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conveyor", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.local
def test_runs_are_listed_newest_first_and_two_compare(stack, tmp_path):
    (tmp_path / "tiny.py").write_text(TINY)
    root = tmp_path / "outs"
    for factor in ("1.0", "1.5"):
        done = conveyor("run", str(tmp_path / "tiny.py:tiny"), "--local", "--param",
                        f"factor={factor}", "--pipeline-root", str(root))
        assert done.returncode == 0, done.stdout + done.stderr
    folders = sorted(p.parent for p in root.glob("*/run.json"))
    assert len(folders) == 2
    record = json.loads((folders[0] / "run.json").read_text())
    assert record["status"] == "SUCCESS" and record["name"] == "tiny-scores"
    assert {record["arguments"]["factor"]} <= {1.0, 1.5}

    listed = conveyor("runs", "--pipeline-root", str(root))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3 and "accuracy" in lines[1] and "accuracy" in lines[2]
    newest, older = (lines[1].split()[3], lines[2].split()[3])
    assert {newest, older} == {f.name for f in folders}

    compared = conveyor("runs", newest, older, "--pipeline-root", str(root))
    assert compared.returncode == 0, compared.stderr
    text = compared.stdout
    assert "factor: A 1.5  B 1.0" in text, text
    assert "accuracy 0.75" in text and "accuracy 0.5" in text, text


def test_a_folder_that_is_not_a_run_is_named_and_skipped(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "run.json").write_text("{not json")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text('{"format": "something-else"}')
    text = runs.listing(tmp_path)
    assert "skipped: runs:" in text and "junk" in text and "not a conveyor run record" in text
    with pytest.raises(InputError, match="no run 'nope'"):
        runs.compare(tmp_path, "nope", "junk")
    assert "no runs under" in runs.listing(tmp_path / "empty")
