"""`conveyor serve`'s version handling in this process (`ModelManager` and `/readyz`): which
version it serves when newer ones are broken, how often it tries a broken one again, what it
logs, on a local and on a gs:// base path. A fake clock drives the backoff, so nothing waits."""

from __future__ import annotations

import logging
import shutil

import pytest
from support.serving import ROW, ManualClock, app_client

from conveyor.registry import ModelBasePath
from conveyor.serving.models import ModelManager

pytestmark = [pytest.mark.local]
DATA = "variables/variables.data-00000-of-00001"


@pytest.fixture(scope="module")
def model(penguin_model):
    return penguin_model / "model"


def lines(caplog, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "conveyor.serve" and words in r.getMessage()]


def swaps(caplog) -> list[str]:
    return [m for m in lines(caplog, "") if m.startswith("penguins: serving version ")]


def test_a_failing_version_is_retried_with_capped_doubling_backoff_and_logged_per_attempt(
        model, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="conveyor.serve")
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    base.publish(model)
    missing = tmp_path / "penguins" / "2" / DATA
    kept = missing.read_bytes()
    missing.unlink()  # a store that lost a file, for a while
    clock = ManualClock()
    manager = ModelManager(base.uri, "penguins", clock=clock)

    manager.poll_once()
    assert manager.current.version == 1 and set(manager.errors) == {2}
    delays = []
    while len(delays) < 11:
        [entry] = manager.skipped()
        assert entry["version"] == "2" and entry["attempts"] == len(delays) + 1
        assert "variables.data-00000-of-00001" in entry["reason"], entry
        delays.append(entry["next_attempt_in_seconds"])
        for _ in range(5):  # polls before the backoff is over try nothing, log nothing
            clock.now += delays[-1] / 6
            manager.poll_once()
        assert len(lines(caplog, "skipped version 2 (load attempt")) == len(delays)
        clock.now += delays[-1] / 6 + 0.01
        manager.poll_once()
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert manager.current.version == 1 and manager.load_failures == 12
    assert len(lines(caplog, "skipped version 2 (load attempt 12 failed, next in 300 s; "
                             "serving version 1): ")) == 1

    missing.write_bytes(kept)  # the store heals; the next attempt loads it
    clock.now += 300
    manager.poll_once()
    assert manager.current.version == 2 and manager.skipped() == [] and not manager.errors
    [swap] = swaps(caplog)[1:]
    assert swap.startswith("penguins: serving version 2 (was 1); loaded and warmed up in ")
    assert sorted(manager.loaded) == [1, 2]


def test_at_start_the_newest_version_that_loads_is_served_and_readyz_names_the_rest(
        model, tmp_path, caplog):
    """Versions 1 and 2 good, 3 half-copied (no variables), 4 without a serving signature
    (a model saved by hand), 5 a text file where the graph should be: version 2 is served."""
    import tensorflow as tf

    caplog.set_level(logging.INFO, logger="conveyor.serve")
    root = tmp_path / "penguins"
    base = ModelBasePath(str(root))
    base.publish(model)
    base.publish(model)
    (root / "3").mkdir()
    shutil.copy(model / "saved_model.pb", root / "3")
    tf.saved_model.save(tf.Module(), str(root / "4"))
    shutil.copytree(model, root / "5")
    (root / "5" / "saved_model.pb").write_text("see README\n")
    (root / "5.tmp").mkdir()  # not a version number: not a version, not reported
    (root / "６").mkdir()  # a fullwidth digit: never a version number, reported as such

    manager = ModelManager(base.uri, "penguins", clock=ManualClock())
    with app_client(manager) as app:
        before = app.get("/readyz")
        assert before.status_code == 503 and before.json()["state"] == "LOADING"
        manager.poll_once()
        ready = app.get("/readyz")
        predicted = app.post("/v1/models/penguins:predict", json={"instances": [ROW]})
        metrics = app.get("/metrics").text
    assert ready.status_code == 200
    status = ready.json()
    assert (status["model"], status["version"], status["loaded_versions"]) == ("penguins", 2, [2])
    reasons = {s["version"]: s["reason"] for s in status["skipped"]}
    assert list(reasons) == ["６", "5", "4", "3"]  # newest first, never-versions before
    assert "only ASCII digits" in reasons["６"]
    assert "Cannot parse file" in reasons["5"]
    assert "no 'serving_default' signature" in reasons["4"]
    assert "variables" in reasons["3"]
    assert predicted.status_code == 200, predicted.text
    assert 'conveyor_serving_skipped_versions{model="penguins"} 4.0' in metrics
    assert 'conveyor_serving_load_failures{model="penguins"} 3.0' in metrics
    assert 'conveyor_serving_loaded_version{model="penguins"} 2.0' in metrics
    [swap] = swaps(caplog)
    assert swap.startswith("penguins: serving version 2 (was none); loaded and warmed up in ")
    assert float(swap.split(" in ")[1].split(" s")[0]) > 0  # real seconds, not the fake clock
    assert swap.endswith("; skipping newer: 3, 4, 5, ６ (see /readyz)")
    assert all("\n" not in r.getMessage() for r in caplog.records)  # one line each


