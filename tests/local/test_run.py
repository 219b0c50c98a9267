"""`conveyor run PIPELINE --local` as a user runs it, against the emulators of the `stack`
fixture: a CSV of our own loaded with `conveyor local load`, then training (quiet: under 60
lines), batch prediction and continuous training with the model it pushed, a pipeline of the
user's own (a module file), a compiled YAML, the Python API, and a run that fails.

One training for the whole module (10 epochs, 180 rows: a fifth of train validates, so 2
epochs no longer learn the rule), chained into the other runs."""

from __future__ import annotations

import csv
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

from conveyor import gcp

pytestmark = [pytest.mark.local, pytest.mark.slow]

TABLE = "run_cli.ShopsChurn_2026"  # from the CSV below (the emulator refuses non-ASCII table ids)
LABEL = "Churned?"
EPOCHS = '{"epochs": 10}'
NOISE = ("executor_input", "Skipping registering function", "cuda", "absl", "RuntimeWarning",
         "UserWarning", "Streamed logs", "[KFP Executor")


def conveyor(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conveyor", *args], capture_output=True,
                          text=True, timeout=timeout)


def run_dir(out: str) -> Path:
    return Path(re.search(r"^run folder: (.+)$", out, re.M).group(1))


def task_line(out: str, task: str) -> str:
    found = re.findall(rf"^  (?:done|FAILED) +{re.escape(task)} .*$", out, re.M)
    assert found, f"no end line for {task} in:\n{out}"
    return found[-1]


@pytest.fixture(scope="module")
def shops_csv(tmp_path_factory) -> Path:
    """180 shops; odd names: spaces, a keyword, a unit sign, umlauts, '?' and mixed case;
    nulls in two columns, a skewed size, a label that mostly follows the size."""
    rnd = random.Random(20261202)
    path = tmp_path_factory.mktemp("csv") / "shops.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["Shop ID", "from", "Größe m²", "Région", "visits/day", "SELECT", LABEL])
        for i in range(180):
            size = round(rnd.lognormvariate(4, 0.7), 1)
            visits = "" if rnd.random() < 0.08 else rnd.randint(5, 400)
            region = "" if rnd.random() < 0.05 else rnd.choice(["Nord", "Süd", "Île", "West"])
            churned = (size < 50) != (rnd.random() < 0.1)
            out.writerow([f"S-{i:04d}", rnd.choice(["web", "shop", "ad"]), size, region,
                          visits, rnd.choice(["a", "b"]), "yes" if churned else "no"])
    return path


