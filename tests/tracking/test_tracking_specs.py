"""The compiled pipelines hand every tracked task the `tracking_uri` parameter and the pipeline
job's name (the MLflow run they all log to); `tracking_uri` is a shared, documented parameter."""

import pytest
import yaml
from support import REPO

from conveyor.params import PARAMETERS


def tasks(spec: dict) -> dict[str, dict]:
    """{task name: its inputs.parameters} of every task, nested pipelines' included."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {name: task.get("inputs", {}).get("parameters", {})
            for dag in dags for name, task in dag["tasks"].items()}


ONE_MACHINE = {"validate", "train", "train-2", "evaluate", "evaluate-2", "push", "push-2"}
MANY = ONE_MACHINE - {"train", "train-2"}  # train on several machines is not tracked


@pytest.mark.parametrize("pipeline, tracked", [
    ("training", ONE_MACHINE), ("training_distributed", MANY),
    ("training_kubeflow_distributed", MANY), ("continuous_training", ONE_MACHINE),
    ("monitoring", ONE_MACHINE)])
def test_every_tracked_task_gets_the_uri_and_the_run(pipeline, tracked):
    spec = yaml.safe_load((REPO / "pipelines" / pipeline / "pipeline.yaml").read_text())
    assert "tracking_uri" in spec["root"]["inputDefinitions"]["parameters"]
    found = {name: inputs for name, inputs in tasks(spec).items() if "pipeline_run" in inputs}
    assert set(found) == tracked
    for name, inputs in found.items():
        assert inputs["pipeline_run"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}", name
        assert "componentInputParameter" in inputs["tracking_uri"], name


def test_tracking_uri_is_a_shared_parameter_off_by_default():
    tracking = PARAMETERS["tracking_uri"]
    assert tracking.default == "" and "MLFLOW_TRACKING_URI" in tracking.doc