def test_nothing_loadable_answers_503_with_the_reasons_then_recovers(model, tmp_path):
    root = tmp_path / "penguins"
    shutil.copytree(model, root / "1")
    (root / "1" / "saved_model.pb").write_bytes(b"")
    manager = ModelManager(str(root), "penguins", clock=ManualClock())
    manager.poll_once()
    with app_client(manager) as app:
        ready = app.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["state"] == "UNAVAILABLE" and body["version"] is None
        assert body["error"] == "no version of penguins is loaded: no version loads"
        assert body["skipped"][0]["version"] == "1" and "MetaGraph" in body["skipped"][0]["reason"]
        assert app.get("/healthz").status_code == 200
        assert app.post("/v1/models/penguins:predict", json={"instances": [ROW]}).status_code \
            == 404
        ModelBasePath(str(root)).publish(model)  # version 2
        manager.poll_once()
        assert app.get("/readyz").json()["version"] == 2
        answer = app.post("/v1/models/penguins:predict", json={"instances": [ROW]})
        assert answer.status_code == 200, answer.text


def test_a_missing_base_path_or_bucket_keeps_the_server_up(tmp_path, bucket, caplog):
    caplog.set_level(logging.INFO, logger="conveyor.serve")
    empty = ModelManager(str(tmp_path / "nothing-here"), "penguins", clock=ManualClock())
    empty.poll_once()
    assert empty.status()["state"] == "UNAVAILABLE" and empty.status()["skipped"] == []
    clock = ManualClock()
    missing = ModelManager("gs://no-such-bucket-here/models", "penguins", clock=clock)
    for _ in range(5):
        missing.poll_once()
    status = missing.status()
    assert status["state"] == "UNAVAILABLE" and "no-such-bucket-here" in status["polling_error"]
    assert len(lines(caplog, "polling gs://no-such-bucket-here/models failed")) == 1
    clock.now += 61  # a failure that persists is repeated once a minute, not at every poll
    missing.poll_once()
    assert len(lines(caplog, "failed (6 in a row)")) == 1


def test_a_gs_base_path_heals_a_failed_download_and_a_corrupt_committed_graph(
        model, tmp_path, bucket, caplog):
    """Version 2's variables are missing from the bucket (its download fails), version 3's graph
    was overwritten with half of itself after it was committed (its recorded SHA-256 differs),
    and 4/ has files but no commit marker: version 1 is served. Each failed copy is removed from
    the cache, so when the objects are put back the next attempt downloads them afresh and the
    newest good version is served."""
    from conveyor import gcp

    caplog.set_level(logging.INFO, logger="conveyor.serve")
    base = ModelBasePath(f"gs://{bucket('serve-versions')}/{tmp_path.name}/penguins")
    for _ in range(3):
        base.publish(model)
    store = gcp.storage_client().bucket(base.bucket_name)
    store.blob(base._key(f"2/{DATA}")).delete()
    graph = (model / "saved_model.pb").read_bytes()
    store.blob(base._key("3/saved_model.pb")).upload_from_string(graph[:len(graph) // 2])
    store.blob(base._key("4/saved_model.pb")).upload_from_string(graph)
    cache = tmp_path / "cache"
    clock = ManualClock()
    manager = ModelManager(base.uri, "penguins", cache_dir=str(cache), clock=clock)

    manager.poll_once()
    assert manager.current.version == 1
    reasons = {s["version"]: s["reason"] for s in manager.skipped()}
    assert list(reasons) == ["4", "3", "2"], reasons
    assert reasons["4"].startswith("not published: no commit marker")
    assert "SHA-256 differs from the recorded one for ['saved_model.pb']" in reasons["3"]
    assert "NotFound" in reasons["2"] and "variables.data" in reasons["2"]
    assert sorted(p.name for p in cache.iterdir()) == ["1"]  # no failed copy left behind

    store.blob(base._key(f"2/{DATA}")).upload_from_filename(str(model / DATA))
    clock.now += 2
    manager.poll_once()  # 3 is tried first (newest), fails again; 2 loads
    assert manager.current.version == 2
    assert [s["version"] for s in manager.skipped()] == ["4", "3"]
    store.blob(base._key("3/saved_model.pb")).upload_from_string(graph)
    manager.poll_once()  # 3 is in its backoff (4 s after its second failure)
    assert manager.current.version == 2
    clock.now += 4
    manager.poll_once()
    assert manager.current.version == 3
    assert sorted(p.name for p in cache.iterdir()) == ["2", "3"]  # version 1 was let go
    assert [s["version"] for s in manager.skipped()] == ["4"]
    assert len(lines(caplog, "skipped folder 4 of")) == 1
    assert [m.split(";")[0] for m in swaps(caplog)] == [
        "penguins: serving version 1 (was none)", "penguins: serving version 2 (was 1)",
        "penguins: serving version 3 (was 2)"]
