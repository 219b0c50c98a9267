"""conveyor's image as GCP runs it: built here, run as 10001, every task of the reference
pipelines in a container of it (`conveyor run PIPELINE --local --docker`), and `conveyor serve`
in it answering from the model the containerized training pushed.

One training (penguins loaded with `conveyor local load`, 2 epochs, a local model base path:
so the path mounts and the file ownership are exercised), chained into batch prediction and
continuous training in containers, then serving.

The image is built once per session, or reused: images/local.sh keeps the Debian base and
Docker's layer cache, so a second build only redoes what changed. CONVEYOR_TEST_IMAGE names an
image to use instead. Building needs root (it installs and starts the engine when missing);
without root and without a running engine the tier is skipped, unless CONVEYOR_REQUIRE_DOCKER is
set (CI sets it: there it fails instead).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_ports

pytestmark = [pytest.mark.container, pytest.mark.slow]

TABLE = "container.penguins"
LABEL = "species"
EPOCHS = '{"epochs": 2}'
TASKS = ("preflight", "bigquery-ingest", "validate", "transform", "train", "evaluate", "push")
MAX_IMAGE_BYTES = 3 * 10**9
REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"  # Debian's CLI, the engine's own version (images/local.sh)


def engine_answers() -> bool:
    if not Path(DOCKER).exists():
        return False
    return subprocess.run([DOCKER, "info"], capture_output=True, timeout=60,
                          check=False).returncode == 0


@pytest.fixture(scope="session")
def image() -> str:
    """conveyor's image tag, built (or found in the layer cache) by images/local.sh."""
    given = os.environ.get("CONVEYOR_TEST_IMAGE")
    if given:
        return given
    if os.getuid() != 0 and not engine_answers():
        message = "no Docker engine, and not root to install one (images/local.sh)"
        if os.environ.get("CONVEYOR_REQUIRE_DOCKER"):
            pytest.fail(message)
        pytest.skip(message)
    started = time.monotonic()
    built = subprocess.run(["bash", str(REPO / "images" / "local.sh")], capture_output=True,
                           text=True, timeout=1500, check=False)
    assert built.returncode == 0, built.stderr[-4000:]
    print(f"images/local.sh: {time.monotonic() - started:.0f} s\n{built.stderr[-600:]}")
    return built.stdout.strip().splitlines()[-1]


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def conveyor(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conveyor", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def task_line(out: str, task: str) -> str:
    found = re.findall(rf"^  (?:done|FAILED) +{re.escape(task)} .*$", out, re.MULTILINE)
    assert found, f"no end line for {task} in:\n{out}"
    return found[-1]


def run_dir(out: str) -> Path:
    return Path(re.search(r"^run folder: (.+)$", out, re.MULTILINE).group(1))


def test_image_runs_as_10001_with_python_311_and_fits_in_3_gb(image):
    assert docker("run", "--rm", image, "id", "-u").stdout.strip() == "10001"
    assert docker("run", "--rm", image, "id", "-g").stdout.strip() == "10001"
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    assert size <= MAX_IMAGE_BYTES, f"{image} is {size / 1e9:.2f} GB"
    code = ("import sys, time; t = time.perf_counter(); import conveyor.train.tasks; "
            "import tensorflow as tf; print(sys.version_info[:2], tf.__version__, "
            "round(time.perf_counter() - t, 2))")
    started = time.monotonic()
    out = docker("run", "--rm", "--network", "host", image, "python", "-c", code).stdout
    print(f"{image}: {size / 1e9:.2f} GB; import conveyor.train.tasks + tensorflow: "
          f"{out.strip()} s in-process, {time.monotonic() - started:.1f} s with the container")
    assert out.startswith("(3, 11) 2.21.")


@pytest.fixture(scope="module")
def loaded(stack, tmp_path_factory) -> str:
    from palmerpenguins import load_penguins

    path = tmp_path_factory.mktemp("csv") / "penguins.csv"
    load_penguins().to_csv(path, index=False)
    done = conveyor("local", "load", str(path), "--table", TABLE)
    assert done.returncode == 0, done.stderr
    return TABLE


@pytest.fixture(scope="module")
def trained(image, loaded, tmp_path_factory):
    """The training pipeline, every task in the image, pushing into a local folder."""
    work = tmp_path_factory.mktemp("docker-runs")
    base_path = work / "models" / "penguins"  # missing: --docker creates and mounts it
    runs = work / "runs"
    done = conveyor("run", "training", "--local", "--docker", "--image", image,
                    "--param", f"table={loaded}", "--param", f"label={LABEL}",
                    "--param", f"model_base_path={base_path}",
                    "--param", f"hyperparameters={EPOCHS}", "--param", 'slices=["island"]',
                    "--pipeline-root", str(runs))
    return done, base_path, runs


def test_training_runs_every_task_in_the_image_and_pushes(trained, image):
    done, base_path, _ = trained
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert f"every task in {image}" in done.stdout
    for task in TASKS:
        assert task_line(done.stdout, task).lstrip().startswith("done"), task
    assert re.search(r"344 rows \(train \d+, eval \d+\)", task_line(done.stdout, "bigquery-ingest"))
    assert "BLESSED" in task_line(done.stdout, "evaluate")
    assert f"pushed version 1 -> {base_path}/1" in task_line(done.stdout, "push")
    assert (base_path / "1" / "saved_model.pb").is_file()
    folder = run_dir(done.stdout)
    train_log = (folder / "logs" / "train.log").read_text()
    assert f"Found image '{image}'" in train_log  # kfp's DockerRunner ran it, not a subprocess
    model = folder / "train" / "model" / "saved_model.pb"
    assert model.is_file()
    if os.getuid() == 0:  # as root the tasks run as the image's user, as on GCP
        assert model.stat().st_uid == 10001
        assert (base_path / "1").stat().st_uid == 10001
    else:  # as anyone else, as that user: the files stay theirs
        assert model.stat().st_uid == os.getuid()


def test_batch_prediction_in_the_image_with_the_pushed_model(trained, image):
    from conveyor import gcp

    _, base_path, runs = trained
    done = conveyor("run", "batch_prediction", "--local", "--docker", "--image", image,
                    "--param", f"table={TABLE}", "--param", "output_table=container.scored",
                    "--param", f"model_base_path={base_path}", "--pipeline-root", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "344 rows predicted by version 1" in task_line(done.stdout, "batch-predict")
    rows = list(gcp.bigquery_client().query("SELECT model_version FROM container.scored").result())
    assert len(rows) == 344 and {r["model_version"] for r in rows} == {"1"}


def test_continuous_training_in_the_image_against_the_served_version(trained, image):
    _, base_path, runs = trained
    done = conveyor("run", "continuous_training", "--local", "--docker", "--image", image,
                    "--param", f"table={TABLE}", "--param", f"label={LABEL}",
                    "--param", f"model_base_path={base_path}",
                    "--param", f"hyperparameters={EPOCHS}", "--param", "retrain_always=true",
                    "--pipeline-root", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "2 epochs" in task_line(done.stdout, "train")
    assert "baseline" in task_line(done.stdout, "evaluate")  # evaluated against version 1


def test_conveyor_serve_in_the_image_answers_from_the_pushed_model(trained, image):
    """`conveyor serve` in the image as the manifests' pods run a server: user 10001, a
    read-only root filesystem with /tmp writable, no capabilities, the model mounted read-only."""
    done, base_path, _ = trained
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    (port,) = free_ports(1)
    name = f"conveyor-serve-test-{os.getpid()}"
    docker("run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "-v", f"{base_path}:{base_path}:ro", image,
           "conveyor", "serve", "--model-base-path", str(base_path), "--model-name", "penguins",
           "--port", str(port))
    try:
        url = f"http://127.0.0.1:{port}/v1/models/penguins"
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    status = json.load(answer)
                break
            except OSError:
                time.sleep(1)
        logs = docker("logs", name, check=False)
        assert status is not None, logs.stdout + logs.stderr[-3000:]
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        row = {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
               "flipper_length_mm": 217.0, "body_mass_g": 5200.0, "sex": "male", "year": 2008}
        request = urllib.request.Request(f"{url}:predict", method="POST",
                                         data=json.dumps({"instances": [row]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            prediction = json.load(answer)["predictions"][0]
        assert prediction["class_label"] in ("Adelie", "Chinstrap", "Gentoo")
        assert abs(sum(prediction["probabilities"]) - 1) < 1e-3
        assert "Read-only file system" not in logs.stderr  # nothing wants to write outside /tmp
    finally:
        docker("rm", "-f", name, check=False)
