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

import datetime
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import free_ports

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


def instances(count: int | None = None) -> list[dict]:
    """Penguins rows as a client sends them (no label; a missing sex as '', NaN as null)."""
    from palmerpenguins import load_penguins

    rows = []
    for row in load_penguins().drop(columns=[LABEL]).to_dict("records")[:count]:
        rows.append({k: ("" if k == "sex" else None)
                     if v is None or (isinstance(v, float) and math.isnan(v)) else v
                     for k, v in row.items()})
    return rows


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


SERVING_MANIFEST = REPO / "manifests" / "conveyor-serving" / "serving.yaml"


def manifest_container() -> tuple[dict, dict]:
    """The conveyor-server Deployment's pod security context and its one container, as
    manifests/conveyor-serving/serving.yaml declares them."""
    import yaml

    docs = [d for d in yaml.safe_load_all(SERVING_MANIFEST.read_text()) if d]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def docker_run_args(pod: dict, container: dict, overrides: dict[str, str]) -> list[str]:
    """`docker run` options and command line that run `container` as its pod would: its user,
    read-only root filesystem, dropped capabilities, no privilege escalation, an emptyDir as a
    tmpfs at each mount, and its command and args with the `--flag=value` pairs of `overrides`
    replaced (the model base path, the port, where predictions are logged)."""
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    options = ["--user", user]
    security = container["securityContext"]
    if security.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    options += [part for cap in security["capabilities"]["drop"] for part in ("--cap-drop", cap)]
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    options += [part for m in container["volumeMounts"] if m["name"] in empty
                for part in ("--tmpfs", m["mountPath"])]
    args = []
    for arg in container["args"]:
        flag = arg.split("=", 1)[0]
        args.append(f"{flag}={overrides.pop(flag)}" if flag in overrides else arg)
    assert not overrides, f"flags not in the manifest's args: {sorted(overrides)}"
    return [*options, "IMAGE", *container["command"], *args]


@pytest.fixture(scope="module")
def served(trained, image, stack, bucket):
    """manifests/conveyor-serving's container run in the image with `docker run`: its command
    line, user, read-only root filesystem with /tmp writable and no capabilities, with the
    pushed model (mounted read-only) as its base path and predictions logged to the emulated
    GCS: (its URL, container name, log prefix)."""
    from conveyor import gcp

    done, base_path, _ = trained
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    port, grpc_port = free_ports(2)  # the host's network: not TF Serving's 8500
    name = f"conveyor-serve-test-{os.getpid()}"
    prefix = f"gs://{bucket('container-test')}/prediction-log-{os.getpid()}"
    env = [f"{gcp.STORAGE_EMULATOR_ENV}={os.environ[gcp.STORAGE_EMULATOR_ENV]}",
           f"{gcp.PROJECT_ENV}={os.environ[gcp.PROJECT_ENV]}"]
    pod, container = manifest_container()
    run = docker_run_args(pod, container, {
        "--host": "127.0.0.1", "--port": str(port), "--grpc-port": str(grpc_port),
        "--model-base-path": str(base_path),
        "--log-predictions": prefix, "--log-flush-seconds": "1"})
    run[run.index("IMAGE")] = image
    docker("run", "-d", "--name", name, "--network", "host",
           *[part for pair in env for part in ("-e", pair)],
           "-v", f"{base_path}:{base_path}:ro", *run)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/penguins"
        deadline = time.monotonic() + 180
        status = None
        while status is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    status = json.load(answer)
            except OSError:
                time.sleep(1)
        logs = docker("logs", name, check=False)
        assert status is not None, logs.stdout + logs.stderr[-3000:]
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        for probe in ("readinessProbe", "livenessProbe"):  # the manifest's probes answer
            path = container[probe]["httpGet"]["path"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                assert answer.status == 200, (probe, path)
        yield url, name, prefix
    finally:
        docker("rm", "-f", name, check=False)


def test_conveyor_serve_in_the_image_answers_from_the_pushed_model(served):
    url, name, _ = served
    prediction = post(f"{url}:predict", {"instances": instances(1)})["predictions"][0]
    assert prediction["class_label"] in ("Adelie", "Chinstrap", "Gentoo")
    assert abs(sum(prediction["probabilities"]) - 1) < 1e-3
    logs = docker("logs", name, check=False)
    assert "Read-only file system" not in logs.stderr  # nothing wants to write outside /tmp


def test_monitoring_in_the_image_over_the_traffic_served_from_it(served, trained, image):
    """The served traffic (the training rows again: calm), logged by the serving container,
    monitored by the monitoring pipeline with every task in the image: no drift, no retrain."""
    url, name, prefix = served
    _, base_path, runs = trained
    rows = instances()
    for i in range(0, len(rows), 50):
        post(f"{url}:predict", {"instances": rows[i:i + 50]})
    docker("stop", "-t", "60", name)  # SIGTERM: the prediction log writes what it holds
    end = datetime.datetime.now(datetime.UTC).isoformat()
    done = conveyor("run", "monitoring", "--local", "--docker", "--image", image,
                    "--param", f"traffic={prefix}", "--param", f"model_base_path={base_path}",
                    "--param", f"label={LABEL}", "--param", f"table={TABLE}",
                    "--param", f"window_end={end}", "--param", "window_hours=1",
                    "--param", f"hyperparameters={EPOCHS}", "--pipeline-root", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    folder = run_dir(done.stdout)
    output = json.loads(next(folder.rglob("monitor/executor_output.json")).read_text())
    result = json.loads(next(folder.rglob("monitor/monitoring/monitoring.json")).read_text())
    assert len(rows) <= result["rows"] <= len(rows) + 1  # + the answer test's one row
    assert result["served"]["version"] == 1
    assert output["parameterValues"]["Output"] is False, result["drifted_features"]
    assert not any(folder.rglob("train*/model/saved_model.pb"))  # nothing retrained
