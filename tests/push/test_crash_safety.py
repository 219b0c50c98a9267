"""Crash safety: push and ingest SIGKILLed at random points, then rerun.

A killed push never leaves a partial or changed version that a reader sees (conveyor's readers,
`conveyor serve`'s loader, nor TensorFlow Serving's view of `<base>/<v>/saved_model.pb`), and its
rerun leaves exactly one version holding the model. A killed ingest leaves a folder that
`Dataset` refuses, and its rerun into the same folder writes the same rows.

Killed training resumes from its checkpoint: tests/train/test_train.py
(`test_killed_training_resumes_from_its_checkpoint`); its export is staged in `<model>.partial`
and renamed, so the model folder is never half-written.

Kill times are seeded and spread over the measured duration of the operation, so each run covers
the same mix of phases (claim, uploads, commit) without depending on how fast the machine is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conveyor.io.digest import digest
from conveyor.registry import GRAPH, LOCK, MARKERS, ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]

TRIALS = 20
SEED = 8

PUBLISH = """
import json, sys, time
from conveyor.registry import ModelBasePath
base = ModelBasePath(sys.argv[1])
base.versions()  # connect before the clock starts
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
version, new = base.publish_if_changed(sys.argv[2])
print(json.dumps({"version": version, "new": new, "seconds": time.monotonic() - start}), flush=True)
"""


@pytest.fixture(scope="module")
def padded_model(penguin_model, tmp_path_factory) -> Path:
    """The session's penguins SavedModel with 6 MiB of extra files, so that a push lasts long
    enough (many files, one upload each) to be killed in the middle of its uploads."""
    model = tmp_path_factory.mktemp("padded") / "model"
    shutil.copytree(penguin_model / "model", model)
    rng = random.Random(SEED)
    for i in range(24):
        (model / "assets.extra" / f"padding-{i:02d}.bin").write_bytes(rng.randbytes(256 * 1024))
    return model


def variant(model: Path, trial: int, root: Path) -> Path:
    """A copy of `model` that differs in one small file: each trial pushes a distinct model."""
    out = root / f"model-{trial}"
    shutil.copytree(model, out)
    (out / "assets.extra" / "trial.txt").write_text(f"{trial}\n")
    return out


def md5s(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        out[str(path.relative_to(folder))] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def stored(base: ModelBasePath) -> dict[int, dict[str, str]]:
    """What a reader of the storage itself (TensorFlow Serving) finds: for each numbered folder
    under the base path, the MD5 of each of its files (for gs://, as the server computed it)."""
    if not base.gcs:
        root = Path(base.uri)
        if not root.is_dir():
            return {}
        return {int(p.name): md5s(p) for p in root.iterdir() if p.name.isdigit()}
    from conveyor import gcp

    prefix = base._key("")
    out: dict[int, dict[str, str]] = {}
    for blob in gcp.storage_client().list_blobs(base.bucket_name, prefix=prefix):
        head, _, rel = blob.name[len(prefix):].partition("/")
        if head.isdigit():
            out.setdefault(int(head), {})[rel] = base64.b64decode(blob.md5_hash).hex()
    return out


class Reader(threading.Thread):
    """Polls `versions()` and fetches each new version, as `conveyor serve` does; records any
    version whose files are not exactly one of the pushed models."""

    def __init__(self, base: ModelBasePath, models: dict[str, dict[str, str]], cache: Path):
        super().__init__(daemon=True)
        self.base, self.models, self.cache = base, models, cache
        self.seen: set[int] = set()
        self.partial: list[int] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for version in self.base.versions():
                if version not in self.seen:
                    self.seen.add(version)
                    if digest(self.base.fetch(version, self.cache)) not in list(
                            self.models.values()):
                        self.partial.append(version)
            time.sleep(0.005)


def start_publish(uri: str, model: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", PUBLISH, uri, str(model)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def publish_in_child(uri: str, model: Path) -> dict:
    """Publish in a child process; its result, and `wall`: seconds from "go" to its answer,
    the window the kills are spread over."""
    proc = start_publish(uri, model)
    start = time.monotonic()
    out, _ = proc.communicate("go\n", timeout=120)
    assert proc.returncode == 0
    return {**json.loads(out), "wall": time.monotonic() - start}


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_a_push_killed_at_random_points_never_exposes_or_changes_a_version(
        padded_model, tmp_path, where, bucket):
    uri = (f"gs://{bucket('crash-test')}/{tmp_path.name}/penguins" if where == "gcs"
           else str(tmp_path / "models" / "penguins"))
    base = ModelBasePath(uri)
    first = variant(padded_model, 0, tmp_path)
    models = {"0": digest(first)}  # model -> SHA-256 of its files
    files = {"0": md5s(first)}  # model -> MD5 of its files (as Cloud Storage lists them)
    figures = publish_in_child(uri, first)  # version 1, and how long a publish takes
    assert figures["version"] == 1 and figures["new"]
    duration = figures["wall"]
    owner = {1: "0"}  # version -> the model it must hold

    rng = random.Random(SEED)
    outcomes = {"not visible after kill": 0, "visible after kill": 0, "uncommitted claims": 0,
                "partial folders (no saved_model.pb)": 0, "complete uncommitted folders": 0}
    reader = Reader(base, models, tmp_path / "reader-cache")
    reader.start()
    try:
        for trial in range(1, TRIALS + 1):
            model = variant(padded_model, trial, tmp_path)
            models[str(trial)], files[str(trial)] = digest(model), md5s(model)
            before_versions, before = base.versions(), stored(base)
            proc = start_publish(uri, model)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            time.sleep(rng.uniform(0, 1.2 * duration))
            proc.send_signal(signal.SIGKILL)
            proc.wait()

            after_versions, after = base.versions(), stored(base)
            # no published version changed, and at most this trial's version was added
            assert {v: after[v] for v in before_versions} == {v: before[v] for v in
                                                              before_versions}
            added = [v for v in after_versions if v not in before_versions]
            assert len(added) <= 1 and after_versions[:len(before_versions)] == before_versions
            for v in added:
                owner[v] = str(trial)
            outcomes["visible after kill" if added else "not visible after kill"] += 1
            # every folder with a saved_model.pb (what TF Serving would load) is a whole model
            for v, found in after.items():
                if GRAPH in found:
                    assert found in files.values(), f"version folder {v} is a partial model"
            # the rerun (a retried push task) leaves exactly one version holding this model
            version, new = base.publish_if_changed(model)
            assert new == (not added)
            assert base.versions() == before_versions + [version]
            owner[version] = str(trial)
            cache = Path(tempfile.mkdtemp(dir=tmp_path))
            assert digest(base.fetch(version, cache)) == models[str(trial)]
            assert [v for v in base.versions() if owner[v] == str(trial)] == [version]
    finally:
        reader.stop.set()
        reader.join()

    assert reader.seen and not reader.partial
    final = stored(base)
    assert base.versions() == sorted(owner)
    for v in base.versions():
        assert final[v] == files[owner[v]]
    if base.gcs:
        leftover = base.uncommitted()
        outcomes["uncommitted claims"] = len(leftover)
        outcomes["partial folders (no saved_model.pb)"] = sum(
            GRAPH not in final.get(v, {GRAPH: ""}) for v in leftover)
        outcomes["complete uncommitted folders"] = sum(GRAPH in final.get(v, {}) for v in leftover)
        assert not set(leftover) & set(base.versions())
    else:
        leftover = [p.name for p in Path(uri).iterdir()
                    if not p.name.isdigit() and p.name != LOCK]
        assert all(name.startswith(".staging-") for name in leftover)
        # the killed publishers' staging folders are removed by the next publish on this host
        assert len(leftover) <= 1, leftover
        outcomes["staging folders left"] = len(leftover)
    print(f"\n{where}: publish {figures['seconds']:.3f} s ({duration:.3f} s wall); "
          f"{TRIALS} kills: {outcomes}")

    # conveyor serve's loader takes the latest version and loads it
    from conveyor.serving.models import ModelManager

    manager = ModelManager(uri, "penguins", cache_dir=str(tmp_path / "serve-cache"))
    manager.poll_once()
    assert not manager.errors and manager.current.version == base.latest()


def test_a_lost_claim_response_is_recognised_as_ours(bucket, tmp_path):
    """A create-only claim that reached the server but whose response was lost: the retry gets
    412 Precondition Failed; the claim holds our token, so it is ours. Someone else's claim (or
    an empty one, as older versions wrote) sends the writer to the next number."""
    from conveyor import gcp

    base = ModelBasePath(f"gs://{bucket('crash-test')}/{tmp_path.name}/penguins")
    blob = gcp.storage_client().bucket(base.bucket_name).blob(base._key(f"{MARKERS}/claims/1"))
    blob.upload_from_string(json.dumps({"token": "ours"}), if_generation_match=0)

    assert base._create_marker(f"{MARKERS}/claims/1", {"token": "ours"})  # 412, then ours
    assert not base._create_marker(f"{MARKERS}/claims/1", {"token": "theirs"})
    assert base._claim({"token": "ours"}) == (2, [])  # 1 is ours already: a new claim takes 2

    empty = gcp.storage_client().bucket(base.bucket_name).blob(base._key(f"{MARKERS}/claims/3"))
    empty.upload_from_string(b"", if_generation_match=0)
    assert not base._create_marker(f"{MARKERS}/claims/3", {"token": "ours"})


def test_a_lost_commit_response_is_recognised_as_ours(padded_model, bucket, tmp_path):
    """The commit marker was written but its response lost: the retry's 412 reads back our
    token and the version counts as committed; another writer's commit is refused loudly."""
    from conveyor import gcp

    base = ModelBasePath(f"gs://{bucket('crash-test')}/{tmp_path.name}/penguins")
    assert base.publish(padded_model) == 1
    rel = f"{MARKERS}/committed/1"
    marker = json.loads(gcp.storage_client().bucket(base.bucket_name).blob(base._key(rel))
                        .download_as_bytes())
    assert base._create_marker(rel, marker)
    assert not base._create_marker(rel, {**marker, "token": "someone else"})
    assert base.versions() == [1] and base.manifest(1) == digest(padded_model)


# -- ingest -------------------------------------------------------------------------------------

INGEST = """
import json, sys, time
from conveyor.ingest.bigquery import ingest_bigquery
start = time.monotonic()
result = ingest_bigquery(sys.argv[1], table=sys.argv[2])
print(json.dumps({"seconds": time.monotonic() - start, "phases": result.phases}), flush=True)
"""
INGEST_TRIALS = 6  # half at a random time, half while shards are being written


@pytest.fixture(scope="module")
def big_table(stack):
    from conveyor.local import seed

    return seed.seed_reference(300_000)


def test_an_ingest_killed_midway_is_refused_and_its_rerun_completes(big_table, tmp_path):
    from conveyor.errors import InputError
    from conveyor.ingest.bigquery import ingest_bigquery
    from conveyor.io import Dataset

    def run(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", INGEST, str(out), big_table], text=True,
                                stdout=subprocess.PIPE)

    reference = tmp_path / "reference"
    proc = run(reference)
    figures = json.loads(proc.communicate(timeout=300)[0])
    expected = Dataset(reference).info

    rng = random.Random(SEED)
    outcomes = {"no folder": 0, "partial folder refused": 0, "complete": 0}
    for trial in range(INGEST_TRIALS):
        out = tmp_path / f"ds-{trial}"
        proc = run(out)
        if trial % 2 == 0:  # anywhere in the run
            time.sleep(rng.uniform(0, figures["seconds"]))
        else:  # once the first shard exists, somewhere in the read phase
            while proc.poll() is None and not list(out.glob("*/part-*.parquet")):
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not out.exists():
            outcomes["no folder"] += 1
        elif not (out / "dataset.json").exists():
            with pytest.raises(InputError, match="dataset.json missing"):
                Dataset(out)
            outcomes["partial folder refused"] += 1
        else:
            outcomes["complete"] += 1
            continue  # finished before the kill: nothing to rerun
        info = ingest_bigquery(str(out), table=big_table).info  # the retry, into the same folder
        assert info.fingerprint == expected.fingerprint
        assert {n: s.rows for n, s in info.splits.items()} == {
            n: s.rows for n, s in expected.splits.items()}
        assert Dataset(out).info.fingerprint == expected.fingerprint
    print(f"\ningest {figures['seconds']:.2f} s {figures['phases']}; "
          f"{INGEST_TRIALS} kills: {outcomes}")
    assert outcomes["partial folder refused"] >= 1, outcomes
