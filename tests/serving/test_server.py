"""`conveyor serve` as a real process on loopback, queried over HTTP like TensorFlow Serving."""

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]
ROWS = [
    {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
     "flipper_length_mm": 218.0, "body_mass_g": 4950.0, "sex": "female", "year": 2008},
    {"island": "Atlantis", "bill_length_mm": None, "bill_depth_mm": 18.1,
     "flipper_length_mm": 190.0, "body_mass_g": 3700.0, "sex": "", "year": 2007},
]


@pytest.fixture(scope="module")
def model(penguin_model):
    return penguin_model / "model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Serve:
    """A `conveyor serve` process on a free loopback port, its stderr (the log) in a file."""

    def __init__(self, base_uri: str, tmp_path, tag: str = "serve"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scratch = tmp_path / f"{tag}-tmp"  # the server's TMPDIR: its version cache
        self.scratch.mkdir()
        self.log_path = tmp_path / f"{tag}-stderr.txt"
        with self.log_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
                 "--model-base-path", base_uri,
                 "--model-name", "penguins", "--port", str(self.port), "--poll-seconds", "0.5"],
                stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, "TMPDIR": str(self.scratch)})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if call(f"{self.url}/readyz")[0] == 200:
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, self.log()
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"conveyor serve did not get ready: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def ready(self) -> dict:
        status, text = call(f"{self.url}/readyz")
        assert status == 200, text
        return json.loads(text)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        # Stopped by SIGTERM, it removes the copies of the versions it fetched.
        assert not list(self.scratch.glob("conveyor-serve-*")), \
            "conveyor serve left its cache behind"


@pytest.fixture()
def server(model, tmp_path, bucket):
    base = ModelBasePath(f"gs://{bucket('serve-test')}/{tmp_path.name}/penguins")
    base.publish(model)
    serve = Serve(base.uri, tmp_path)
    yield serve.url, base
    serve.stop()


def own_outputs(model_dir, rows):
    import tensorflow as tf

    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    spec = serve.structured_input_signature[1]
    columns = {k: [r[k] for r in rows] for k in spec}
    columns = {k: [float("nan") if v is None else v for v in vs] if spec[k].dtype.is_floating
               else vs for k, vs in columns.items()}
    out = serve(**{k: tf.constant(v, dtype=spec[k].dtype) for k, v in columns.items()})
    return {k: v.numpy().tolist() for k, v in out.items()}


def test_both_request_formats_answer_what_the_saved_model_answers(server, model):
    url, _ = server
    status, text = call(f"{url}/v1/models/penguins:predict", {"instances": ROWS})
    assert status == 200, text
    predictions = json.loads(text)["predictions"]
    expected = own_outputs(model, ROWS)
    for i, row in enumerate(predictions):
        assert row["class_id"] == expected["class_id"][i]
        assert all(math.isclose(a, b, abs_tol=1e-6)
                   for a, b in zip(row["probabilities"], expected["probabilities"][i]))
        assert row["class_label"] == expected["class_label"][i].decode()
    columnar = {"inputs": {k: [r[k] for r in ROWS] for k in ROWS[0]}}
    status, text = call(f"{url}/v1/models/penguins/versions/1:predict", columnar)
    assert status == 200, text
    assert json.loads(text)["outputs"]["class_id"] == expected["class_id"]


def test_status_metadata_metrics_and_health(server):
    url, _ = server
    status, text = call(f"{url}/v1/models/penguins")
    assert status == 200
    assert json.loads(text)["model_version_status"][0] == {
        "version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    meta = json.loads(call(f"{url}/v1/models/penguins/metadata")[1])
    inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["island"]["dtype"] == "DT_STRING" and inputs["year"]["dtype"] == "DT_FLOAT"
    call(f"{url}/v1/models/penguins:predict", {"instances": ROWS})
    metrics = call(f"{url}/metrics")[1]
    assert 'conveyor_serving_requests_total{model="penguins",status="200",version="1"}' in metrics
    assert "conveyor_serving_request_seconds_bucket" in metrics
    assert 'conveyor_serving_loaded_version{model="penguins"} 1.0' in metrics
    assert call(f"{url}/healthz") == (200, "ok")


@pytest.mark.parametrize("body, status, words", [
    ({"instances": [{k: v for k, v in ROWS[0].items() if k != "island"}]}, 400,
     "instances[0] is missing input(s) ['island']"),
    ({"instances": [{**ROWS[0], "bill_length_mm": "long"}]}, 400,
     "input 'bill_length_mm' expects numbers; value #0 is 'long'"),
    ({"instances": [{**ROWS[0], "island": 3}]}, 400, "input 'island' expects strings"),
    ({"instances": [{**ROWS[0], "colour": "blue"}]}, 400, "unknown input(s) ['colour']"),
    ({"instances": []}, 400, "non-empty list"),
    ({"rows": []}, 400, "needs 'instances'"),
    ({"inputs": {"island": ["Biscoe"]}}, 400, "missing input(s)"),
])
def test_bad_requests_get_clear_400s(server, body, status, words):
    url, _ = server
    got, text = call(f"{url}/v1/models/penguins:predict", body)
    assert got == status and words in json.loads(text)["error"], text


def test_unknown_model_or_version_is_404_and_bad_json_is_400(server):
    url, _ = server
    assert call(f"{url}/v1/models/other:predict", {"instances": ROWS})[0] == 404
    assert call(f"{url}/v1/models/penguins/versions/7")[0] == 404
    request = urllib.request.Request(f"{url}/v1/models/penguins:predict", data=b"{nope",
                                     method="POST")
    try:
        urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and "not JSON" in json.loads(exc.read())["error"]


def served_counts(url: str) -> dict[int, int]:
    """Predict requests answered 200 so far, by model version, from /metrics."""
    counts = {}
    for line in call(f"{url}/metrics")[1].splitlines():
        if line.startswith("conveyor_serving_requests_total{") and 'status="200"' in line:
            version = int(line.split('version="')[1].split('"')[0])
            counts[version] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def wait_for(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def test_new_versions_are_hot_swapped_without_failing_requests(server, model):
    """4 keep-alive clients predict non-stop while 3 versions are pushed, one after the other;
    each version must answer requests before the next is pushed. Not one request may fail or
    get a different answer (every version is the same model)."""
    import http.client
    import threading

    url, base = server
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"instances": ROWS})
    expected = own_outputs(model, ROWS)["class_id"]
    failures, answered, stop = [], [0], threading.Event()
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            try:
                conn.request("POST", "/v1/models/penguins:predict", body,
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                status, text = response.status, response.read().decode()
                ok = status == 200 and [p["class_id"] for p in
                                        json.loads(text)["predictions"]] == expected
            except (OSError, http.client.HTTPException, ValueError) as exc:
                status, text, ok = None, repr(exc), False
            with lock:
                if ok:
                    answered[0] += 1
                else:
                    failures.append((status, text[:300]))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: served_counts(url).get(1, 0) > 0, "version 1 to answer")
        for version in (2, 3, 4):
            assert base.publish(model) == version
            wait_for(lambda version=version: served_counts(url).get(version, 0) >= 20,
                     f"version {version} to answer 20 requests")
    finally:
        stop.set()
        for t in threads:
            t.join()
    counts = served_counts(url)
    assert not failures, f"{len(failures)} failed of {answered[0] + len(failures)}: {failures[:3]}"
    assert sorted(counts) == [1, 2, 3, 4] and sum(counts.values()) >= answered[0] > 0
    status = json.loads(call(f"{url}/v1/models/penguins")[1])["model_version_status"]
    assert [s["version"] for s in status] == ["4", "3"]  # the two newest stay loaded


