"""The README's demo, as a user runs it (`conveyor demo`, which `make demo` calls)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.local, pytest.mark.slow]


def test_demo_ingests_the_penguins_end_to_end(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--root", str(tmp_path / "stack"),
         "--pipeline-root", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "seeded 344 penguins" in run.stdout
    assert "344 rows in 2 splits, 8 columns" in run.stdout
    assert "stack stopped" in run.stdout
    report = run.stdout.split("validation report (HTML): ")[1].split()[0]
    assert report.endswith("/validate/report.html")  # opens as a page, not as source
    assert "PASSED" in open(report).read()
    evaluated = run.stdout.split("evaluation report (HTML): ")[1].splitlines()[0]
    page, markdown = evaluated.split("; Markdown: ")
    assert page.endswith("/evaluate/html_report.html") and markdown.endswith("/evaluate/report.md")
    assert open(page).read().lstrip().lower().startswith("<!doctype html")
    assert Path(markdown).is_file()
    assert "skip" not in run.stdout  # a CPU run says nothing of the GPU branch
    model = run.stdout.split("model (SavedModel): ")[1].split()[0]
    assert (Path(model) / "saved_model.pb").exists()
    assert "blessed: True (baseline: none); pushed" in run.stdout
    answer = json.loads(run.stdout.split("[demo] answer: ")[1].splitlines()[0])
    assert answer["predictions"][0]["class_label"] in ("Adelie", "Chinstrap", "Gentoo")
    assert list((tmp_path / "runs").rglob("dataset.json"))
    assert not (tmp_path / "stack" / "stack.json").exists()
