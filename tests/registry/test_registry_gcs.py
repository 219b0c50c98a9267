"""The model base path on Cloud Storage (the GCS emulator), where its code differs from a local
folder: folders it did not publish, identical and racing pushes (claims, heartbeats, leases), a
missing bucket, the bucket root; and push leaving nothing in TMPDIR nor beside its model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conveyor.errors import SourceNotFoundError
from conveyor.io.digest import digest
from conveyor.registry import GRAPH, MARKERS, ModelBasePath, StaleBaseline

pytestmark = [pytest.mark.local]


def model(root: Path, name: str, note: str) -> Path:
    folder = root / name
    (folder / "variables").mkdir(parents=True)
    (folder / GRAPH).write_text(f"graph {note}\n" * 100)
    (folder / "variables" / "variables.index").write_text(f"index {note}")
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"\1" * 50_000)
    (folder / "Ünïcode ².txt").write_text(note)
    return folder


def objects(base: ModelBasePath, under: str = "") -> dict[str, bytes]:
    from conveyor import gcp

    prefix = base._key(under)
    return {b.name[len(prefix):]: b.download_as_bytes()
            for b in gcp.storage_client().list_blobs(base.bucket_name, prefix=prefix)}


@pytest.fixture()
def base(bucket, tmp_path) -> ModelBasePath:
    return ModelBasePath(f"gs://{bucket('base-path')}/{tmp_path.name}/Mixed Case/penguins")


def test_a_hand_copied_version_is_never_written_into(base, tmp_path):
    from conveyor import gcp

    storage = gcp.storage_client().bucket(base.bucket_name)
    hand = model(tmp_path, "hand", "copied by hand")
    for rel in digest(hand):  # a version copied by hand: no markers; TF Serving would serve it
        storage.blob(base._key(f"1/{rel}")).upload_from_filename(str(hand / rel))
    storage.blob(base._key("03/README")).upload_from_string(b"not a model")  # TF Serving's 3
    storage.blob(base._key("²/x")).upload_from_string(b"not a number")
    before = {k: v for k, v in objects(base).items() if not k.startswith(MARKERS)}
    assert base.versions() == []

    published = base.publish_model(model(tmp_path, "ours", "ours"))
    assert (published.version, published.new, published.skipped) == (4, True, [1, 3])
    assert {k: v for k, v in objects(base).items()
            if not k.startswith(MARKERS) and not k.startswith("4/")} == before
    assert set(objects(base, "4/")) == set(digest(tmp_path / "ours"))
    assert base.versions() == [4]
    # a later hand copy above conveyor's versions is skipped too
    storage.blob(base._key("5/saved_model.pb")).upload_from_string(b"hand")
    again = base.publish_model(model(tmp_path, "next", "next"))
    assert (again.version, again.skipped) == (6, [5])
    assert objects(base, "5/") == {"saved_model.pb": b"hand"}


def test_identical_pushes_released_together_publish_one_version(base, tmp_path):
    source = model(tmp_path, "m", "same")
    barrier, results, errors = threading.Barrier(4), [], []

    def push():
        try:
            barrier.wait()
            results.append(base.publish_if_changed(source))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    version = base.versions()
    assert version == [1] and sorted(results) == [(1, False)] * 3 + [(1, True)]
    assert base.manifest(1) == digest(source)
    assert set(objects(base, "1/")) == set(digest(source))  # the losers wrote no files
    for loser in base.uncommitted():  # a loser that had claimed a number released it
        assert base._read_marker(f"{MARKERS}/claims/{loser}").get("released") is True


RACE = """
import json, sys
from conveyor.registry import ModelBasePath, StaleBaseline
base = ModelBasePath(sys.argv[1])
base.versions()
print("ready", flush=True)
sys.stdin.readline()
try:
    print(json.dumps(base.publish_if_changed(sys.argv[2], baseline=int(sys.argv[3]))))
except StaleBaseline as exc:
    print(json.dumps(str(exc)))
