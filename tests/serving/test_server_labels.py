"""The version labels file never takes `conveyor serve` down (issue 25, class 2).

Before: a labels file that did not parse at start, or a champion label naming a version no
longer published (a retention job deleted it), left /readyz at 503 and every predict at 404,
though good versions were on disk. Now serve keeps answering from the best version it can
justify (the last good champion, else the newest version that loads), says so on /readyz
(`labels_error`, `fallback`), in its log and in `conveyor_serving_labels_fallback`, and takes
the fixed file within a poll. Through the server's app in this process (as the neighbouring
tests do) and through a real `conveyor serve` process, on a local folder and on gs:// (the GCS
emulator)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest
from support import free_ports

from conveyor.registry import LABELS, MARKERS, ModelBasePath
from conveyor.serving.models import ModelManager

pytestmark = [pytest.mark.local]
ROW = {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
       "flipper_length_mm": 218.0, "body_mass_g": 4950.0, "sex": "female", "year": 2008}
PREDICT = "/v1/models/penguins:predict"

# Labels files that are not {label: version}: what each is, and words of the reason given.
BROKEN = {
    "not JSON": (b"{not json", "not JSON"),
    "empty": (b"", "not JSON"),
    "not UTF-8": (b"\xff\xff\xff", "not JSON"),
    "a list": (b"[1, 2]", "expected a JSON object"),
    "a string version": (b'{"champion": "1"}', "expected a version number"),
    "a float version": (b'{"champion": 1.5}', "expected a version number"),
    "past int64": (b'{"champion": 9223372036854775808}', "expected a version number"),
    "a bad label name": (b'{"Champion!": 1}', "is not a label name"),
}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def model(penguin_model):
    return penguin_model / "model"


def base_path(where: str, tmp_path: Path, request) -> ModelBasePath:
    if where == "gs":
        bucket = request.getfixturevalue("bucket")
        return ModelBasePath(f"gs://{bucket('serve-labels')}/{tmp_path.name}/penguins")
    return ModelBasePath(str(tmp_path / "penguins"))


def write_labels(base: ModelBasePath, raw: bytes | dict) -> None:
    """Write the labels file as a person or a broken tool would: no checks."""
    data = json.dumps(raw).encode() if isinstance(raw, dict) else raw
    if base.gcs:
        from conveyor import gcp

        gcp.storage_client().bucket(base.bucket_name).blob(base._key(LABELS)) \
            .upload_from_string(data)
    else:
        (Path(base.uri) / LABELS).write_bytes(data)


def delete_version(base: ModelBasePath, version: int) -> None:
    """What a retention job does: the version's files and, on gs://, its markers."""
    if not base.gcs:
        shutil.rmtree(Path(base.uri) / str(version))
        return
    from conveyor import gcp

    client = gcp.storage_client()
    for prefix in (f"{version}/", f"{MARKERS}/committed/{version}", f"{MARKERS}/claims/{version}"):
        for blob in client.list_blobs(base.bucket_name, prefix=base._key(prefix)):
            blob.delete()
    assert version not in base.versions()


def client(manager, canary_percent: float = 0.0):
    from conveyor.serving.server import create_app

    with warnings.catch_warnings():  # starlette 1.x prefers httpx2; httpx works the same
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient(create_app(manager, canary_percent=canary_percent),
                      raise_server_exceptions=False)


def fallback_metrics(text: str) -> dict[str, float]:
    """conveyor_serving_labels_fallback by reason, from /metrics."""
    prefix = 'conveyor_serving_labels_fallback{model="penguins",reason="'
    return {line[len(prefix):].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(prefix)}


def answered_by(app, path: str = PREDICT, rid: str | None = None) -> str:
    answer = app.post(path, json={"instances": [ROW]},
                      headers={"X-Request-Id": rid} if rid else {})
    assert answer.status_code == 200, answer.text
    return answer.headers["x-model-version"]


