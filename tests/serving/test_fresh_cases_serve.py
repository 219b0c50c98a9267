"""Fresh cases for issue 25's serving classes (2, 4, 8, 10, 13, 14), written after the fixes and
run once against them: `conveyor serve` as a real process on loopback, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]
ROW = {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
       "flipper_length_mm": 218.0, "body_mass_g": 4950.0, "sex": "female", "year": 2008}


@pytest.fixture(scope="module")
def model(penguin_model):
    return penguin_model / "model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body=None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Serve:
    def __init__(self, base_uri: str, tmp_path: Path, tag: str, *extra: str,
                 poll: str = "0.3", env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scratch = tmp_path / f"{tag}-tmp"
        self.scratch.mkdir(exist_ok=True)
        self.log_path = tmp_path / f"{tag}-stderr.txt"
        with self.log_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
                 "--model-base-path", base_uri,
                 "--model-name", "penguins", "--port", str(self.port), "--poll-seconds", poll,
                 *extra],
                stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, "TMPDIR": str(self.scratch), **(env or {})})
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

    def ready(self) -> tuple[int, dict]:
        status, text = call(f"{self.url}/readyz")
        return status, json.loads(text)

    def predict(self) -> tuple[int, str]:
        return call(f"{self.url}/v1/models/penguins:predict", {"instances": [ROW]})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def until(check, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def two_versions(model: Path, root: Path) -> ModelBasePath:
    base = ModelBasePath(str(root))
    base.publish(model)
    base.publish(model)
    return base


# -- class 2: the labels file ---------------------------------------------------------------------

def test_an_empty_labels_file_at_start_serves_the_newest_version(model, tmp_path):
    base = two_versions(model, tmp_path / "penguins")
    (tmp_path / "penguins" / "labels.json").write_text("")
    serve = Serve(base.uri, tmp_path, "empty")
    try:
        status, ready = serve.ready()
        assert status == 200 and ready["version"] == 2, ready
        assert "labels" in json.dumps(ready).lower(), ready
        assert serve.predict()[0] == 200
    finally:
        serve.stop()


def test_labels_naming_versions_that_are_gone_keep_every_request_answered(model, tmp_path):
    base = two_versions(model, tmp_path / "penguins")
    (tmp_path / "penguins" / "labels.json").write_text(
        json.dumps({"champion": 9, "challenger": 12}))
    serve = Serve(base.uri, tmp_path, "gone", "--canary-percent", "50")
    try:
        status, ready = serve.ready()
        assert status == 200, ready
        answers = [serve.predict()[0] for _ in range(20)]
        assert answers == [200] * 20, answers
    finally:
        serve.stop()


def test_labels_broken_while_serving_keep_the_champion_and_recover_when_fixed(model, tmp_path):
    base = two_versions(model, tmp_path / "penguins")
    labels = tmp_path / "penguins" / "labels.json"
    labels.write_text(json.dumps({"champion": 1}))
    serve = Serve(base.uri, tmp_path, "broken")
    try:
        assert serve.ready()[1]["version"] == 1
        labels.write_text("[1, 2]")  # JSON, but not labels
        time.sleep(3)
        status, ready = serve.ready()
        assert status == 200 and ready["version"] == 1, ready  # the last good champion
        assert serve.predict()[0] == 200
        labels.write_text(json.dumps({"champion": 2}))
        until(lambda: serve.ready()[1]["version"] == 2, "the fixed labels to be followed")
    finally:
        serve.stop()


# -- class 13: version folder names ---------------------------------------------------------------

def test_folder_names_that_are_not_plain_decimal_versions_are_never_served(model, tmp_path):
    import shutil

    root = tmp_path / "penguins"
    base = ModelBasePath(str(root))
    base.publish(model)
    for name in ("\u0663", "1e3", "18446744073709551616", " 4", "+5", "\uff16"):
        shutil.copytree(model, root / name)
    serve = Serve(base.uri, tmp_path, "names")
    try:
        status, ready = serve.ready()
        assert status == 200 and ready["version"] == 1, ready
        assert serve.predict()[0] == 200
    finally:
        serve.stop()


# -- class 14: the model name ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pen guins", "a/b", "..", "caf\u00e9:latest", ""])
def test_a_model_name_no_url_can_reach_is_refused_at_start(model, tmp_path, name):
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
         "--model-base-path", base.uri,
         "--model-name", name, "--port", str(free_port())],
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "model-name" in done.stderr or "model name" in done.stderr.lower(), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert time.monotonic() - started < 60


# -- class 8: slow clients and polling ------------------------------------------------------------

def test_a_body_that_stops_half_way_is_cut_off_while_others_are_answered(model, tmp_path):
    base = two_versions(model, tmp_path / "penguins")
    serve = Serve(base.uri, tmp_path, "slow", "--read-timeout", "2")
    try:
        stuck = []
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", serve.port))
            s.sendall(b"POST /v1/models/penguins:predict HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"inst")
            stuck.append(s)
        assert serve.predict()[0] == 200
        time.sleep(6)
        closed = 0
        for s in stuck:
            s.settimeout(5)
            try:
                closed += s.recv(4096) is not None  # an answer (408/400) or EOF: closed
            except OSError:
                closed += 1
            s.close()
        assert closed == 50
        assert serve.predict()[0] == 200
    finally:
        serve.stop()


def test_poll_seconds_zero_loads_once_and_stays_idle(model, tmp_path):
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    serve = Serve(base.uri, tmp_path, "once", poll="0")
    try:
        base.publish(model)
        time.sleep(1)
        before = cpu_seconds(serve.proc.pid)
        time.sleep(5)
        used = cpu_seconds(serve.proc.pid) - before
        assert used < 0.5, f"{used:.2f} CPU seconds in 5 s idle"
        assert serve.ready()[1]["version"] == 1  # loaded once, never polled again
    finally:
        serve.stop()


# -- class 10: leftovers after kill -9 ------------------------------------------------------------

def test_a_restart_after_kill_9_removes_its_predecessors_leftovers(model, tmp_path, bucket):
    base = ModelBasePath(f"gs://{bucket('fresh-serve')}/{tmp_path.name}/penguins")
    base.publish(model)
    logs = tmp_path / "logs"
    serve = Serve(base.uri, tmp_path, "killed", "--log-predictions", str(logs))
    for _ in range(5):
        assert serve.predict()[0] == 200
    serve.proc.send_signal(signal.SIGKILL)
    serve.proc.wait(timeout=30)
    left = sorted(p.name for p in serve.scratch.iterdir())
    assert left, "nothing to clean: the case does not test anything"
    again = Serve(base.uri, tmp_path, "killed", "--log-predictions", str(logs))
    try:
        time.sleep(2)
        now = {p.name for p in again.scratch.iterdir()}
        assert not (set(left) & now), (left, now)
        temp = [p for p in logs.rglob("*") if p.is_file() and ".tmp" in p.name]
        assert all(str(again.proc.pid) in p.name for p in temp), temp
    finally:
        again.stop()


# -- class 4: what a bucket says about a version --------------------------------------------------

@pytest.mark.parametrize("marker", ["[]", "\"files\"", "{\"files\": {\"a\": 1}}", "null"])
def test_a_commit_marker_that_is_not_a_manifest_never_serves(model, tmp_path, bucket, marker):
    from conveyor import gcp

    base = ModelBasePath(f"gs://{bucket('fresh-serve')}/{tmp_path.name}/penguins")
    base.publish(model)
    base.publish(model)
    client = gcp.storage_client()
    name = bucket("fresh-serve")
    blobs = [b for b in client.list_blobs(name, prefix=f"{tmp_path.name}/penguins/")
             if "committed/2" in b.name]
    assert blobs, "no commit marker for version 2"
    blobs[0].upload_from_string(marker)
    serve = Serve(base.uri, tmp_path, "marker")
    try:
        status, ready = serve.ready()
        assert status == 200 and ready["version"] == 1, ready
    finally:
        serve.stop()
