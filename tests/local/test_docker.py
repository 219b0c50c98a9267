"""What `conveyor run --local --docker` hands to kfp's DockerRunner, without an engine: the image
every task runs, the local paths made absolute and mounted, who the tasks run as, the
environment. tests/container runs it for real."""

from __future__ import annotations

import os
import stat

import pytest

from conveyor import images
from conveyor.local import docker


def test_local_image_is_the_versioned_tag_without_a_registry():
    assert images.local_image() == f"conveyor:{images.__version__}"
    assert images.local_image("gpu") == f"conveyor:{images.__version__}-gpu"
    with pytest.raises(ValueError):
        images.local_image("tpu")


def test_replace_image_moves_conveyors_image_of_any_registry_and_keeps_others():
    spec = {"deploymentSpec": {"executors": {
        "a": {"container": {"image": images.image()}},
        "b": {"container": {"image": images.image("eu.gcr.io/p/x", "gpu")}},
        "c": {"container": {"image": "python:3.11"}},
        "d": {"container": {"image": "ghcr.io/conveyor-ml/conveyor:0.0.1"}},
        "e": {"container": {"image": "ghcr.io/other/notconveyor:" + images.__version__}}}}}
    moved = images.replace_image(spec, "mine:1")["deploymentSpec"]["executors"]
    assert {k: v["container"]["image"] for k, v in moved.items()} == {
        "a": "mine:1", "b": "mine:1", "c": "python:3.11",
        "d": "ghcr.io/conveyor-ml/conveyor:0.0.1",
        "e": "ghcr.io/other/notconveyor:" + images.__version__}


def test_local_paths_are_made_absolute_created_and_mounted_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "suite.yaml").write_text("x")
    arguments = {
        "model_base_path": "./models/penguins",  # missing: created as a folder
        "inner": str(tmp_path / "models" / "penguins" / "1"),  # inside the one above
        "suite_uri": "specs/suite.yaml",  # relative, exists
        "report": str(tmp_path / "out" / "report.html"),  # missing file: its folder is created
        "table": "ds.t", "label": "a/b", "query": "SELECT a / b FROM t",
        "remote": "gs://bucket/models", "epochs": 3, "hyper": {"path": "/x"},
    }
    absolute, mounts = docker.local_paths(arguments)
    assert absolute["model_base_path"] == str(tmp_path / "models" / "penguins")
    assert absolute["suite_uri"] == str(tmp_path / "specs" / "suite.yaml")
    for name in ("table", "label", "query", "remote", "epochs", "hyper", "report", "inner"):
        assert absolute[name] == arguments[name], name
    assert (tmp_path / "models" / "penguins").is_dir() and (tmp_path / "out").is_dir()
    assert not (tmp_path / "out" / "report.html").exists()
    assert sorted(mounts) == sorted([tmp_path / "models" / "penguins",
                                     tmp_path / "specs" / "suite.yaml", tmp_path / "out"])


@pytest.mark.skipif(os.getuid() != 0, reason="as root only: the folders go to the image's group")
def test_as_root_tasks_run_as_the_image_user_with_the_folders_shared(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    (tmp_path / "base" / "1").mkdir(parents=True)
    (tmp_path / "base" / "1" / "saved_model.pb").write_text("x")
    made = docker.plan("conveyor:x", {"model_base_path": str(tmp_path / "base")}, root)
    assert made.user is None and made.mounts == [tmp_path / "base"]
    for path in (root, tmp_path / "base", tmp_path / "base" / "1"):
        mode = path.stat().st_mode
        assert path.stat().st_gid == docker.IMAGE_GID
        assert mode & stat.S_IWGRP and mode & stat.S_ISGID, path
    model = tmp_path / "base" / "1" / "saved_model.pb"
    assert model.stat().st_gid == docker.IMAGE_GID and model.stat().st_mode & stat.S_IWGRP


def test_the_pipeline_root_is_not_mounted_twice(tmp_path):
    made = docker.plan("conveyor:x", {"out": str(tmp_path / "runs" / "scores")}, tmp_path / "runs")
    assert made.mounts == []


def test_tasks_get_the_stack_and_conveyor_settings_and_nothing_else(monkeypatch):
    monkeypatch.setenv("CONVEYOR_BIGQUERY_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:2")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setenv("SECRET_TOKEN", "no")
    env = docker.environment()
    assert env["CONVEYOR_BIGQUERY_ENDPOINT"] == "http://127.0.0.1:1"
    assert env["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:2"
    assert env["GOOGLE_CLOUD_PROJECT"] == "p"
    assert env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
    assert "SECRET_TOKEN" not in env and "PATH" not in env and "HOME" not in env


def test_runner_uses_the_host_network_and_mounts_the_paths(tmp_path):
    pytest.importorskip("docker")
    made = docker.DockerPlan("conveyor:x", {}, [tmp_path], user="1000:1000", group_add=["0"])
    runner = docker.runner(made, {"A": "1"})
    args = runner.container_run_args
    assert args["network_mode"] == "host" and args["environment"] == {"A": "1"}
    assert args["user"] == "1000:1000" and args["group_add"] == ["0"]
    assert [(m["Source"], m["Target"], m["Type"]) for m in args["mounts"]] == \
        [(str(tmp_path), str(tmp_path), "bind")]


def test_retarget_runs_every_task_of_a_reference_pipeline_in_the_given_image():
    from conveyor.pipelines import training

    moved = docker.retarget(training.pipeline, "conveyor:local-test")
    executors = moved.pipeline_spec.deployment_spec["executors"]
    found = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert found == {"conveyor:local-test"}
    assert moved.pipeline_spec.pipeline_info.name == \
        training.pipeline.pipeline_spec.pipeline_info.name
