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
import shutil
from pathlib import Path

import pytest
from support.serving import ROW, ManualClock, Serve, app_client, call

from conveyor.registry import LABELS, MARKERS, ModelBasePath
from conveyor.serving.models import ModelManager

pytestmark = [pytest.mark.local]
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
                           clock=ManualClock())
    with app_client(manager) as app:
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
    running = ModelManager(base.uri, "penguins", cache_dir=str(tmp_path / "a"),
                           clock=ManualClock())
    with app_client(running, canary_percent=50) as app:
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

    restarted = ModelManager(base.uri, "penguins", cache_dir=str(tmp_path / "b"),
                             clock=ManualClock())
    with app_client(restarted, canary_percent=50) as app:
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
    clock = ManualClock()
    manager = ModelManager(base.uri, "penguins", clock=clock)
    with app_client(manager) as app:
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
                           clock=ManualClock())
    with app_client(manager, canary_percent=100) as app:
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
    manager = ModelManager(base.uri, "penguins", clock=ManualClock())
    with app_client(manager, canary_percent=100) as app:
        manager.poll_once()
        status = app.get("/readyz").json()
        assert status["version"] == 1 and status["canary_percent"] == 0.0
        assert [s["reason"] for s in status["skipped"]] == [
            "labelled 'challenger' but not a published version"]
        assert {answered_by(app, rid=f"r{i}") for i in range(10)} == {"1"}
        assert app.post("/v1/models/penguins/labels/challenger:predict",
                        json={"instances": [ROW]}).status_code == 404


# -- through a real `conveyor serve` process ------------------------------------------------


def answered_by_process(serve: Serve) -> str:
    """The version that answered a predict of one ROW by a `conveyor serve` process."""
    status, text, headers = serve.predict()
    assert status == 200, text
    return headers["X-Model-Version"]


def fallback_counts(serve: Serve) -> dict[str, float]:
    return fallback_metrics(call(f"{serve.url}/metrics")[1])


@pytest.mark.parametrize("where", ["local", "gs"])
def test_conveyor_serve_answers_through_a_broken_labels_file_and_a_deleted_champion(
        model, tmp_path, request, where):
    base = base_path(where, tmp_path, request)
    base.publish(model)
    base.publish(model)
    write_labels(base, b"{not json")

    serve = Serve(base.uri, tmp_path, tag="first", poll="0.3")
    try:
        status = serve.ready()
        assert status["version"] == 2 and "labels.json: not JSON" in status["labels_error"]
        assert "serving the newest version that loads, 2" in status["fallback"]
        assert answered_by_process(serve) == "2"
        assert fallback_counts(serve) == {"labels_file": 1.0, "champion": 1.0}
        assert "penguins: ignoring the labels file: " in serve.log()

        write_labels(base, {"champion": 1})
        serve.wait_for(lambda: serve.ready()["version"] == 1, "the fixed champion")
        assert serve.ready()["labels_error"] is None and answered_by_process(serve) == "1"
        assert fallback_counts(serve) == {"labels_file": 0.0, "champion": 0.0}

        write_labels(base, {"champion": 5})  # a version that is not published
        serve.wait_for(lambda: serve.ready()["fallback"] is not None, "the fallback")
        assert serve.ready()["fallback"].endswith("serving the last good champion, version 1")
        assert answered_by_process(serve) == "1" and fallback_counts(serve)["champion"] == 1.0
    finally:
        serve.stop()

    serve = Serve(base.uri, tmp_path, tag="restarted", poll="0.3")
    try:
        status = serve.ready()
        assert status["version"] == 2 and status["labels"] == {"champion": 5}
        assert status["fallback"] == ("the champion label names version 5, which is not "
                                      "published (any more): serving the newest version that "
                                      "loads, 2")
        assert answered_by_process(serve) == "2" and fallback_counts(serve)["champion"] == 1.0
        assert "Traceback" not in serve.log()
    finally:
        serve.stop()
