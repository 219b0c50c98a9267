"""Fresh cases for issue 25's classes 6 (late checks) and 11 (a parameter given twice), written
after the fixes and run once against them, through `conveyor run --local` as a user types it:
each is refused before any task starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.local


def run(*params: str, pipeline: str = "training") -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "conveyor", "run", "--local", pipeline]
    for p in params:
        args += ["--param", p]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


BASE = ["table=demo.penguins", "label=species", "model_base_path=/tmp/fresh-params-models"]


@pytest.mark.parametrize("params, words", [
    # the same value twice is still two answers to one question
    (["label=species", "table=demo.penguins", "label=species",
      "model_base_path=/tmp/fresh-params-models"], "label"),
    # a misspelt metric inside a compiled spec's thresholds, a hyper-parameter of the wrong type
    ([*BASE, 'thresholds={"acuracy": 0.9}'], "acuracy"),
    ([*BASE, 'hyperparameters={"learning_rate": "fast"}'], "learning_rate"),
    ([*BASE, 'hyperparameters={"epoch": 3}'], "epoch"),
])
def test_refused_before_any_task(penguins, params, words):
    done = run(*params)
    assert done.returncode == 2, (done.stdout[-1500:], done.stderr[-1500:])
    assert words in done.stderr, done.stderr[-1500:]
    assert "Traceback" not in done.stderr
    assert "ingest" not in done.stdout.lower(), done.stdout  # no task line: nothing ran
