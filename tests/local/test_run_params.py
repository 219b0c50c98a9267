"""`conveyor run PIPELINE --local` before anything runs: which pipeline, which parameters, and
the progress machinery (figures, errors, the capture of descriptors 1 and 2). No stack here."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import REPO

from conveyor.errors import InputError
from conveyor.local import progress, task_report
from conveyor.pipelines.resolve import check_arguments, parse_cli_params, resolve

USER_PIPELINE = textwrap.dedent('''
    from kfp import dsl
    from conveyor.components import bigquery_ingest, validate

    @dsl.pipeline(name="my-checks")
    def checks(table: str, ratio: float = 0.8, rounds: int = 1, strict: bool = False,
               columns: list = [], extra: dict = {}):
        data = bigquery_ingest(table=table, split_ratios={"train": ratio, "eval": 0.2})
        validate(dataset=data.outputs["dataset"], policy="warn")

    not_a_pipeline = 42
''')


@pytest.fixture()
def user_module(tmp_path):
    path = tmp_path / "my pipelines" / "über.py"  # a space and a non-ASCII name
    path.parent.mkdir()
    path.write_text(USER_PIPELINE)
    return path


# -- which pipeline ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["training", "continuous_training", "batch_prediction"])
def test_reference_names_resolve_to_their_pipelines(name):
    component, label = resolve(name)
    assert label == name
    assert "model_base_path" in component.component_spec.inputs


def test_a_file_module_and_a_package_module_resolve(user_module):
    component, label = resolve(f"{user_module}:checks")
    assert component.pipeline_spec.pipeline_info.name == "my-checks"
    assert label == f"{user_module}:checks"
    same, _ = resolve("conveyor.pipelines.batch_prediction:pipeline")
    assert same.pipeline_spec.pipeline_info.name == "conveyor-batch-prediction"


def test_a_compiled_yaml_resolves_with_the_same_inputs_as_the_function():
    loaded, _ = resolve(str(REPO / "pipelines" / "training" / "pipeline.yaml"))
    function, _ = resolve("training")
    assert set(loaded.component_spec.inputs) == set(function.component_spec.inputs)
    assert loaded.pipeline_spec.pipeline_info.name == "conveyor-training"


@pytest.mark.parametrize("ref, words", [
    ("trianing", "is not a reference pipeline"),
    ("nowhere.py:pipe", "no such file nowhere.py"),
    ("no_such_package_xyz.mod:pipe", "no module named 'no_such_package_xyz.mod'"),
    ("conveyor.pipelines.training:nothing", "has no 'nothing'"),
    ("conveyor.pipelines.training:NAME", "is a str, not a kfp pipeline"),
    ("missing.yaml", "no such file missing.yaml"),
    ("", "expected a reference name"),
])
def test_bad_references_are_named(ref, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(".", r"\.")):
        resolve(ref)


def test_a_file_attribute_that_is_not_a_pipeline_is_refused(user_module):
    with pytest.raises(InputError, match="is a int, not a kfp pipeline"):
        resolve(f"{user_module}:not_a_pipeline")


def test_a_yaml_that_is_not_a_pipeline_is_refused(tmp_path):
    bad = tmp_path / "notes.yaml"
    bad.write_text("shopping: [milk, eggs]\n")
    with pytest.raises(InputError, match="is not a compiled KFP pipeline"):
        resolve(str(bad))


# -- which parameters ---------------------------------------------------------------------------

def test_cli_params_keep_strings_as_typed_and_parse_json_for_the_rest():
    component, _ = resolve("training")
    params = parse_cli_params(["label=2024", "table=null", "hyperparameters={\"epochs\": 2}",
                               "slices=[\"Région\", \"from\"]", "train_gpus=0",
                               "allow_breaking_signature=true", "query=SELECT 1 = 1"],
                              component)
    assert params == {"label": "2024", "table": "null", "hyperparameters": {"epochs": 2},
                      "slices": ["Région", "from"], "train_gpus": 0,
                      "allow_breaking_signature": True, "query": "SELECT 1 = 1"}


def test_a_param_without_equals_is_refused_as_submit_refuses_it():
    component, _ = resolve("training")
    with pytest.raises(InputError, match="'label' is not name=value"):
        parse_cli_params(["label"], component)


def test_every_problem_is_named_at_once():
    component, _ = resolve("training")
    with pytest.raises(InputError) as info:
        check_arguments(component, {"labl": "x", "train_gpus": 1.5, "slices": "island",
                                    "allow_breaking_signature": "yes",
                                    "hyperparameters": [1]}, "training")
    message = str(info.value)
    for words in ("no parameter(s) ['labl']", "label is required (a string)",
                  "model_base_path is required", "train_gpus must be an integer, got 1.5",
                  "slices must be a JSON list, got 'island'",
                  "allow_breaking_signature must be true or false, got 'yes'",
                  "hyperparameters must be a JSON object, got [1]"):
        assert words in message, message


def test_types_of_a_user_pipeline(user_module):
    component, label = resolve(f"{user_module}:checks")
    ok = check_arguments(component, {"table": "d.t", "ratio": 1, "rounds": 3, "strict": False,
                                     "columns": [], "extra": {"k": None}}, label)
    assert ok["ratio"] == 1.0 and isinstance(ok["ratio"], float)
    with pytest.raises(InputError, match="rounds must be an integer, got True"):
        check_arguments(component, {"table": "d.t", "rounds": True}, label)
    with pytest.raises(InputError, match="ratio must be a number, got '0.8'"):
        check_arguments(component, {"table": "d.t", "ratio": "0.8"}, label)
    with pytest.raises(InputError, match=r"has no parameter\(s\) \['label'\]"):
        check_arguments(component, {"table": "d.t", "label": "x"}, label)


def test_an_artifact_input_cannot_come_from_a_parameter():
    from conveyor.pipelines.continuous_training import retrain

    with pytest.raises(InputError) as info:
        check_arguments(retrain, {"dataset": "gs://b/ds"}, "retrain")
    assert "dataset is an artifact input" in str(info.value)
    assert "statistics is required (an artifact input)" in str(info.value)


def test_bad_parameters_fail_before_any_stack_starts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "STORAGE_EMU"))}
    env["CONVEYOR_STACK_DIR"] = str(tmp_path / "stack")
    run = subprocess.run([sys.executable, "-m", "conveyor", "run", "training", "--local",
                          "--param", "table=d.t", "--param", "train_gpus=two",
                          "--pipeline-root", str(tmp_path / "runs")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "label is required" in run.stderr and "train_gpus must be an integer" in run.stderr
    assert not (tmp_path / "stack").exists() and not (tmp_path / "runs").exists()


# -- figures from real task outputs ----------------------------------------------------------------

def _output(**artifacts):
    return {"artifacts": {name: {"artifacts": [{"name": name, "uri": f"/r/t/{name}",
                                                "metadata": meta}]}
                          for name, meta in artifacts.items()}}


def test_figures_of_each_conveyor_step():
    ingest = _output(dataset={"rows": 344}, metrics={"rows_train": 273, "rows_eval": 71,
                                                     "rows_total": 344, "seconds": 2.4})
    assert task_report.figures(ingest) == "344 rows (train 273, eval 71)"
    drifted = _output(statistics={"drifted_columns": ["body_mass_g", "Größe m²"]}, suite={},
                      report={}, metrics={"failed_expectations": 0, "drifted_features": 2})
    assert task_report.figures(drifted) == "checks passed, drifted: body_mass_g, Größe m²"
    broken = _output(statistics={"drifted_columns": []}, suite={},
                     metrics={"failed_expectations": 3})
    assert task_report.figures(broken) == "3 checks failed, nothing drifted"
    train = _output(model={}, tensorboard={}, metrics={"epochs_run": 2.0, "best_epoch": 2.0,
                                                       "val_loss": 0.69, "val_accuracy": 0.6087})
    assert task_report.figures(train) == "2 epochs (best 2), val_accuracy 0.6087"
    regression = _output(evaluation={"blessed": False, "task": "regression"},
                         metrics={"rmse": 12.5, "baseline_rmse": 11.0, "naive_rmse": 30.25})
    assert task_report.figures(regression) == \
        "rmse 12.5000 (baseline 11.0000, naive 30.2500), NOT BLESSED"
    pushed = _output(pushed_model={"version": 3, "uri": "gs://b/m/3", "skipped": ""}, summary={})
    assert task_report.figures(pushed) == "pushed version 3 -> gs://b/m/3"
    predicted = _output(metrics={"rows": 240.0, "seconds": 1.2})
    log = "    wrote 240 predictions of model version 1 to conveyor-test.out.preds\n"
    assert task_report.figures(predicted, log) == \
        "240 rows predicted by version 1 -> conveyor-test.out.preds"
    preflight = {"parameterValues": {"Output": "preflight: ok (7 columns in the source)"}}
    assert task_report.figures(preflight) == "ok (7 columns in the source)"
    assert task_report.figures({}) == ""


def test_artifact_paths_leave_out_metrics():
    out = _output(model={}, tensorboard={}, metrics={"loss": 1.0})
    assert task_report.artifact_paths(out) == {"model": "/r/t/model",
                                            "tensorboard": "/r/t/tensorboard"}


# -- errors from a task's log ---------------------------------------------------------------------

TRACEBACK = """\
    [KFP Executor 2026-12-02 02:38:12,001 INFO]: Looking for component `preflight`
    Traceback (most recent call last):
      File "<frozen runpy>", line 198, in _run_module_as_main
    KeyError: 'x'

    During handling of the above exception, another exception occurred:

    Traceback (most recent call last):
      File "/tmp/ephemeral_component.py", line 40, in preflight
        raise InputError(...)
    conveyor.errors.SchemaError: column 'Größe m²': type GEOGRAPHY is not supported
    (supported: INT64, FLOAT64, STRING)

    [KFP Executor 2026-12-02 02:38:12,101 INFO]: done
