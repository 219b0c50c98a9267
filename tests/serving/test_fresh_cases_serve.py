"""Fresh cases for issue 25's serving classes (2, 4, 8, 10, 13, 14), written after the fixes and
run once against them: `conveyor serve` as a real process on loopback, as a user runs it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_ports
from support.serving import Serve, wait_for

from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]


@pytest.fixture(scope="module")
def model(penguin_model):
    return penguin_model / "model"


def two_versions(model: Path, root: Path) -> ModelBasePath:
    base = ModelBasePath(str(root))
    base.publish(model)
    base.publish(model)
    return base


# -- class 2: the labels file ---------------------------------------------------------------------

def test_an_empty_labels_file_at_start_serves_the_newest_version(model, tmp_path):
    base = two_versions(model, tmp_path / "penguins")
    (tmp_path / "penguins" / "labels.json").write_text("")
    serve = Serve(base.uri, tmp_path, tag="empty", poll="0.3")
    try:
        status, ready = serve.readyz()
        assert status == 200 and ready["version"] == 2, ready
        assert "labels" in json.dumps(ready).lower(), ready
        assert serve.predict()[0] == 200
    finally:
        serve.stop()


def test_labels_naming_versions_that_are_gone_keep_every_request_answered(model, tmp_path):
    base = two_versions(model, tmp_path / "penguins")
    (tmp_path / "penguins" / "labels.json").write_text(
        json.dumps({"champion": 9, "challenger": 12}))
    serve = Serve(base.uri, tmp_path, "--canary-percent", "50", tag="gone", poll="0.3")
    try:
        status, ready = serve.readyz()
        assert status == 200, ready
        answers = [serve.predict()[0] for _ in range(20)]
        assert answers == [200] * 20, answers
    finally:
        serve.stop()


def test_labels_broken_while_serving_keep_the_champion_and_recover_when_fixed(model, tmp_path):
    base = two_versions(model, tmp_path / "penguins")
    labels = tmp_path / "penguins" / "labels.json"
    labels.write_text(json.dumps({"champion": 1}))
    serve = Serve(base.uri, tmp_path, tag="broken", poll="0.3")
    try:
        assert serve.readyz()[1]["version"] == 1
        labels.write_text("[1, 2]")  # JSON, but not labels
        time.sleep(3)
        status, ready = serve.readyz()
        assert status == 200 and ready["version"] == 1, ready  # the last good champion
        assert serve.predict()[0] == 200
        labels.write_text(json.dumps({"champion": 2}))
        wait_for(lambda: serve.readyz()[1]["version"] == 2, "the fixed labels to be followed")
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
    serve = Serve(base.uri, tmp_path, tag="names", poll="0.3")
    try:
        status, ready = serve.readyz()
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
        [sys.executable, "-m", "conveyor", "serve", "--model-base-path", base.uri,
         "--model-name", name, "--port", str(free_ports(1)[0]), "--grpc-port", "0"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "model-name" in done.stderr or "model name" in done.stderr.lower(), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert time.monotonic() - started < 60


# -- class 8: slow clients and polling ------------------------------------------------------------

def test_a_body_that_stops_half_way_is_cut_off_while_others_are_answered(model, tmp_path):
    base = two_versions(model, tmp_path / "penguins")
    serve = Serve(base.uri, tmp_path, "--read-timeout", "2", tag="slow", poll="0.3")
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
    serve = Serve(base.uri, tmp_path, tag="once", poll="0")
    try:
        base.publish(model)
        time.sleep(1)
        before = serve.cpu_seconds()
        time.sleep(5)
        used = serve.cpu_seconds() - before
        assert used < 0.5, f"{used:.2f} CPU seconds in 5 s idle"
        assert serve.readyz()[1]["version"] == 1  # loaded once, never polled again
    finally:
        serve.stop()


# -- class 10: leftovers after kill -9 ------------------------------------------------------------

def test_a_restart_after_kill_9_removes_its_predecessors_leftovers(model, tmp_path, bucket):
    base = ModelBasePath(f"gs://{bucket('fresh-serve')}/{tmp_path.name}/penguins")
    base.publish(model)
    logs = tmp_path / "logs"
    serve = Serve(base.uri, tmp_path, "--log-predictions", str(logs), tag="killed",
                  poll="0.3")
    for _ in range(5):
        assert serve.predict()[0] == 200
    serve.kill()
    left = sorted(p.name for p in serve.scratch.iterdir())
    assert left, "nothing to clean: the case does not test anything"
    again = Serve(base.uri, tmp_path, "--log-predictions", str(logs), tag="killed",
                  poll="0.3")
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
    serve = Serve(base.uri, tmp_path, tag="marker", poll="0.3")
    try:
        status, ready = serve.readyz()
        assert status == 200 and ready["version"] == 1, ready
    finally:
        serve.stop()
