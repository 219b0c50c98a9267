"""Names `conveyor serve` takes (issue 25, classes 13 and 14).

Version folders: only ASCII digits within int64 are a version. Before, a folder numbered past
int64 was served as the newest version, and `/versions/١` (an Arabic-Indic one) was answered by
version 1; now such folders are skipped with a log line and listed on /readyz, and such a path
is 404. Model names: one that no /v1/models/NAME URL reaches is refused at start, before any
model loads."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest
from support.serving import ROW, app_client

from conveyor.io.digest import digest
from conveyor.registry import MARKERS, ModelBasePath
from conveyor.serving import ModelNameError, check_model_name
from conveyor.serving.models import ModelManager

HUGE = "99999999999999999999"  # past int64


@pytest.fixture(scope="module")
def model(penguin_model):
    return penguin_model / "model"


def skipped_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "conveyor.serve" and "skipped folder" in r.getMessage()]


@pytest.mark.local
def test_local_folders_past_int64_or_not_ascii_are_skipped_with_a_log_line(model, tmp_path,
                                                                           caplog):
    caplog.set_level(logging.INFO, logger="conveyor.serve")
    root = tmp_path / "penguins"
    ModelBasePath(str(root)).publish(model)
    for name in (HUGE, "١"):  # good SavedModels, under names that are not versions
        shutil.copytree(model, root / name)
    manager = ModelManager(str(root), "penguins")
    with app_client(manager) as app:
        manager.poll_once()
        manager.poll_once()
        status = app.get("/readyz").json()
        assert status["version"] == 1 and status["loaded_versions"] == [1], status
        reasons = {s["version"]: s["reason"] for s in status["skipped"]}
        assert "past the largest version number" in reasons[HUGE]
        assert "only ASCII digits" in reasons["١"]
        assert sorted(skipped_lines(caplog)) == sorted(
            f"penguins: skipped folder {name} of {root}: {reasons[name]}" for name in reasons)
        body = {"instances": [ROW]}
        assert app.post("/v1/models/penguins/versions/1:predict", json=body).status_code == 200
        for name in ("١", HUGE, "9" * 400):  # no such version: 404, never version 1 or a 500
            answer = app.post(f"/v1/models/penguins/versions/{name}:predict", json=body)
            assert answer.status_code == 404, (name, answer.text)


@pytest.mark.local
def test_a_gs_version_committed_past_int64_is_never_served(model, tmp_path, bucket, caplog):
    """A commit marker and files forged for version 99999999999999999999 (complete, hashes
    right): before, it was the newest published version and served."""
    from conveyor import gcp

    caplog.set_level(logging.INFO, logger="conveyor.serve")
    base = ModelBasePath(f"gs://{bucket('serve-names')}/{tmp_path.name}/penguins")
    base.publish(model)
    store = gcp.storage_client().bucket(base.bucket_name)
    hashes = digest(model)
    for rel in hashes:
        store.blob(base._key(f"{HUGE}/{rel}")).upload_from_filename(str(model / rel))
    store.blob(base._key(f"{MARKERS}/committed/{HUGE}")).upload_from_string(json.dumps(
        {"version": HUGE, "files": sorted(hashes), "sha256": hashes}))
    manager = ModelManager(base.uri, "penguins", cache_dir=str(tmp_path / "cache"))
    manager.poll_once()
    assert manager.current.version == 1 and sorted(manager.loaded) == [1]
    [entry] = manager.skipped()
    assert entry["version"] == HUGE and "past the largest version number" in entry["reason"]
    assert len(skipped_lines(caplog)) == 1


BAD_NAMES = ["penguins/v2", "a:b", "50%", "my model", "..", ".", "", "-x", "_x", "pingüino",
             "a\nb", "a?b", "a#b", "x" * 201]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_model_name_no_url_reaches_is_refused(name, tmp_path):
    with pytest.raises(ModelNameError, match="not a name requests can use in /v1/models/NAME"):
        check_model_name(name)
    with pytest.raises(ModelNameError):
        ModelManager(str(tmp_path), name)


def test_model_names_a_url_reaches_are_kept():
    for name in ("penguins", "Penguins-2.v3_final", "7", "x" * 200):
        assert check_model_name(name) == name


def test_conveyor_serve_refuses_such_a_name_before_anything_loads(tmp_path):
    """Before: serve started and answered 404 to every /v1/models/penguins/v2:predict."""
    ModelBasePath(str(tmp_path / "penguins")).publish(_tiny_model(tmp_path))
    done = subprocess.run([sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
                           "--model-base-path",
                           str(tmp_path / "penguins"), "--model-name", "penguins/v2",
                           "--port", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("conveyor: error: --model-name: 'penguins/v2' is not a "
                                  "name requests can use in /v1/models/NAME"), done.stderr
    assert "serving version" not in done.stderr and not done.stdout


def _tiny_model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "saved_model.pb").write_text("a graph that would never be loaded")
    return folder