"""


def test_the_last_traceback_gives_the_error_and_its_continuation_lines():
    kind, message = task_report.task_error(TRACEBACK)
    assert kind == "conveyor.errors.SchemaError"
    assert message == ("column 'Größe m²': type GEOGRAPHY is not supported\n"
                       "(supported: INT64, FLOAT64, STRING)")
    assert task_report.task_error("no traceback at all\n") == ("", "")


def test_the_task_folder_is_read_from_the_executor_input_in_its_log():
    log = ('    [KFP Executor 2026-12-02 02:53:04,113 INFO]: Got executor_input:\n'
           '        "outputs": {"outputFile": "/r/p-2026-12-02/pre flight/Output",\n'
           '            "outputFile": "/r/p-2026-12-02/pre flight/executor_output.json"\n')
    assert task_report.task_folder(log) == Path("/r/p-2026-12-02/pre flight")
    assert task_report.task_folder("no executor input here") is None


def test_the_fail_fast_record_wins_over_the_log(tmp_path):
    from conveyor.failfast import marker

    marker(tmp_path / "model").write_text(json.dumps(
        {"type": "TrainingError", "message": "loss became NaN at epoch 3", "task": "train"}))
    assert task_report.task_error(TRACEBACK, tmp_path) == \
        ("conveyor.errors.TrainingError", "loss became NaN at epoch 3")


@pytest.mark.parametrize("kind, expected", [
    ("conveyor.errors.SchemaError", True),
    ("conveyor.errors.TrainingError", True),
    ("conveyor.model.infra.InfraCheckFailed", True),
    ("conveyor.validate.validate.ValidationFailed", False),  # a ConveyorError, not bad input
    ("conveyor.errors.StackError", False),
    ("ValueError", False),
    ("json.decoder.JSONDecodeError", False),  # not conveyor's: never imported
    ("conveyor.no_such_module.X", False),
])
def test_input_errors_are_told_apart(kind, expected):
    assert task_report.is_input_error(kind) is expected


# -- the capture -----------------------------------------------------------------------------------

def test_the_capture_routes_each_task_stream_to_its_log_and_shows_one_line_per_event(tmp_path):
    read_fd, write_fd = os.pipe()
    console = progress.Console(write_fd, tty=False)
    task_dir = tmp_path / "run" / "ingest"
    task_dir.mkdir(parents=True)
    (task_dir / "executor_output.json").write_text(json.dumps(_output(
        dataset={}, metrics={"rows_total": 5, "rows_all": 5})))
    log = logging.getLogger()
    with progress.Capture(tmp_path / "logs", console=console,
                          locate=lambda t, log: tmp_path / "run" / t) as capture:
        log.info("Executing task \x1b[96m'ingest'\x1b[0m")
        print("    [KFP Executor] executor_input JSON {...}")
        os.write(1, b"fd-level noise from a C library\n")
        os.write(2, b"I0000 cuda_stub: no GPU\n")
        log.info("Task \x1b[96m'ingest'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m")
        log.info("Executing task 'train'")
        print("    Traceback (most recent call last):\n      File \"x\"\n"
              "    conveyor.errors.TrainingError: loss became NaN", file=sys.stderr)
        log.info("Task 'train' finished with status FAILURE")
        log.info("Task train failed (attempt 1/2). Retrying in 2.0s...")
        log.info("Executing task 'train'")
        log.info("Task 'train' finished with status FAILURE")
        log.info("Skipping task push: upstream task(s) ['train'] failed.")
        log.info("Pipeline 'p' finished with status FAILURE. Inner task failed: 'train'.")
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        shown = f.read().splitlines()
    assert [line.split()[:2] for line in shown] == [
        ["start", "ingest"], ["done", "ingest"], ["start", "train"], ["failed", "train"],
        ["retry", "train"], ["FAILED", "train"]]
    assert shown[1].endswith("5 rows (all 5)")
    assert "attempt 1 of 2: TrainingError: loss became NaN; retrying in 2 s" in shown[3]
    assert shown[5].endswith("TrainingError")  # the message itself is told once, at the end
    assert "loss became NaN" not in shown[5]
    assert not any("noise" in line or "executor_input" in line for line in shown)
    ingest_log = (tmp_path / "logs" / "ingest.log").read_text()
    assert "executor_input JSON" in ingest_log and "\x1b[" not in ingest_log
    whole = (tmp_path / "logs" / "run.log").read_text()
    assert "fd-level noise from a C library" in whole and "cuda_stub" in whole
    assert "---- attempt 2 ----" in (tmp_path / "logs" / "train.log").read_text()
    [ingest, train] = capture.tasks
    assert (ingest.status, train.status, train.attempts) == ("SUCCESS", "FAILURE", 2)
    assert train.error_type == "conveyor.errors.TrainingError"
    assert capture.pipeline_status == "FAILURE"
    assert sys.stdout is not None and os.write(1, b"") == 0  # descriptors restored


def test_a_task_kfp_local_refuses_is_reported_as_that_tasks_failure(tmp_path, monkeypatch):
    """A container component cannot run under kfp.local's SubprocessRunner: kfp raises inside
    the task; the run reports it on that task (exit 1, not bad input) and keeps its log."""
    from conveyor import gcp
    from conveyor.local.run import run_component

    # "a stack is running" as far as the run can tell (something listens where the
    # environment says); this task never reaches one
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    monkeypatch.setenv(gcp.BIGQUERY_ENDPOINT_ENV, f"http://127.0.0.1:{port}")
    monkeypatch.setenv(gcp.STORAGE_EMULATOR_ENV, f"http://127.0.0.1:{port}")

    module = tmp_path / "loud.py"  # (this test file's future annotations would confuse kfp)
    module.write_text(textwrap.dedent('''
        from kfp import dsl

        @dsl.container_component
        def shout(word: str):
            return dsl.ContainerSpec(image="alpine", command=["echo"], args=[word])

        @dsl.pipeline(name="containers-only")
        def loud(word: str = "hé"):
            shout(word=word)
    '''))
    loud, label = resolve(f"{module}:loud")
    read_fd, write_fd = os.pipe()
    result = run_component(loud, label, {}, pipeline_root=tmp_path / "runs",
                           raise_on_error=False,
                           console=progress.Console(write_fd, tty=False))
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        shown = f.read()
    assert not result.ok and not result.input_error
    assert result.failed.name == "shout"
    assert "only supports running Lightweight Python Components" in result.failed.error
    assert "FAILED  shout" in shown and "RuntimeError" in shown
    assert result.log.exists() and result.log.parent.parent == result.run_dir
    assert "Traceback" in result.log.read_text()
    listener.close()


# -- values inside the parameters, refused in seconds (one definition each: conveyor.params) ----

def _refused(tmp_path, *params: str) -> tuple[subprocess.CompletedProcess, float]:
    """`conveyor run training --local` with `params` (after a valid table, label and base
    path), with no stack anywhere: (the process, the CPU seconds it took)."""
    import resource
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "STORAGE_EMU"))}
    env["CONVEYOR_STACK_DIR"] = str(tmp_path / "stack")
    pairs = ["table=d.t", "label=species", f"model_base_path={tmp_path / 'models'}", *params]
    command = [sys.executable, "-m", "conveyor", "run", "training", "--local",
               "--pipeline-root", str(tmp_path / "runs")]
    for pair in pairs:
        command += ["--param", pair]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert time.monotonic() - started < 60, "a refusal must not wait on anything"
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds, not wall: the work the refusal costs, whatever else shares the machine (on
    # a quiet one the wall time is within a few tenths of this).
    seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert done.returncode == 2, done.stderr
    assert not (tmp_path / "stack").exists() and not (tmp_path / "runs").exists()
    return done, seconds


@pytest.mark.parametrize("param, words", [
    ('hyperparameters={"lerning_rate": 0.1}',
     ["hyperparameters: unknown name(s) ['lerning_rate']", "did you mean 'learning_rate'?",
      "known: model, hidden_units, embedding_dim"]),
    ('hyperparameters={"learning_rate": "fast"}',
     ["hyperparameters: learning_rate='fast': must be a number"]),
    ('thresholds={"acuracy": {"min": 0.5}}',
     ["thresholds: unknown metric 'acuracy'", "did you mean 'accuracy'?",
      "known: accuracy, auc, auc_pr"]),
    ('thresholds={"accuracy": {"minimum": 0.5}}',
     ["thresholds: 'accuracy': unknown rule 'minimum'", "did you mean 'min'?"]),
    ("policy=warm", ["policy: 'warm' is not one of ('fail', 'warn')", "did you mean 'warn'?"]),
])
def test_a_bad_value_inside_a_parameter_is_refused_in_seconds_before_any_task(
        tmp_path, param, words):
    done, seconds = _refused(tmp_path, param)
    for word in words:
        assert word in done.stderr, done.stderr
    assert seconds < 3, f"refused after {seconds:.1f} CPU s"


def test_a_param_given_twice_is_refused_naming_it(tmp_path):
    done, seconds = _refused(tmp_path, "policy=warn", "policy=fail")
    assert "--param: policy is given twice" in done.stderr, done.stderr
    assert seconds < 3, f"refused after {seconds:.1f} CPU s"
    with pytest.raises(InputError, match="table is given twice"):
        parse_cli_params(["table=a.b", "table=c.d"], resolve("training")[0])


def test_every_value_problem_is_named_at_once_with_the_types():
    component, _ = resolve("training")
    with pytest.raises(InputError) as info:
        check_arguments(component, {"label": "y", "model_base_path": "m", "table": "d.t",
                                    "hyperparameters": {"epochs": 2.5, "hidden_units": "64"},
                                    "policy": "stop", "read_streams": 0,
                                    "split_ratios": {"train": 0.5},
                                    "thresholds": {"auc": {"significance": 0.9}}}, "training")
    message = str(info.value)
    for words in ("hyperparameters: epochs=2.5", "policy: 'stop' is not one of",
                  "read_streams: must be an integer >= 1", "split_ratios: ratios must sum to 1",
                  "'auc' significance is the level"):
        assert words in message, message


def test_good_values_pass_and_a_user_pipeline_keeps_its_own_meaning(user_module):
    component, _ = resolve("training")
    ok = check_arguments(component, {"label": "y", "model_base_path": "m", "table": "d.t",
                                     "hyperparameters": {"learning_rate": 0.01, "epochs": 3.0,
                                                         "hidden_units": [8, 4]},
                                     "thresholds": {"auc": {"min": 0.6}, "naive_floor": False},
                                     "policy": "warn"}, "training")
    assert ok["policy"] == "warn"
    mine, label = resolve(f"{user_module}:checks")  # "extra" is the user's: not checked
    assert check_arguments(mine, {"table": "d.t", "extra": {"lerning_rate": 1}}, label)


def test_the_reference_pipelines_take_defaults_and_docs_from_one_definition():
    import importlib

    from conveyor.params import PARAMETERS, REQUIRED
    from conveyor.pipelines import PIPELINES

    for name, module in PIPELINES.items():
        inputs = importlib.import_module(module).pipeline.component_spec.inputs
        for parameter, spec in inputs.items():
            if parameter in PARAMETERS and PARAMETERS[parameter].default is not REQUIRED:
                assert spec.default == PARAMETERS[parameter].default, (name, parameter)
    training = importlib.import_module(PIPELINES["training"]).pipeline.component_spec.inputs
    assert training["split_key"].description == PARAMETERS["split_key"].doc
