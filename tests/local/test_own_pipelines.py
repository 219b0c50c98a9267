"""Your own pipeline, end to end (issue 28): `conveyor compile FILE.py:FUNCTION` (and a module
path, and a compiled YAML retargeted), `submit` and `schedule` of your pipeline or its YAML, the
required parameters checked before anything is sent on every target, and `--dry-run` for
Kubeflow Pipelines printing the request while sending nothing. The KFP side is the real
`kfp.Client` against a loopback recorder (tests/support: loopback_api)."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from support import loopback_api
from support.network import kfp_answer

from conveyor import cli, images

OWN = '''
from kfp import dsl
from conveyor.components import batch_predict, bigquery_ingest, validate

@dsl.pipeline(name="score-my-shops")
def score(table: str, model_base_path: str, out: str, sample: float = 1.0):
    rows = bigquery_ingest(table=table, split_ratios={"all": 1.0})
    validate(dataset=rows.outputs["dataset"], policy="warn")
    batch_predict(dataset=rows.outputs["dataset"], output_table=out,
                  model_base_path=model_base_path)

not_a_pipeline = 3
'''
ARGS = ["--param", "table=shops.today", "--param", "model_base_path=gs://m/churn",
        "--param", "out=shops.scored"]


@pytest.fixture()
def own(tmp_path, monkeypatch):
    (tmp_path / "my_pipelines.py").write_text(OWN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_pipelines", None)


def images_of(spec: dict) -> set[str]:
    executors = spec["deploymentSpec"]["executors"].values()
    return {e["container"]["image"] for e in executors}


def test_compile_a_file_a_module_and_a_yaml_retargeted(own, capsys):
    assert cli.main(["compile", "my_pipelines.py:score"]) == 0
    assert capsys.readouterr().out.strip() == "score.yaml"
    spec = yaml.safe_load((own / "score.yaml").read_text())
    assert spec["pipelineInfo"]["name"] == "score-my-shops"
    assert images_of(spec) == {images.image(images.DEFAULT_REGISTRY, "cpu")}
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "table", "model_base_path", "out", "sample"}

    assert cli.main(["compile", "my_pipelines:score", "-o", "mod.yaml", "--registry",
                     "europe-docker.pkg.dev/acme/ml"]) == 0
    moved = yaml.safe_load((own / "mod.yaml").read_text())
    assert images_of(moved) == {images.image("europe-docker.pkg.dev/acme/ml", "cpu")}

    assert cli.main(["compile", "score.yaml", "-o", "again.yaml", "--registry",
                     "europe-docker.pkg.dev/acme/ml"]) == 0
    assert images_of(yaml.safe_load((own / "again.yaml").read_text())) == images_of(moved)


@pytest.mark.parametrize("argv, words", [
    (["compile", "my_pipelines.py:scor"], "my_pipelines.py has no 'scor'"),
    (["compile", "my_pipelines.py:not_a_pipeline"], "not a kfp pipeline"),
    (["compile", "nowhere.py:score"], "no such file nowhere.py"),
    (["compile", "bigquery_ingset"], "did you mean 'bigquery_ingest'?"),
    (["compile", "score.yaml", "-o", "score.yaml"], "is the YAML being compiled"),
])
def test_compile_errors_are_one_line(own, argv, words, capsys):
    if argv[1] == "score.yaml":
        assert cli.main(["compile", "my_pipelines.py:score"]) == 0
        capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert "Traceback" not in err


def test_submit_and_schedule_your_pipeline_and_its_yaml(own):
    with loopback_api(kfp_answer) as (host, seen):
        assert cli.main(["submit", "my_pipelines.py:score", "--host", host, *ARGS]) == 0
        assert cli.main(["compile", "my_pipelines.py:score"]) == 0
        assert cli.main(["schedule", "score.yaml", "--host", host, "--cron", "0 0 3 * * *",
                         *ARGS]) == 0
    runs = [b for m, p, b, _ in seen if m == "POST" and p.endswith("/runs")]
    recurring = [b for m, p, b, _ in seen if m == "POST" and p.endswith("/recurringruns")]
    assert [r["pipeline_spec"]["pipelineInfo"]["name"] for r in runs] == ["score-my-shops"]
    assert runs[0]["display_name"] == "score-my-shops"
    assert runs[0]["runtime_config"]["parameters"] == {
        "table": "shops.today", "model_base_path": "gs://m/churn", "out": "shops.scored"}
    assert recurring[0]["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"


def test_a_kfp_dry_run_prints_the_request_and_sends_nothing(own, capsys):
    with loopback_api(kfp_answer) as (host, seen):
        assert cli.main(["submit", "my_pipelines.py:score", "--host", host, "--dry-run",
                         *ARGS, "--param", "sample=1"]) == 0
        assert seen == []
    request = json.loads(capsys.readouterr().out)
    assert request["pipeline"] == "score-my-shops" and request["host"] == host
    assert request["arguments"]["sample"] == 1.0  # an integer for a float input: a float
    assert yaml.safe_load(open(request["pipeline_package"]))["pipelineInfo"]["name"] == \
        "score-my-shops"


@pytest.mark.parametrize("target", [
    ["--host", "http://127.0.0.1:9"],
    ["--vertex", "--project", "p", "--location", "europe-west4", "--pipeline-root", "gs://r"],
])
def test_required_parameters_are_checked_before_sending_on_every_target(own, target, capsys):
    assert cli.main(["submit", "my_pipelines.py:score", *target, "--dry-run",
                     "--param", "table=shops.today", "--param", "smaple=0.5"]) == 2
    err = capsys.readouterr().err
    for words in ("model_base_path is required", "out is required",
                  "no parameter(s) ['smaple'] (did you mean 'sample'?)"):
        assert words in err, err
