"""bench/quality.py's own logic: failure lines from kfp.local logs, ratios and targets, and the
frame-to-Arrow conversion its BigQuery load uses (no emulator, no scikit-learn needed)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import quality
from quality_data import arrow_table

# The shape of a failed kfp.local run's log: the task's traceback (ANSI colours included), then
# kfp's own RuntimeError; the line to keep is conveyor's error with the problems it lists.
LOG = ("""\x1b[36m23:15:50.1 - INFO - Executing task 'validate'\x1b[0m
    Traceback (most recent call last):
      File "/x/validate.py", line 9, in run
        raise ValidationFailed(msg)
    conveyor.validate.validate.ValidationFailed: validation failed (2 problem(s)); report at /r:
      [train vs eval] skew of 'Prolíne': jensen_shannon 0.29 > 0.2
      [train vs eval] skew of 'hue': jensen_shannon 0.21 > 0.2

Traceback (most recent call last):
  File "bench/quality.py", line 70, in one_run
RuntimeError: Pipeline \x1b[95m'conveyor-training'\x1b[0m finished with status """
       """\x1b[91mFAILURE\x1b[0m.
""")


def test_first_error_line_prefers_conveyors_error_and_keeps_its_listed_problems():
    line = quality.first_error_line(LOG)
    assert line.startswith("conveyor.validate.validate.ValidationFailed: validation failed")
    assert "skew of 'Prolíne'" in line and "skew of 'hue'" in line
    assert "RuntimeError" not in line and "\x1b" not in line


def test_first_error_line_without_a_conveyor_error():
    log = "noise\nValueError: bad thing\nRuntimeError: Pipeline failed\n"
    assert quality.first_error_line(log) == "ValueError: bad thing"
    assert quality.first_error_line("") == "no output"
    assert quality.first_error_line("killed\n\n") == "killed"


def _record(task, conveyor, linear, hgb, chosen=None):
    metric = quality.METRIC[task]
    return {"task": task, "conveyor": {"task": chosen or task, "metrics": {metric: conveyor}},
            "sklearn": {"linear": {metric: linear}, "hgb": {metric: hgb}}}


def test_compare_regression_lower_rmse_is_better():
    r = _record("regression", 10.0, 12.0, 9.6)
    quality.compare(r)
    assert r["ratio_linear"] == pytest.approx(10 / 12, abs=1e-4) and r["beats_linear"]
    assert r["gap_hgb"] == pytest.approx(10 / 9.6 - 1, abs=1e-4)
    assert r["within_hgb_target"]  # 4.2 % worse, tolerance 5 %
    r = _record("regression", 10.0, 9.0, 9.0)
    quality.compare(r)
    assert not r["beats_linear"] and not r["within_hgb_target"]  # 11 % worse


def test_compare_classification_higher_is_better():
    r = _record("binary", 0.80, 0.81, 0.83)
    quality.compare(r)
    assert not r["beats_linear"]
    assert r["gap_hgb"] == pytest.approx(1 - 0.80 / 0.83, abs=1e-4)
    assert not r["within_hgb_target"]  # 3.6 % short, tolerance 2 %
    r = _record("multiclass", 0.95, 0.93, 0.96)
    quality.compare(r)
    assert r["beats_linear"] and r["within_hgb_target"]


def test_compare_prefers_the_exact_rescored_value_to_evaluation_json():
    r = _record("binary", 0.80, 0.81, 0.83)
    r["conveyor"]["eval"] = {"auc": 0.82, "accuracy": 0.7}  # evaluate's AUC is binned
    quality.compare(r)
    assert r["beats_linear"] and r["ratio_linear"] == pytest.approx(0.82 / 0.81, abs=1e-4)


def test_compare_refuses_a_task_conveyor_did_not_choose():
    r = _record("multiclass", 0.5, 0.9, 0.9, chosen="regression")
    quality.compare(r)
    assert "ratio_linear" not in r and "beats_linear" not in r


def test_compare_flags_a_perfect_training_fit_with_eval_below_linear():
    r = _record("multiclass", 0.90, 0.93, 0.96)
    r["conveyor"]["train"] = {"accuracy": 1.0}
    quality.compare(r)
    assert r["memorized"]
    r = _record("multiclass", 0.95, 0.93, 0.96)  # perfect on train, but better than linear
    r["conveyor"]["train"] = {"accuracy": 1.0}
    quality.compare(r)
    assert not r["memorized"]
    r = _record("regression", 12.0, 10.0, 9.0)
    r["conveyor"]["train"] = {"rmse": 0.01, "r2": 0.99999}
    quality.compare(r)
    assert r["memorized"]


def _paired(verdict, diff=0.01, low=-0.01, high=0.03):
    return {"linear": {"diff": diff, "low": low, "high": high, "verdict": verdict}}


def test_table_and_verdict_with_a_failed_set():
    ok = {"set": "a", "trait": "rare class", "rows": 10, **_record("binary", 0.9, 0.85, 0.91)}
    ok["conveyor"].update(status="ok", pipeline_s=12.5, blessed=True, pushed=True,
                          train={"auc": 0.95, "accuracy": 0.9})
    ok["paired"] = _paired("better", 0.05, 0.01, 0.09)
    quality.compare(ok)
    failed = {"set": "b", "rows": 20, "task": "regression",
              "conveyor": {"status": "failed", "error": "conveyor.errors.QueryError: boom"}}
    text = quality.table([ok, failed])
    assert ("| a | rare class | 10 | binary | auc | 0.9000 | 0.8500 | 0.9100 | +0.0500 [+0.0100, "
            "+0.0900] | better | +1.1 % | 0.9500 (acc 0.900) | 12.5 | yes | yes |") in text
    assert "- b: FAILED: `conveyor.errors.QueryError: boom`" in text
    summary = quality.verdict([ok, failed])
    assert "failed on 1 (b)" in summary
    assert "[FAIL] not significantly worse than the best linear model" in summary
    assert "better on 1, tie on 0, worse on 0; not judged: b" in summary
    assert "[n/a] the noise set is not pushed: no noise set in this run" in summary


def _judged(name, verdict, gap, pushed=True, memorized=False, metric="auc"):
    return {"set": name, "task": "binary", "metric": metric, "gap_hgb": gap,
            "verdict_linear": verdict, "not_worse_than_linear": verdict != "worse",
            "memorized": memorized, "conveyor": {"status": "ok", "pushed": pushed}}


def test_verdict_checks_each_criterion_of_the_issue():
    records = [_judged("a", "better", 0.01), _judged("b", "tie", 0.03),
               _judged("c", "tie", 0.0), _judged("noise", "tie", 0.5, pushed=False)]
    summary = quality.verdict(records, {"noise"})
    assert summary.count("[PASS]") == 4 and "[FAIL]" not in summary
    assert "0.50 in units of the tolerance" in summary  # median of 0.5, 1.5, 0 (noise left out)
    records = [_judged("a", "worse", 0.05), _judged("b", "tie", 0.05, memorized=True),
               _judged("noise", "tie", 0.0, pushed=True)]
    summary = quality.verdict(records, {"noise"})
    assert "[FAIL] not significantly worse" in summary and "worse on 1 (a)" in summary
    assert "[FAIL] median gap to HGB" in summary  # 2.5 tolerances
    assert "[FAIL] the noise set is not pushed: pushed or not run: noise" in summary
    assert "and eval below the linear model's: b" in summary


def test_arrow_table_keeps_names_and_types_nulls_included():
    frame = pd.DataFrame({
        "Miles_per_Gallon": [18.0, None, 21.5],
        "Cylinders": [8, 4, 6],
        "Year": [dt.date(1970, 1, 1), None, dt.date(1982, 1, 1)],
        "smsa": pd.array([True, None, False], dtype="boolean"),
        "Name": ["chevrolet", None, "Škoda"],
        "table": [1.5, 2.5, 3.5],
    })
    table = arrow_table(frame)
    assert table.schema.names == list(frame.columns)
    assert [f.type for f in table.schema] == [pa.float64(), pa.int64(), pa.date32(), pa.bool_(),
                                              pa.string(), pa.float64()]
    assert table.column("Year").to_pylist() == [dt.date(1970, 1, 1), None, dt.date(1982, 1, 1)]
    assert table.column("smsa").to_pylist() == [True, None, False]
    assert table.column("Name").to_pylist() == ["chevrolet", None, "Škoda"]
    assert table.column("Miles_per_Gallon").null_count == 1