def lines(caplog, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "conveyor.serve" and words in r.getMessage()]


@pytest.mark.parametrize("where, kind", [*(("local", kind) for kind in BROKEN),
                                         ("gs", "not JSON"), ("gs", "a string version")])
def test_a_labels_file_broken_at_start_serves_the_newest_version_until_it_is_fixed(
        model, tmp_path, request, caplog, where, kind):
    caplog.set_level(logging.INFO, logger="conveyor.serve")
    base = base_path(where, tmp_path, request)
    base.publish(model)
    base.publish(model)
    raw, words = BROKEN[kind]
    write_labels(base, raw)
    manager = ModelManager(base.uri, "penguins", cache_dir=str(tmp_path / "cache"),
                           clock=Clock())
    with client(manager) as app:
        manager.poll_once()
        manager.poll_once()
        ready = app.get("/readyz")
        assert ready.status_code == 200, ready.text
        status = ready.json()
        assert status["version"] == 2 and status["state"] == "AVAILABLE"
        assert f"{base.uri}/labels.json" in status["labels_error"]
        assert words in status["labels_error"], status["labels_error"]
        assert status["fallback"].endswith("serving the newest version that loads, 2")
        assert answered_by(app) == "2"
        assert fallback_metrics(app.get("/metrics").text) == {"labels_file": 1.0,
                                                              "champion": 1.0}
        assert len(lines(caplog, "penguins: ignoring the labels file: ")) == 1  # once

        write_labels(base, {"champion": 1})  # fixed: taken at the next poll
        manager.poll_once()
        status = app.get("/readyz").json()
        assert (status["version"], status["labels"]) == (1, {"champion": 1})
        assert status["labels_error"] is None and status["fallback"] is None
        assert answered_by(app) == "1"
        assert fallback_metrics(app.get("/metrics").text) == {"labels_file": 0.0,
                                                              "champion": 0.0}
        assert len(lines(caplog, "labels.json is usable again")) == 1
        assert len(lines(caplog, "fallback over: serving version 1 (the champion")) == 1


@pytest.mark.parametrize("where", ["local", "gs"])
def test_a_champion_no_longer_published_keeps_serving_then_falls_back_to_the_newest(
        model, tmp_path, request, caplog, where):
    """Champion 2, challenger 3; a retention job deletes version 2. The running server keeps
    its last good champion (loaded); a restarted one serves the newest version that loads
    (3); fixing the labels brings the champion back within a poll."""
    caplog.set_level(logging.INFO, logger="conveyor.serve")
    base = base_path(where, tmp_path, request)
    for _ in range(3):
        base.publish(model)
    base.update_labels(lambda labels: {"champion": 2, "challenger": 3})
    running = ModelManager(base.uri, "penguins", cache_dir=str(tmp_path / "a"), clock=Clock())
    with client(running, canary_percent=50) as app:
        running.poll_once()
        assert running.current.version == 2 and sorted(running.loaded) == [2, 3]
        delete_version(base, 2)
        running.poll_once()
        status = app.get("/readyz").json()
        assert status["version"] == 2, status
        assert status["fallback"] == ("the champion label names version 2, which is not "
                                      "published (any more): serving the last good champion, "
                                      "version 2")
        assert {"version": "2", "reason": "labelled 'champion' but not a published version",
                "attempts": 0, "next_attempt_in_seconds": None} in status["skipped"]
        assert fallback_metrics(app.get("/metrics").text)["champion"] == 1.0
        versions = {answered_by(app, rid=f"r{i}") for i in range(20)}
        assert versions == {"2", "3"}  # the canary goes on beside the last good champion

    restarted = ModelManager(base.uri, "penguins", cache_dir=str(tmp_path / "b"), clock=Clock())
    with client(restarted, canary_percent=50) as app:
        restarted.poll_once()
        ready = app.get("/readyz")
        assert ready.status_code == 200, ready.text
        status = ready.json()
        assert status["version"] == 3 and status["labels"] == {"champion": 2, "challenger": 3}
        assert status["fallback"] == ("the champion label names version 2, which is not "
                                      "published (any more): serving the newest version that "
                                      "loads, 3")
        assert {answered_by(app, rid=f"r{i}") for i in range(10)} == {"3"}
        assert app.post("/v1/models/penguins/labels/champion:predict",
                        json={"instances": [ROW]}).status_code == 404
        assert fallback_metrics(app.get("/metrics").text) == {"labels_file": 0.0,
                                                              "champion": 1.0}
        assert lines(caplog, "penguins: the champion label names version 2")

        write_labels(base, {"champion": 1, "challenger": 3})  # fixed by hand
        restarted.poll_once()
        status = app.get("/readyz").json()
        assert status["version"] == 1 and status["fallback"] is None
        assert {answered_by(app, rid=f"r{i}") for i in range(20)} == {"1", "3"}
        assert fallback_metrics(app.get("/metrics").text)["champion"] == 0.0


