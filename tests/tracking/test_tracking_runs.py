"""conveyor.tracking against a real MLflow server on loopback: one run per pipeline run, what a
step logs, the registry mirror; off without a URI; an unreachable server is one warning."""

import subprocess
import sys
import time

import pytest
from support import REPO, free_ports

from conveyor import tracking
from conveyor.tracking.models import LABELS_TAG, VERSION_TAG


def test_steps_of_a_pipeline_run_log_into_one_mlflow_run(tracking_server):
    from mlflow import MlflowClient

    run = f"conveyor-training-{time.time_ns()}"
    first = tracking.log_step(tracking.Step(
        "train", params={"learning_rate": 0.01, "nested": {"a": 1}},
        metrics={"loss": 0.5, "nan": float("nan")}, series={"epoch_loss": [0.9, 0.7, 0.5]},
        first_step=2, artifacts={"model": "gs://b/run/train/model"}),
        tracking_uri=tracking_server, pipeline_run=run)
    second = tracking.log_step(tracking.Step(
        "evaluate", metrics={"accuracy": 0.93}, tags={"blessed": "true"},
        artifacts={"evaluation": "gs://b/run/evaluate/evaluation", "empty": ""}),
        tracking_uri=tracking_server, pipeline_run=run)
    assert first and first == second
    client = MlflowClient(tracking_server)
    got = client.get_run(first)
    assert got.info.run_name == run and got.info.status == "FINISHED"
    assert got.data.params == {"train.learning_rate": "0.01", "train.nested.a": "1"}
    assert got.data.metrics == {"train/loss": 0.5, "train/epoch_loss": 0.5,
                                "evaluate/accuracy": 0.93}
    history = client.get_metric_history(first, "train/epoch_loss")
    assert [(m.step, m.value) for m in history] == [(2, 0.9), (3, 0.7), (4, 0.5)]
    tags = got.data.tags
    assert tags["conveyor.pipeline_run"] == run and tags["conveyor.blessed"] == "true"
    assert tags["conveyor.artifact.train.model"] == "gs://b/run/train/model"
    assert tags["conveyor.artifact.evaluate.evaluation"] == "gs://b/run/evaluate/evaluation"
    assert "conveyor.artifact.evaluate.empty" not in tags
    # another pipeline run gets a run of its own
    assert tracking.log_step(tracking.Step("train", metrics={"loss": 1.0}),
                             tracking_uri=tracking_server, pipeline_run=run + "-b") != first


def test_versions_and_labels_are_mirrored_as_model_versions_and_aliases(tracking_server):
    from mlflow import MlflowClient

    base = f"gs://bucket/models/mirror-{time.time_ns()}"
    name = base.rsplit("/", 1)[-1]
    client = MlflowClient(tracking_server)
    aliases = tracking.mirror_versions(base, {1: f"{base}/1"}, {"champion": 1},
                                       tracking_uri=tracking_server)
    assert aliases == {"champion": "1"}
    client.set_registered_model_alias(name, "by-hand", "1")
    tracking.mirror_versions(base, {1: f"{base}/1", 2: f"{base}/2"},
                             {"champion": 1, "challenger": 2}, tracking_uri=tracking_server)
    tracking.mirror_versions(base, {2: f"{base}/2"}, {"champion": 2},  # promoted
                             tracking_uri=tracking_server)
    model = client.get_registered_model(name)
    assert model.aliases == {"champion": "2", "by-hand": "1"}  # challenger gone, by-hand kept
    assert model.tags[LABELS_TAG] == '{"champion": "2"}'
    versions = {v.version: (v.source, v.tags[VERSION_TAG])
                for v in client.search_model_versions(f"name = '{name}'")}
    assert versions == {"1": (f"{base}/1", "1"), "2": (f"{base}/2", "2")}


def test_nothing_is_tracked_and_mlflow_not_imported_without_a_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = ("import sys; from conveyor import tracking; "
            "assert tracking.log_step(tracking.Step('train', metrics={'loss': 1})) is None; "
            "assert tracking.mirror_versions('gs://b/m', {1: 'gs://b/m/1'}, {}) is None; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_environment_variable_configures_tracking(monkeypatch, tracking_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    assert tracking.configured_uri() == tracking_server
    assert tracking.configured_uri("http://elsewhere:5000") == "http://elsewhere:5000"
    assert tracking.log_step(tracking.Step("validate", metrics={"drifted_features": 0}))


def test_an_unreachable_server_is_one_warning_line_and_the_step_goes_on(capfd, monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    uri = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    started = time.monotonic()
    assert tracking.log_step(tracking.Step("train", metrics={"loss": 1.0}),
                             tracking_uri=uri, pipeline_run="r") is None
    assert tracking.mirror_versions("gs://b/m", {1: "gs://b/m/1"}, {"champion": 1},
                                    tracking_uri=uri) is None
    assert time.monotonic() - started < 30  # MLflow's default retries would take minutes
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"warning: MLflow tracking at {uri}: logging train failed; "
                               "the run goes on without it")
    assert "mirroring gs://b/m" in lines[1]
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in __import__("os").environ


pytestmark = pytest.mark.slow  # a real MLflow server (started once per session)


def test_a_server_that_never_answers_costs_one_timeout(capfd, monkeypatch):
    import socket

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    silent = socket.socket()  # accepts connections (the kernel's backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        started = time.monotonic()
        assert tracking.log_step(tracking.Step("evaluate", metrics={"accuracy": 1.0}),
                                 tracking_uri=f"http://127.0.0.1:{silent.getsockname()[1]}",
                                 pipeline_run="r") is None
        assert time.monotonic() - started < 20  # one request, 10 s timeout, no retries
    finally:
        silent.close()
    out, err = capfd.readouterr()
    assert [line for line in (out + err).splitlines() if "MLflow tracking at" in line]