@pytest.fixture(scope="module")
def loaded(stack, shops_csv, bucket) -> str:
    done = conveyor("local", "load", str(shops_csv), "--table", TABLE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"180 rows -> {TABLE}"
    return f"gs://{bucket('run-cli-models')}/churn"


@pytest.fixture(scope="module")
def trained(loaded, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    done = conveyor("run", "training", "--local", "--param", f"table={TABLE}",
                    "--param", f"label={LABEL}", "--param", f"model_base_path={loaded}",
                    "--param", f"hyperparameters={EPOCHS}", "--param", 'slices=["Région"]',
                    "--pipeline-root", str(runs))
    return done, loaded, runs


def test_training_on_our_csv_is_quiet_pushes_and_logs_every_task(trained):
    done, base_path, runs = trained
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) < 60, done.stdout
    assert done.stderr == ""
    assert not [line for line in lines if any(word in line for word in NOISE)], done.stdout
    assert "344" not in done.stdout  # not the penguins
    assert re.search(r"180 rows \(train \d+, eval \d+\)", task_line(done.stdout, "bigquery-ingest"))
    assert "checks passed" in task_line(done.stdout, "validate")
    assert re.search(r"10 epochs \(best \d+\), val_accuracy 0\.\d{4}",
                     task_line(done.stdout, "train"))
    assert re.search(r"auc 0\.\d{4} \(naive 0\.\d{4}\), BLESSED",
                     task_line(done.stdout, "evaluate"))
    assert f"pushed version 1 -> {base_path}/1" in task_line(done.stdout, "push")
    folder = run_dir(done.stdout)
    assert folder.parent == runs and folder.name.startswith("conveyor-training-")
    assert "train/" in done.stdout and "model/" in done.stdout
    assert "report.html" in done.stdout and (folder / "validate" / "report.html").is_file()
    assert (folder / "train" / "model" / "saved_model.pb").exists()
    logs = folder / "logs"
    assert f"logs: {logs}/" in done.stdout
    for task in ("preflight", "bigquery-ingest", "validate", "transform", "train", "evaluate",
                 "push"):
        assert (logs / f"{task}.log").stat().st_size > 0, task
    assert "Skipping registering function" in (logs / "validate.log").read_text()
    assert "Epoch 10/10" in (logs / "train.log").read_text()
    assert "Epoch 10/10" not in (logs / "validate.log").read_text()
    assert "executor_input" in (logs / "run.log").read_text()


def test_batch_prediction_with_the_pushed_model(trained):
    _, base_path, runs = trained
    done = conveyor("run", "batch_prediction", "--local", "--param", f"table={TABLE}",
                    "--param", "output_table=run_cli.scored",
                    "--param", f"model_base_path={base_path}",
                    "--param", 'passthrough=["Shop ID"]', "--pipeline-root", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert len(done.stdout.splitlines()) < 30
    assert "180 rows predicted by version 1" in task_line(done.stdout, "batch-predict")
    rows = list(gcp.bigquery_client().query("SELECT * FROM run_cli.scored").result())
    assert len(rows) == 180 and {r["model_version"] for r in rows} == {"1"}
    assert len({r["Shop ID"] for r in rows}) == 180


def test_two_runs_at_once_in_one_root_keep_their_own_folders_and_logs(trained):
    _, base_path, runs = trained
    command = [sys.executable, "-m", "conveyor", "run", "batch_prediction", "--local",
               "--param", f"table={TABLE}", "--param", f"model_base_path={base_path}",
               "--pipeline-root", str(runs)]
    both = [subprocess.Popen(command + ["--param", f"output_table=run_cli.twin_{i}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in (0, 1)]
    outs = [p.communicate(timeout=600) for p in both]
    assert [p.returncode for p in both] == [0, 0], outs
    folders = [run_dir(out) for out, _ in outs]
    assert folders[0] != folders[1]
    for i, folder in enumerate(folders):
        assert f"run_cli.twin_{i}" in (folder / "logs" / "batch-predict.log").read_text()
        assert f"run_cli.twin_{1 - i}" not in (folder / "logs" / "run.log").read_text()
        assert "180 rows predicted by version 1" in task_line(outs[i][0], "batch-predict")


def test_continuous_training_retrains_against_the_served_version(trained):
    _, base_path, runs = trained
    done = conveyor("run", "continuous_training", "--local", "--param", f"table={TABLE}",
                    "--param", f"label={LABEL}", "--param", f"model_base_path={base_path}",
                    "--param", f"hyperparameters={EPOCHS}", "--param", "retrain_always=true",
                    "--pipeline-root", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert len(done.stdout.splitlines()) < 60, done.stdout
    assert "nothing drifted" in task_line(done.stdout, "validate")
    assert "10 epochs" in task_line(done.stdout, "train")
    assert "baseline" in task_line(done.stdout, "evaluate")  # evaluated against version 1
    folder = run_dir(done.stdout)
    assert folder.name.startswith("conveyor-continuous-training-")
    assert (folder / "logs" / "train.log").exists()


USER_PIPELINE = '''
from kfp import dsl
from conveyor.components import batch_predict, bigquery_ingest, validate


@dsl.pipeline(name="score-my-shops")
def score(table: str, model_base_path: str, out: str, split: str = "b"):
    """A user's own composition of conveyor's components: check the rows, then score a split."""
    rows = bigquery_ingest(table=table, split_ratios={"a": 0.5, "b": 0.5})
    validate(dataset=rows.outputs["dataset"], policy="warn")
    batch_predict(dataset=rows.outputs["dataset"], split=split, output_table=out,
                  model_base_path=model_base_path)
'''


def test_a_users_own_pipeline_from_a_module_file(trained, tmp_path):
    _, base_path, runs = trained
    module = tmp_path / "my pipelines" / "scoring.py"
    module.parent.mkdir()
    module.write_text(USER_PIPELINE)
    broken = module.parent / "broken.py"
    broken.write_text(USER_PIPELINE.replace('"a": 0.5', '"a": 1 - split'))
    refused = conveyor("run", f"{broken}:score", "--local", "--pipeline-root", str(runs))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"{broken}:9" in refused.stderr and "TypeError: unsupported operand" in refused.stderr
    done = conveyor("run", f"{module}:score", "--local", "--param", f"table={TABLE}",
                    "--param", f"model_base_path={base_path}", "--param", "out=run_cli.mine",
                    "--param", "split=a", "--pipeline-root", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert run_dir(done.stdout).name.startswith("score-my-shops-")
    ingest = re.search(r"180 rows \(a (\d+), b (\d+)\)", task_line(done.stdout, "bigquery-ingest"))
    assert ingest, done.stdout
    assert f"{ingest.group(1)} rows predicted by version 1" in \
        task_line(done.stdout, "batch-predict")
    assert "checks passed" in task_line(done.stdout, "validate")


def test_a_compiled_pipeline_yaml(trained):
    _, base_path, runs = trained
    spec = REPO / "pipelines" / "batch_prediction" / "pipeline.yaml"
    done = conveyor("run", str(spec), "--local", "--param", f"table={TABLE}",
                    "--param", "output_table=run_cli.from_yaml",
                    "--param", f"model_base_path={base_path}", "--pipeline-root", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "180 rows predicted by version 1" in task_line(done.stdout, "batch-predict")
    count = list(gcp.bigquery_client().query(
        "SELECT COUNT(*) AS n FROM run_cli.from_yaml").result())
    assert count[0]["n"] == 180


def test_the_python_api_returns_a_result_and_raises_on_failure(trained, tmp_path, capfd):
    from conveyor.local import PipelineFailed, run
    from conveyor.pipelines import batch_prediction

    _, base_path, _ = trained
    result = run(batch_prediction.pipeline, table=TABLE, output_table="run_cli.api",
                 model_base_path=base_path, pipeline_root=tmp_path)
    assert result.ok and result.run_dir.parent == tmp_path
    assert [t.name for t in result.tasks] == ["bigquery-ingest", "batch-predict"]
    assert result.task("batch-predict").figures.startswith("180 rows predicted")
    assert result.task("bigquery-ingest").artifacts["dataset"] == \
        str(result.run_dir / "bigquery-ingest" / "dataset")
    assert result.log.exists() and result.task("batch-predict").log.exists()
    shown = capfd.readouterr().out
    assert "executor_input" not in shown and "batch-predict" in shown
    with pytest.raises(PipelineFailed) as failed:
        run("batch_prediction", table="run_cli.no_such_table", output_table="run_cli.api2",
            model_base_path=base_path, pipeline_root=tmp_path)
    assert failed.value.result.failed.name == "bigquery-ingest"
    assert failed.value.result.input_error
    assert "no_such_table" in str(failed.value)


def test_a_failing_run_prints_the_error_and_its_log_and_exits_2(loaded, tmp_path):
    done = conveyor("run", "training", "--local", "--param", f"table={TABLE}",
                    "--param", "label=churned?", "--param", f"model_base_path={loaded}",
                    "--pipeline-root", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stdout.splitlines()) < 15, done.stdout
    line = task_line(done.stdout, "preflight")
    assert line.endswith("InputError")  # the error itself: once, on stderr
    log = Path(re.search(r"^its log: (.+)$", done.stdout, re.M).group(1))
    assert log.name == "preflight.log" and "Traceback" in log.read_text()
    assert done.stderr.count("\n") == 1 and "'churned?' is not a column" in done.stderr
    assert "is not a column" not in done.stdout
    assert "did you mean 'Churned?'" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
