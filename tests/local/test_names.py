"""`conveyor.local.names`: a local run speaks the pipeline's words. Task folders and console
lines are step names (`train`, never kfp's `train-3`), and one line at the end says which steps
did not run and why, never naming the branch a run did not take. No stack here: the reference
pipelines' compiled specs, a user's pipeline, and kfp.local's own naming function."""

from __future__ import annotations

import logging
import os
import textwrap

import pytest

from conveyor.local import progress, task_report
from conveyor.local.names import StepNames, skip_line
from conveyor.pipelines.resolve import resolve


def steps_of(name: str) -> StepNames:
    component, _ = resolve(name)
    return StepNames(component.pipeline_spec)


@pytest.mark.parametrize("pipeline", ["training", "continuous_training", "monitoring"])
def test_every_copy_of_a_step_in_exclusive_branches_gets_the_step_name(pipeline):
    steps = steps_of(pipeline)
    assert {steps.shown[c] for c in steps.shown if "train" in c} == {"train"}
    assert {steps.shown[c] for c in steps.shown if "evaluate" in c} == {"evaluate"}
    assert {steps.shown[c] for c in steps.shown if "push" in c} == {"push"}
    assert not [n for n in steps.shown.values() if n[-1].isdigit()], steps.shown


def test_continuous_trainings_drift_branch_is_named_by_its_steps():
    """The drift branch's copies are comp-train-3, comp-evaluate-3: their folders were
    `train-3/` and `evaluate-3/`; they are `train/` and `evaluate/`."""
    steps = steps_of("continuous_training")
    assert steps.step("comp-train-3") == "train" and steps.step("comp-train-2-2") == "train"
    assert [steps.task_name(c) for c in ("comp-transform-2", "comp-train-3",
                                         "comp-evaluate-3")] == ["transform", "train", "evaluate"]


USER_PIPELINE = textwrap.dedent('''
    from kfp import dsl
    from conveyor.components import bigquery_ingest, validate

    @dsl.pipeline(name="twice")
    def twice(table: str):
        rows = bigquery_ingest(table=table)
        validate(dataset=rows.outputs["dataset"], policy="warn")
        validate(dataset=rows.outputs["dataset"], policy="fail")
''')


def test_two_copies_that_both_run_keep_kfps_distinct_names(tmp_path):
    module = tmp_path / "twice.py"
    module.write_text(USER_PIPELINE)
    component, _ = resolve(f"{module}:twice")
    steps = StepNames(component.pipeline_spec)
    assert sorted(steps.shown.values()) == ["bigquery-ingest", "validate", "validate-2"]


def test_a_name_is_never_given_twice_in_one_run():
    steps = steps_of("training")
    assert steps.task_name("comp-train-2") == "train"
    assert steps.task_name("comp-train") == "train-again-2"  # both ran: never one folder
    assert steps.task_name("comp-train-2") == "train"  # a retry keeps its name


def test_naming_replaces_kfps_task_names_for_the_run_only():
    from kfp.local import executor_input_utils

    steps = steps_of("continuous_training")
    with steps.naming():
        assert executor_input_utils.get_local_task_resource_name("comp-train-3") == "train"
    assert executor_input_utils.get_local_task_resource_name("comp-train-3") == "train-3"
    assert steps.ran == {"comp-train-3"}


def ran(steps: StepNames, *components: str) -> StepNames:
    for component in components:
        steps.task_name(component)
    return steps


BEFORE_TRAINING = ("comp-preflight", "comp-bigquery-ingest", "comp-validate")


def test_a_cpu_run_says_nothing_of_the_gpu_branch():
    steps = ran(steps_of("training"), *BEFORE_TRAINING, "comp-transform", "comp-train",
                "comp-evaluate", "comp-push")
    assert steps.not_run(failed=False) == ([], [])


def test_a_model_not_blessed_skips_push_naming_the_condition():
    steps = ran(steps_of("training"), *BEFORE_TRAINING, "comp-transform", "comp-train",
                "comp-evaluate")
    assert skip_line(*steps.not_run(failed=False), failed=False) == \
        "  skip    push  (blessed: condition false)"


def test_continuous_training_without_drift_names_both_conditions_once():
    steps = ran(steps_of("continuous_training"), *BEFORE_TRAINING)
    assert skip_line(*steps.not_run(failed=False), failed=False) == \
        "  skip    transform, train, evaluate, push  (scheduled, drifted: conditions false)"
    retrained = ran(steps_of("continuous_training"), *BEFORE_TRAINING, "comp-transform-2",
                    "comp-train-3", "comp-evaluate-3")
    assert retrained.not_run(failed=False) == (["push"], ["blessed"])


def test_after_a_failure_the_steps_left_are_named_in_pipeline_order():
    steps = ran(steps_of("training"), "comp-preflight")
    assert skip_line(*steps.not_run(failed=True), failed=True) == (
        "  skip    bigquery-ingest, validate, transform, train, evaluate, push  "
        "(an earlier task failed)")


def test_the_capture_tells_the_steps_not_run_once_at_the_end(tmp_path):
    """kfp.local's own skip records (per branch, before training has even started) are not
    shown; one line at the end is, in step names."""
    steps = steps_of("training")
    read_fd, write_fd = os.pipe()
    log = logging.getLogger()
    with progress.Capture(tmp_path / "logs", console=progress.Console(write_fd, tty=False),
                          steps=steps), steps.naming():
        for component in (*BEFORE_TRAINING, "comp-transform", "comp-train", "comp-evaluate"):
            name = steps.task_name(component)
            log.info(f"Executing task '{name}'")
            if component == "comp-train":
                log.info("Skipping conditional task condition-4 (condition evaluated to False)")
                log.info("Skipping conditional task condition-5 (condition evaluated to False)")
            log.info(f"Task '{name}' finished with status SUCCESS")
        log.info("Skipping conditional task condition-2 (condition evaluated to False)")
        log.info("Pipeline 'conveyor-training' finished with status SUCCESS")
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        shown = f.read().splitlines()
    assert [line for line in shown if "skip" in line] == \
        ["  skip    push  (blessed: condition false)"]
    assert not [line for line in shown if "-2" in line or "gpu" in line or "condition-" in line]


def test_reports_get_the_name_a_browser_opens(tmp_path):
    folder = tmp_path / "validate"
    (folder / "statistics").mkdir(parents=True)
    (folder / "report").write_text("<html>report</html>")
    (folder / "summary").write_text("# summary")
    linked = task_report.link_reports(folder, {
        "report": "system.HTML", "summary": "system.Markdown", "statistics": "system.Artifact",
        "missing": "system.HTML"})
    assert linked == {"report": folder / "report.html", "summary": folder / "summary.md"}
    assert (folder / "report.html").read_text() == "<html>report</html>"
    assert (folder / "report").read_text() == "<html>report</html>"  # the KFP artifact stays
    assert not (folder / "statistics.html").exists()


def test_the_task_types_of_a_run_come_from_the_spec():
    steps = steps_of("training")
    steps.task_name("comp-evaluate")
    types = steps.output_types("evaluate")
    assert types["html_report"] == "system.HTML" and types["report"] == "system.Markdown"
