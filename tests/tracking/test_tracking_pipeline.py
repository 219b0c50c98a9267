"""The training pipeline through kfp.local with a real MLflow server on loopback: each run's
parameters, figures, verdict and output URIs read back with MlflowClient; pushed versions are
model versions, and the aliases follow the labels through a challenger push and a promotion."""

import json
from pathlib import Path

import pytest
from kfp import dsl, local

from conveyor.pipelines import training
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]


@dsl.pipeline(name="promote-tracked")
def promote_tracked(dataset_uri: str, model_base_path: str, tracking_uri: str):
    from conveyor.components import promote

    recent = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
    promote(dataset=recent.output, model_base_path=model_base_path, split="eval",
            tracking_uri=tracking_uri, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)


def newest(root: Path) -> Path:
    return max((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)


def test_training_runs_log_to_mlflow_and_aliases_follow_the_labels(
        penguins, bucket, tmp_path, tracking_server, monkeypatch):
    from mlflow import MlflowClient

    from conveyor.promote.promote import start_canary

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = f"gs://{bucket('tracking-test')}/{tmp_path.name}/penguins-tracked"
    outputs = tmp_path / "runs"
    mlflow = MlflowClient(tracking_server)

    def run(hparams):
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(outputs),
                   raise_on_error=True)
        training.pipeline(table=penguins, label="species", model_base_path=base,
                          hyperparameters={"batch_size": 32, **hparams},
                          tracking_uri=tracking_server)
        folder = newest(outputs)
        found = mlflow.search_runs(
            [mlflow.get_experiment_by_name("conveyor").experiment_id],
            filter_string=f"tags.`conveyor.pipeline_run` = '{folder.name}'")
        assert len(found) == 1, found  # every step logged into the one run
        return folder, found[0]

    def aliases() -> dict[str, int]:
        """The registered model's aliases as conveyor version numbers."""
        model = mlflow.get_registered_model("penguins-tracked")
        return {alias: int(mlflow.get_model_version("penguins-tracked", v).tags[
            "conveyor.version"]) for alias, v in model.aliases.items()}

    first, logged = run({"epochs": 2, "learning_rate": 0.001})
    params, metrics, tags = logged.data.params, logged.data.metrics, logged.data.tags
    assert params["train.learning_rate"] == "0.001" and params["train.epochs"] == "2"
    assert params["validate.policy"] == "fail" and params["evaluate.split"] == "eval"
    assert metrics["validate/drifted_features"] == 0
    history = mlflow.get_metric_history(logged.info.run_id, "train/epoch_loss")
    assert [m.step for m in history] == [0, 1]
    evaluation = json.loads((first / "evaluate" / "evaluation" / "evaluation.json").read_text())
    assert metrics["evaluate/accuracy"] == round(evaluation["metrics"]["overall"]["accuracy"], 6)
    assert tags["conveyor.blessed"] == "true" and tags["conveyor.pushed_version"] == "1"
    assert Path(tags["conveyor.artifact.evaluate.evaluation_json"]).is_file()
    assert Path(tags["conveyor.artifact.train.model"], "saved_model.pb").is_file()
    assert Path(tags["conveyor.artifact.validate.report"]).is_file()
    assert tags["conveyor.artifact.push.version"] == f"{base}/1"
    assert logged.info.status == "FINISHED"
    assert aliases() == {"champion": 1}  # no labels yet: the served version, the newest
    [v1] = mlflow.search_model_versions("name = 'penguins-tracked'")
    assert (v1.source, v1.run_id) == (f"{base}/1", logged.info.run_id)

    start_canary(base)  # v1 labelled champion: the next push is a challenger
    second, logged = run({"epochs": 30, "learning_rate": 0.01})
    assert logged.data.tags["conveyor.pushed_version"] == "2"
    assert ModelBasePath(base).labels() == {"champion": 1, "challenger": 2}
    assert aliases() == {"champion": 1, "challenger": 2}

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(outputs),
               raise_on_error=True)
    promote_tracked(dataset_uri=str(second / "bigquery-ingest" / "dataset"),
                    model_base_path=base, tracking_uri=tracking_server)
    assert ModelBasePath(base).labels() == {"champion": 2}
    assert aliases() == {"champion": 2}  # the alias followed the promotion; challenger gone


@dsl.pipeline(name="validate-tracked")
def validate_tracked(dataset_uri: str, tracking_uri: str):
    from conveyor.components import validate

    data = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
    validate(dataset=data.output, label_column="species", tracking_uri=tracking_uri,
             pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)


def test_a_task_whose_server_does_not_answer_warns_once_and_succeeds(kfp_local, tmp_path,
                                                                      capfd):
    from support import free_ports, write_dataset

    from conveyor.local.seed import penguins as penguin_rows

    write_dataset(tmp_path / "ds", penguin_rows())
    uri = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    validate_tracked(dataset_uri=str(tmp_path / "ds"), tracking_uri=uri)
    out, err = capfd.readouterr()
    warnings = [line for line in (out + err).splitlines() if "MLflow tracking at" in line]
    assert len(warnings) == 1 and "logging validate failed; the run goes on" in warnings[0]
    assert (newest(kfp_local) / "validate" / "report").is_file()  # the task finished