def predicts(url: str, version: int) -> None:
    status, text = call(f"{url}/v1/models/penguins:predict", {"instances": ROWS})
    assert status == 200, text
    assert served_counts(url).get(version, 0) > 0, f"version {version} did not answer"


def skipped(ready: dict) -> dict[str, dict]:
    return {s["version"]: s for s in ready["skipped"]}


def test_a_broken_newest_version_never_takes_the_server_down(model, tmp_path):
    """A local base path where every version newer than 1 is broken in its own way: serve starts
    on 1 and says why each newer one is skipped; a good version pushed later is swapped in (and
    logged); a half-copied newest version is skipped after a restart too, tried again with
    backoff and served once its copy is complete."""
    import shutil

    base = ModelBasePath(str(tmp_path / "penguins"))
    assert base.publish(model) == 1
    root = tmp_path / "penguins"
    shutil.copytree(model, root / "2")  # a corrupt graph: saved_model.pb cut in half
    graph = (root / "2" / "saved_model.pb").read_bytes()
    (root / "2" / "saved_model.pb").write_bytes(graph[:len(graph) // 2])
    (root / "3").mkdir()  # not a SavedModel at all
    (root / "3" / "README.md").write_text("models go here\n")
    shutil.copytree(model, root / "007")  # a good model under a name no push writes

    serve = Serve(base.uri, tmp_path, "first")
    try:
        ready = serve.ready()
        assert (ready["model"], ready["version"], ready["state"]) == ("penguins", 1, "AVAILABLE")
        skips = skipped(ready)
        assert sorted(skips) == ["007", "2", "3"], ready
        assert "Cannot parse file" in skips["2"]["reason"] and skips["2"]["attempts"] >= 1
        assert skips["3"]["reason"].startswith("no saved_model.pb")
        assert "'007' is not a version number" in skips["007"]["reason"]
        predicts(serve.url, 1)
        log = serve.log()
        assert "penguins: serving version 1 (was none); loaded and warmed up in" in log, log
        assert "skipping newer: 2, 3, 007" in log
        assert "penguins: skipped version 2 (load attempt 1 failed" in log
        assert log.count("skipped folder 3 of") == 1  # once, not at every poll

        good = base.publish(model)  # push numbers past every digit folder (007 counts as 7)
        wait_for(lambda: serve.ready()["version"] == good, f"version {good} to be served")
        assert f"penguins: serving version {good} (was 1); loaded and warmed up in" in serve.log()
        assert serve.ready()["skipped"] == []  # nothing newer than the served version is left
        predicts(serve.url, good)

        half = root / str(good + 1)  # a copy by hand, stopped after the graph
        half.mkdir()
        shutil.copy(model / "saved_model.pb", half / "saved_model.pb")
        wait_for(lambda: str(good + 1) in skipped(serve.ready()), "the half copy to be skipped")
        predicts(serve.url, good)
    finally:
        serve.stop()

    serve = Serve(base.uri, tmp_path, "restarted")
    try:
        ready = serve.ready()
        assert ready["version"] == good, ready
        failed = skipped(ready)[str(good + 1)]
        assert failed["attempts"] >= 1 and "variables" in failed["reason"], failed
        predicts(serve.url, good)
        assert f"serving version {good} (was none)" in serve.log()

        shutil.copytree(model, half, dirs_exist_ok=True)  # the copy completes
        wait_for(lambda: serve.ready()["version"] == good + 1, "the completed copy to be served")
        log = serve.log()
        assert f"serving version {good + 1} (was {good}); loaded and warmed up in" in log, log
        predicts(serve.url, good + 1)
        assert "Traceback" not in log
    finally:
        serve.stop()