"""


def race(uri: str, models: list[Path], baseline: int) -> list:
    procs = [subprocess.Popen([sys.executable, "-c", RACE, uri, str(m), str(baseline)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for m in models]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    out = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return out


def test_processes_racing_with_the_same_model_publish_one_version(base, tmp_path):
    source = model(tmp_path, "m", "same")
    out = race(base.uri, [source] * 3, baseline=0)
    assert sorted(map(tuple, out)) == [(1, False), (1, False), (1, True)]
    assert base.versions() == [1]


def test_two_runs_evaluated_against_the_same_baseline_publish_once(base, tmp_path):
    assert base.publish(model(tmp_path, "v1", "one")) == 1
    runs = [model(tmp_path, f"run-{i}", f"run {i}") for i in range(3)]
    out = race(base.uri, runs, baseline=1)
    assert [o for o in out if isinstance(o, list)] == [[2, True]]
    assert sorted(o for o in out if isinstance(o, str)) == [
        "push: another run published v2 after this model was evaluated against v1; "
        "re-run evaluate"] * 2
    assert base.versions() == [1, 2]
    winner = runs[[isinstance(o, list) for o in out].index(True)]
    assert base.manifest(2) == digest(winner)
    assert not objects(base, "3/") and not objects(base, "4/")  # the refused wrote nothing


def claim(base: ModelBasePath, version: int, **payload) -> None:
    from conveyor import gcp

    gcp.storage_client().bucket(base.bucket_name).blob(
        base._key(f"{MARKERS}/claims/{version}")).upload_from_string(json.dumps(payload))


def test_abandoned_lower_claims_do_not_block(base, tmp_path, monkeypatch):
    """A claim of another host whose heartbeat stopped is abandoned after the lease; one of
    this host whose process is gone, or one its writer released, at once."""
    from conveyor.io.digest import manifest_hash

    source = model(tmp_path, "m", "m")
    sha = manifest_hash(digest(source))
    assert base.publish(model(tmp_path, "v1", "one")) == 1
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    claim(base, 2, token="a", sha=sha, host=socket.gethostname(), pid=dead)
    claim(base, 3, token="b", sha=sha, host="another-host", pid=1)
    claim(base, 4, token="c", sha="other", host=socket.gethostname(), pid=os.getpid(),
          released=True)
    monkeypatch.setenv("CONVEYOR_PUBLISH_LEASE", "2")
    import time

    start = time.monotonic()
    assert base.publish_if_changed(source, baseline=1) == (5, True)
    waited = time.monotonic() - start
    assert 2 <= waited < 30, waited  # the other host's claim: one lease, no more
    assert base.versions() == [1, 5] and base.uncommitted() == [2, 3, 4]


def test_a_stale_baseline_is_refused_before_claiming(base, tmp_path):
    assert base.publish(model(tmp_path, "a", "a")) == 1
    assert base.publish(model(tmp_path, "b", "b")) == 2
    with pytest.raises(StaleBaseline, match="another run published v2 after this model was "
                                            "evaluated against v1; re-run evaluate"):
        base.publish_if_changed(model(tmp_path, "c", "c"), baseline=1)
    assert base.uncommitted() == []


def test_a_missing_bucket_is_reported_by_the_preflight_and_the_publish(stack, tmp_path):
    from conveyor import gcp

    missing = ModelBasePath("gs://no-such-bucket-here/models/penguins")
    with pytest.raises(SourceNotFoundError, match="model_base_path: bucket "
                                                  "gs://no-such-bucket-here not found"):
        missing.check_writable()
    with pytest.raises(SourceNotFoundError, match="gs://no-such-bucket-here not found"):
        missing.publish(model(tmp_path, "m", "m"))
    assert not gcp.storage_client().bucket("no-such-bucket-here").exists()


def test_check_writable_leaves_nothing(base):
    base.check_writable()
    assert objects(base) == {}


def test_the_bucket_root_is_a_base_path(bucket, tmp_path):
    from conveyor import gcp

    name = bucket(f"root-{tmp_path.name[-20:].lower().replace('_', '-')}".rstrip("-"))
    for blob in gcp.storage_client().list_blobs(name):
        blob.delete()
    base = ModelBasePath(f"gs://{name}/")
    assert base.uri == f"gs://{name}"
    source = model(tmp_path, "m", "root")
    assert base.publish(source) == 1 and base.versions() == [1]
    assert base.version_uri(1) == f"gs://{name}/1"
    assert digest(base.fetch(1, tmp_path / "cache")) == digest(source)


PUSH_AND_FETCH = """
import json, os, sys, tempfile
from pathlib import Path
from conveyor.gcp.files import local_copy, local_file
from conveyor.registry import ModelBasePath
from conveyor.push.push import push

model, evaluation, uri, rows, object_uri = sys.argv[1:6]
result = push(model, evaluation, uri, sample=json.loads(Path(rows).read_text()))
base = ModelBasePath(uri)
with tempfile.TemporaryDirectory() as cache:
    fetched = base.fetch(result.version, cache)
    assert (fetched / "saved_model.pb").exists()
with local_file(object_uri, "feature_spec_uri") as path:
    assert path.read_text() == "label: species\\n"
copy = local_copy(object_uri, "module_file")
assert copy.read_text() == "label: species\\n"
print(json.dumps({"version": result.version, "where": result.infra["where"],
                  "during": sorted(os.listdir(os.environ["TMPDIR"]))}))
"""


@pytest.mark.slow
def test_push_and_fetch_leave_nothing_in_tmpdir_nor_beside_the_model(
        penguin_model, bucket, tmp_path):
    """push (with the infra check in a fresh process), a fetch, and both gs:// file helpers,
    in a process with its own TMPDIR: empty afterwards; nothing written beside the model."""
    from conveyor import gcp
    from conveyor.model.infra import sample_rows
    from conveyor.transform.fit import Fitted

    name = bucket("base-path")
    uri = f"gs://{name}/{tmp_path.name}/penguins"
    spec = f"{tmp_path.name}/spec.yaml"
    gcp.storage_client().bucket(name).blob(spec).upload_from_string("label: species\n")
    holder = tmp_path / "read-only-holder"  # the model's folder and its parent: only read
    holder.mkdir()
    (holder / "model").symlink_to(penguin_model / "model")
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "evaluation.json").write_text(json.dumps({"blessed": True, "checks": []}))
    fitted = Fitted.load(penguin_model / "model" / "assets.extra")
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(sample_rows(penguin_model / "ds", "eval", fitted)))
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    model_parent_before = sorted(os.listdir(penguin_model))
    run = subprocess.run([sys.executable, "-c", PUSH_AND_FETCH, str(holder / "model"),
                          str(evaluation), uri, str(rows), f"gs://{name}/{spec}"],
                         capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmpdir)},
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert (out["version"], out["where"]) == (1, "push")
    assert len(out["during"]) == 1  # local_copy's download lives until the process exits
    assert os.listdir(tmpdir) == []
    assert os.listdir(holder) == ["model"]
    assert sorted(os.listdir(penguin_model)) == model_parent_before
