"""validate through kfp.local on data ingested from the BigQuery emulator."""

import json
from pathlib import Path

import pytest
from kfp import dsl
from support import PENGUINS_SUITE

from conveyor.components import bigquery_ingest, validate

pytestmark = pytest.mark.local

# Penguins with faults injected in SQL: NULL bills, an impossible body mass, a new island.
FAULTY = """
SELECT species,
       IF(MOD(CAST(body_mass_g AS INT64), 7) = 0, 'Atlantis', island) AS island,
       IF(MOD(CAST(body_mass_g AS INT64), 5) = 0, NULL, bill_length_mm) AS bill_length_mm,
       bill_depth_mm, flipper_length_mm,
       IF(MOD(CAST(body_mass_g AS INT64), 11) = 0, 99999.0, body_mass_g) AS body_mass_g,
       sex, year
FROM conveyor_demo.penguins WHERE body_mass_g IS NOT NULL
"""


@dsl.component(base_image="python:3.11")
def branch_marker(label: str) -> str:
    return label


@dsl.pipeline(name="validate-round-trip")
def round_trip(table: str, faulty_query: str):
    first = bigquery_ingest(table=table)
    baseline = validate(dataset=first.outputs["dataset"], label_column="species")
    again = bigquery_ingest(table=table)
    clean = validate(dataset=again.outputs["dataset"], input_suite=baseline.outputs["suite"],
                     baseline_statistics=baseline.outputs["statistics"])
    bad = bigquery_ingest(query=faulty_query)
    checked = validate(dataset=bad.outputs["dataset"], input_suite=clean.outputs["suite"],
                       baseline_statistics=baseline.outputs["statistics"], policy="warn")
    with dsl.If(checked.outputs["Output"] == False):  # noqa: E712  (a KFP condition)
        branch_marker(label="blocked")
    with dsl.If(clean.outputs["Output"] == True):  # noqa: E712
        branch_marker(label="trained")


def task_dirs(root: Path, task: str) -> Path:
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run / task


def test_suite_round_trips_faults_are_named_and_warn_branches(penguins, kfp_local):
    round_trip(table=penguins, faulty_query=FAULTY)
    checked = task_dirs(kfp_local, "validate-3")
    out = json.loads((checked / "executor_output.json").read_text())
    assert out["parameterValues"]["Output"] is False
    report = (checked / "report" ).read_text()
    for fault in ("bill_length_mm", "expect_column_values_to_not_be_null", "Atlantis",
                  "expect_column_values_to_be_in_set", "99999", "body_mass_g"):
        assert fault in report, fault
    assert "FAILED" in report and "<script" not in report and "http" not in report
    clean = json.loads((task_dirs(kfp_local, "validate-2") / "executor_output.json").read_text())
    assert clean["parameterValues"]["Output"] is True
    # The inferred suite of the first run was the input of the second, and written out again.
    suite = (task_dirs(kfp_local, "validate-2") / "suite" / "suite.yaml").read_text()
    assert suite.startswith("# conveyor suite") and "Adelie" in suite
    # Both branches ran: the faulty data was blocked, the clean data went on.
    markers = sorted(p.name for p in task_dirs(kfp_local, "").iterdir()
                     if p.name.startswith("branch-marker"))
    assert markers == ["branch-marker", "branch-marker-2"]


def test_policy_fail_stops_the_task_and_lists_the_faults(penguins, kfp_local, capfd):
    @dsl.pipeline(name="validate-fail")
    def gate(query: str):
        bad = bigquery_ingest(query=query)
        validate(dataset=bad.outputs["dataset"], suite_uri=str(SPEC))

    with pytest.raises(RuntimeError):
        gate(query=FAULTY)
    logs = capfd.readouterr()
    text = logs.out + logs.err
    assert "ValidationFailed" in text
    assert "column 'island': expect_column_values_to_be_in_set" in text
    assert "'Atlantis'" in text


SPEC = PENGUINS_SUITE