def test_a_champion_that_does_not_load_falls_back_until_it_loads(model, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="conveyor.serve")
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    base.publish(model)
    graph = tmp_path / "penguins" / "2" / "saved_model.pb"
    good = graph.read_bytes()
    graph.write_bytes(good[:len(good) // 2])  # the champion's graph cut in half
    base.update_labels(lambda labels: {"champion": 2})
    clock = Clock()
    manager = ModelManager(base.uri, "penguins", clock=clock)
    with client(manager) as app:
        manager.poll_once()
        status = app.get("/readyz").json()
        assert status["version"] == 1, status
        assert status["fallback"].startswith("the champion label names version 2, which does "
                                             "not load (")
        assert status["fallback"].endswith("serving the newest version that loads, 1")
        assert answered_by(app) == "1"
        graph.write_bytes(good)
        clock.now += 2  # its next attempt
        manager.poll_once()
        status = app.get("/readyz").json()
        assert status["version"] == 2 and status["fallback"] is None
        assert answered_by(app) == "2"


@pytest.mark.parametrize("where", ["local", "gs"])
def test_a_labels_file_broken_while_serving_keeps_the_last_good_labels(
        model, tmp_path, request, where):
    base = base_path(where, tmp_path, request)
    base.publish(model)
    base.publish(model)
    base.update_labels(lambda labels: {"champion": 1, "challenger": 2})
    manager = ModelManager(base.uri, "penguins", cache_dir=str(tmp_path / "cache"),
                           clock=Clock())
    with client(manager, canary_percent=100) as app:
        manager.poll_once()
        assert answered_by(app) == "2"  # the challenger's share: all of it
        write_labels(base, b'{"champion": "two"}')
        base.publish(model)  # version 3: not labelled, so not served
        manager.poll_once()
        status = app.get("/readyz").json()
        assert (status["version"], status["labels"]) == (1, {"champion": 1, "challenger": 2})
        assert "'champion' names 'two'" in status["labels_error"]
        assert status["fallback"] is None and status["canary_percent"] == 100
        assert answered_by(app) == "2" and answered_by(app, "/v1/models/penguins/labels/"
                                                           "champion:predict") == "1"
        assert fallback_metrics(app.get("/metrics").text) == {"labels_file": 1.0,
                                                              "champion": 0.0}
        write_labels(base, {"champion": 3})
        manager.poll_once()
        status = app.get("/readyz").json()
        assert (status["version"], status["labels_error"]) == (3, None)
        assert status["canary_percent"] == 0.0 and answered_by(app) == "3"
        assert fallback_metrics(app.get("/metrics").text) == {"labels_file": 0.0,
                                                              "champion": 0.0}


def test_a_challenger_that_is_not_published_leaves_its_share_to_the_champion(model, tmp_path):
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    write_labels(base, {"champion": 1, "challenger": 7})
    manager = ModelManager(base.uri, "penguins", clock=Clock())
    with client(manager, canary_percent=100) as app:
        manager.poll_once()
        status = app.get("/readyz").json()
        assert status["version"] == 1 and status["canary_percent"] == 0.0
        assert [s["reason"] for s in status["skipped"]] == [
            "labelled 'challenger' but not a published version"]
        assert {answered_by(app, rid=f"r{i}") for i in range(10)} == {"1"}
        assert app.post("/v1/models/penguins/labels/challenger:predict",
                        json={"instances": [ROW]}).status_code == 404


# -- through a real `conveyor serve` process ------------------------------------------------


def call(url: str, body: dict | None = None):
    """(status, body, headers: case-insensitive)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


class Serve:
    """`conveyor serve` on a free loopback port, polling every 0.3 s; stderr in a file."""

    def __init__(self, base_uri: str, tmp_path: Path, tag: str):
        self.url = f"http://127.0.0.1:{free_ports(1)[0]}"
        self.log_path = tmp_path / f"{tag}-stderr.txt"
        with self.log_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
                 "--model-base-path", base_uri,
                 "--model-name", "penguins", "--port", self.url.rsplit(":", 1)[1],
                 "--poll-seconds", "0.3"], stdout=subprocess.DEVNULL, stderr=stderr,
                env=dict(os.environ))
        try:
            self.wait_for(lambda: self.ready() is not None, "/readyz to answer 200")
        except AssertionError:
            self.stop()
            raise

    def ready(self) -> dict | None:
        try:
            status, text, _ = call(f"{self.url}/readyz")
        except OSError:
            return None
        return json.loads(text) if status == 200 else None

    def metrics(self) -> dict[str, float]:
        return fallback_metrics(call(f"{self.url}/metrics")[1])

    def answered_by(self) -> str:
        status, text, headers = call(f"{self.url}{PREDICT}", {"instances": [ROW]})
        assert status == 200, text
        return headers["X-Model-Version"]

    def wait_for(self, condition, what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"gave up waiting for {what}: {self.log()}"
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


@pytest.mark.parametrize("where", ["local", "gs"])
def test_conveyor_serve_answers_through_a_broken_labels_file_and_a_deleted_champion(
        model, tmp_path, request, where):
    base = base_path(where, tmp_path, request)
    base.publish(model)
    base.publish(model)
    write_labels(base, b"{not json")

    serve = Serve(base.uri, tmp_path, "first")
    try:
        status = serve.ready()
        assert status["version"] == 2 and "labels.json: not JSON" in status["labels_error"]
        assert "serving the newest version that loads, 2" in status["fallback"]
        assert serve.answered_by() == "2"
        assert serve.metrics() == {"labels_file": 1.0, "champion": 1.0}
        assert "penguins: ignoring the labels file: " in serve.log()

        write_labels(base, {"champion": 1})
        serve.wait_for(lambda: serve.ready()["version"] == 1, "the fixed champion")
        assert serve.ready()["labels_error"] is None and serve.answered_by() == "1"
        assert serve.metrics() == {"labels_file": 0.0, "champion": 0.0}

        write_labels(base, {"champion": 5})  # a version that is not published
        serve.wait_for(lambda: serve.ready()["fallback"] is not None, "the fallback")
        assert serve.ready()["fallback"].endswith("serving the last good champion, version 1")
        assert serve.answered_by() == "1" and serve.metrics()["champion"] == 1.0
    finally:
        serve.stop()

    serve = Serve(base.uri, tmp_path, "restarted")
    try:
        status = serve.ready()
        assert status["version"] == 2 and status["labels"] == {"champion": 5}
        assert status["fallback"] == ("the champion label names version 5, which is not "
                                      "published (any more): serving the newest version that "
                                      "loads, 2")
        assert serve.answered_by() == "2" and serve.metrics()["champion"] == 1.0
        assert "Traceback" not in serve.log()
    finally:
        serve.stop()
