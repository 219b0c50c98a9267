"""Everything read from a gs:// base path is untrusted: a commit marker whose file list would
write outside the cache (absolute paths, '..', backslashes, NUL...) or whose recorded SHA-256 do
not match the files is refused before the version can load, nothing of it stays on disk, and
`conveyor serve` keeps the version it serves (on the GCS emulator)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from support.serving import app_client

from conveyor.io.digest import digest
from conveyor.registry import GRAPH, MARKERS, ModelBasePath, UntrustedVersion

pytestmark = [pytest.mark.local]


def small_model(root: Path) -> Path:
    folder = root / "model"
    (folder / "variables").mkdir(parents=True)
    (folder / GRAPH).write_text("graph\n" * 100)
    (folder / "variables" / "variables.index").write_text("index")
    return folder


@pytest.fixture()
def base(bucket, tmp_path) -> ModelBasePath:
    return ModelBasePath(f"gs://{bucket('untrusted')}/{tmp_path.name}/penguins")


def store(base: ModelBasePath):
    from conveyor import gcp

    return gcp.storage_client().bucket(base.bucket_name)


def forge(base: ModelBasePath, version: int, files: dict[str, bytes], marker: dict) -> None:
    """Objects under <version>/ and a commit marker written by hand (not by conveyor)."""
    for rel, data in files.items():
        store(base).blob(base._key(f"{version}/{rel}")).upload_from_string(data)
    store(base).blob(base._key(f"{MARKERS}/committed/{version}")).upload_from_string(
        json.dumps(marker))


def escapes(tmp_path: Path) -> list[str]:
    """File lists that point outside the cache, each beside a real graph."""
    outside = tmp_path / "outside" / "escaped"
    return [str(outside), "../outside/escaped", "variables/../../outside/escaped",
            "../../outside/escaped", "a\\..\\..\\escaped", "a\x00b", "", ".", "a//b",
            "./saved_model.pb", "C:/escaped", "a/./b", "x\ny"]


@pytest.mark.parametrize("index", range(13))
def test_a_file_list_leaving_the_cache_is_refused_and_writes_nothing(base, tmp_path, index,
                                                                     caplog):
    bad = escapes(tmp_path)[index]
    # the object itself too, where the emulator stores one of that name (not NUL, not ".")
    objects = {GRAPH: b"graph", **({} if bad in ("a\x00b", ".") else {bad: b"pwned"})}
    forge(base, 1, objects, {"version": 1, "files": [GRAPH, bad]})
    cache = tmp_path / "cache" / "deeper"
    cache.mkdir(parents=True)
    with caplog.at_level(logging.ERROR, logger="conveyor.registry.base"), \
            pytest.raises(UntrustedVersion, match="refusing the version"):
        base.fetch(1, cache)
    assert os.listdir(cache) == []
    assert not (tmp_path / "outside").exists() and not (tmp_path / "cache" / "outside").exists()
    assert not list(tmp_path.rglob("escaped"))
    assert any("refusing the version" in r.getMessage() for r in caplog.records)


def test_a_file_not_matching_its_recorded_hash_is_refused(base, tmp_path):
    version = base.publish(small_model(tmp_path))
    store(base).blob(base._key(f"{version}/variables/variables.index")).upload_from_string(
        b"tampered after the commit")
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(UntrustedVersion, match=r"SHA-256 differs .*variables/variables.index"):
        base.fetch(version, cache)
    assert os.listdir(cache) == []


@pytest.mark.parametrize("hashes", [
    {GRAPH: "0" * 64},  # a listed file without a hash
    {GRAPH: "0" * 64, "variables/variables.index": "not hex"},
    ["0" * 64],
])
def test_recorded_hashes_that_cannot_be_checked_are_refused(base, tmp_path, hashes):
    files = {GRAPH: b"graph", "variables/variables.index": b"index"}
    forge(base, 1, files, {"version": 1, "files": sorted(files), "sha256": hashes})
    with pytest.raises(UntrustedVersion, match="sha256"):
        base.fetch(1, tmp_path)


def test_a_good_version_and_one_without_hashes_still_fetch(base, tmp_path):
    model = small_model(tmp_path)
    version = base.publish(model)
    assert digest(base.fetch(version, tmp_path / "a")) == digest(model)
    files = {GRAPH: b"graph", "variables/variables.index": b"index"}
    forge(base, 7, files, {"version": 7, "files": sorted(files)})  # before hashes were recorded
    assert sorted(digest(base.fetch(7, tmp_path / "b"))) == sorted(files)


def test_serve_keeps_its_version_when_a_newer_one_is_forged(penguin_model, base, tmp_path,
                                                            caplog):
    """conveyor serve's version manager and /readyz: version 2's marker lists '../' paths and
    version 3's graph does not match its hash; version 1 keeps serving, both are skipped."""
    from conveyor.serving.models import ModelManager

    model = penguin_model / "model"
    base.publish(model)
    files = {rel: (model / rel).read_bytes() for rel in digest(model)}
    bad = "../../escaped"
    forge(base, 2, {**files, bad: b"pwned"}, {"version": 2, "files": [*files, bad],
                                              "sha256": {**digest(model), bad: "0" * 64}})
    forge(base, 3, {**files, GRAPH: files[GRAPH][:100]},
          {"version": 3, "files": list(files), "sha256": digest(model)})
    cache = tmp_path / "cache"
    caplog.set_level(logging.INFO)
    manager = ModelManager(base.uri, "penguins", cache_dir=str(cache))
    manager.poll_once()
    assert manager.current.version == 1
    reasons = {s["version"]: s["reason"] for s in manager.skipped()}
    assert "'../../escaped'" in reasons["2"] and "refusing the version" in reasons["2"]
    assert "SHA-256 differs" in reasons["3"] and GRAPH in reasons["3"]
    assert sorted(p.name for p in cache.iterdir()) == ["1"]
    assert not list(tmp_path.rglob("escaped"))
    ready = app_client(manager).get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["version"] == 1
    assert {s["version"] for s in ready.json()["skipped"]} == {"2", "3"}
