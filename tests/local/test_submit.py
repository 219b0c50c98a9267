"""`conveyor submit` and `schedule`, up to the requests the real clients send.

Kubeflow Pipelines: the real `kfp.Client` talks to a loopback HTTP server that records each
request and answers as the KFP v2beta1 API does. Vertex AI: the real `PipelineJob` is built and
its request checked, and the real `PipelineJobSchedule.create` sends its request (REST
transport) to a loopback recorder; what Vertex AI would do with them needs Google Cloud.
"""

import json

import pytest
from support import loopback_api
from support.network import kfp_answer

from conveyor import cli, submit
from conveyor.errors import InputError


@pytest.fixture()
def kfp_api():
    with loopback_api(kfp_answer) as api:
        yield api


def posted(seen, suffix):
    (body,) = [b for method, path, b, _ in seen if method == "POST" and path.endswith(suffix)]
    return body


def test_submit_to_kubeflow_pipelines_sends_the_compiled_spec(kfp_api):
    host, seen = kfp_api
    run = submit.submit_kfp("training", host, {"table": "sales.orders", "label": "churned"},
                            run_name="nightly")
    assert run == "run-1"
    body = posted(seen, "/apis/v2beta1/runs")
    assert body["display_name"] == "nightly" and body["experiment_id"] == "exp-1"
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "conveyor-training"
    assert body["runtime_config"]["parameters"] == {"table": "sales.orders", "label": "churned"}
    assert posted(seen, "/apis/v2beta1/experiments")["display_name"] == "conveyor"


def test_schedule_on_kubeflow_pipelines_is_a_cron_recurring_run(kfp_api):
    host, seen = kfp_api
    assert submit.schedule_kfp("continuous_training", host, {"retrain_always": True},
                               cron="0 0 2 * * *") == "rr-1"
    body = posted(seen, "/apis/v2beta1/recurringruns")
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert int(body["max_concurrency"]) == 1  # int64 travels as a JSON string
    assert body["no_catchup"] is True and body["mode"] == "ENABLE"
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "conveyor-continuous-training"
    assert body["runtime_config"]["parameters"] == {"retrain_always": True}


def test_vertex_job_request_and_schedule_cron(capsys):
    assert cli.main(["submit", "batch_prediction", "--vertex", "--project", "acme", "--location",
                     "europe-west4", "--pipeline-root", "gs://acme/root", "--param",
                     'passthrough=["id"]', "--param", "output_table=acme.scored", "--param",
                     "model_base_path=gs://acme/models/churn", "--dry-run"]) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["displayName"] == "conveyor-batch-prediction"
    assert request["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme/root"
    assert request["runtimeConfig"]["parameterValues"]["passthrough"] == ["id"]
    assert submit.check_vertex_cron("TZ=Europe/Paris 0 2 * * *")
    with pytest.raises(InputError, match="5 fields"):
        submit.check_vertex_cron("0 0 2 * * *")


@pytest.mark.parametrize("argv, words", [
    (["submit", "training", "--param", "nope=1", "--host", "http://x"], "no parameter(s) ['nope']"),
    (["submit", "bogus", "--host", "http://x"], "is not a reference pipeline"),
    (["schedule", "training", "--cron", "0 2 * * *", "--host", "http://x", "--param", "label=y",
      "--param", "model_base_path=gs://b/m", "--dry-run"], "6 fields"),
    (["submit", "training", "--vertex", "--project", "p", "--location", "l", "--pipeline-root",
      "gs://r", "--param", "label=y", "--dry-run"], "model_base_path is required"),
    (["submit", "training", "--param", "label=y", "--param", "model_base_path=gs://b/m"],
     "give --host"),
    (["submit", "training", "--vertex"], "--vertex needs --project"),
    (["submit", "training", "--param", "x", "--host", "http://x"], "is not name=value"),
])
def test_bad_submissions_are_one_line_errors(argv, words, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


def vertex_answer(method, path, body):
    """What Vertex AI answers to a create: the resource sent, named under its parent."""
    parent = path.split("?")[0].removeprefix("/v1/")
    return {**body, "name": f"{parent}/4242"}


@pytest.fixture()
def vertex_api(monkeypatch):
    """A loopback Vertex AI REST API; aiplatform's global configuration is restored after."""
    from google.cloud.aiplatform import initializer

    monkeypatch.setattr(initializer, "global_config", initializer._Config())
    with loopback_api(vertex_answer) as api:
        yield api


def test_vertex_schedule_sends_one_create_schedule_request(vertex_api):
    from google.auth.credentials import AnonymousCredentials

    url, seen = vertex_api
    from google.cloud.aiplatform import initializer

    # Only the endpoint and transport are global: `aiplatform.init` is bound to the original
    # configuration object, so configure the fixture's fresh one directly.
    initializer.global_config.init(api_endpoint=url, api_transport="rest")
    job = submit.vertex_job("continuous_training", project="acme", location="europe-west4",
                            pipeline_root="gs://acme/root", arguments={"retrain_always": True},
                            credentials=AnonymousCredentials())
    name = submit.schedule_vertex(job, cron="TZ=Europe/Paris 0 2 * * *", name="nightly")
    assert name == "projects/acme/locations/europe-west4/schedules/4242"
    ((method, path, body, _),) = seen
    assert (method, path.split("?")[0]) == ("POST",
                                            "/v1/projects/acme/locations/europe-west4/schedules")
    assert body["displayName"] == "nightly"
    assert body["cron"] == "TZ=Europe/Paris 0 2 * * *"
    assert int(body["maxConcurrentRunCount"]) == 1
    job_request = body["createPipelineJobRequest"]
    assert job_request["parent"] == "projects/acme/locations/europe-west4"
    pipeline_job = job_request["pipelineJob"]
    assert pipeline_job["runtimeConfig"]["parameterValues"]["retrain_always"] is True
    assert pipeline_job["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme/root"
    assert pipeline_job["pipelineSpec"]["pipelineInfo"]["name"] == "conveyor-continuous-training"
