"""The model base path on a local folder: its parameter checks, numbering around folders it did
not write, concurrent identical pushes, the baseline check, failed copies. No emulator needed:
the "models" are folders of real files (the registry copies and hashes them, it never loads
them)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conveyor.errors import InputError
from conveyor.io.digest import digest
from conveyor.registry import GRAPH, LOCK, ModelBasePath, PublishError, StaleBaseline
from conveyor.registry import local as registry_local


def model(root: Path, name: str, note: str = "") -> Path:
    """A SavedModel-shaped folder: a graph, nested variables, a unicode-named asset."""
    folder = root / name
    (folder / "variables").mkdir(parents=True)
    (folder / "assets.extra").mkdir()
    (folder / GRAPH).write_bytes(os.urandom(2048) if not note else note.encode() * 300)
    (folder / "variables" / "variables.index").write_bytes(b"index" + note.encode())
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 70_000)
    (folder / "assets.extra" / "étiquettes ².txt").write_text(f"Adélie\n{note}\n")
    return folder


@pytest.mark.parametrize("uri", [
    "", "   ", "/", "//", "/.", "/tmp/..", "/../..", ".", "./", "x/..", "gs://", "gs:///m",
    "gs://Bad_Bucket/m", "gs://ab/m", "gs://b..c/m", "gs://bucket//m", "gs://bucket/./m",
    "gs://bucket/a/../m", "s3://bucket/m", "gs:/bucket/m", "https://storage.googleapis.com/b/m",
    "models/\npenguins", "models/\0penguins",
])
def test_nonsense_base_paths_name_the_parameter(uri):
    with pytest.raises(InputError, match="model_base_path"):
        ModelBasePath(uri)


def test_the_working_directory_is_refused_in_any_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri in (str(tmp_path), f"{tmp_path}/", "sub/..", "./sub/../."):
        with pytest.raises(InputError, match="model_base_path: .* working directory"):
            ModelBasePath(uri)
    assert ModelBasePath("models/penguins").publish(model(tmp_path / "src", "m")) == 1
    assert (tmp_path / "models" / "penguins" / "1" / GRAPH).exists()


def test_bucket_root_and_unicode_folders_are_fine(tmp_path):
    assert ModelBasePath("gs://my-bucket").uri == "gs://my-bucket"
    assert ModelBasePath("gs://my-bucket/").prefix == ""
    base = ModelBasePath(str(tmp_path / "modèles" / "²"))
    assert base.publish(model(tmp_path, "m")) == 1 and base.versions() == [1]


def test_non_ascii_digit_folders_are_not_versions_and_do_not_crash(tmp_path):
    root = tmp_path / "base"
    for name in ("²", "٣", "１", "3²"):
        (root / name).mkdir(parents=True)
        (root / name / GRAPH).write_text("hand made")
    base = ModelBasePath(str(root))
    assert base.versions() == []
    assert base.publish(model(tmp_path, "m")) == 1
    assert sorted(p.name for p in root.iterdir()) == sorted(["²", "٣", "１", "3²", "1", LOCK])


def test_numeric_folders_not_published_by_conveyor_are_skipped_and_reported(tmp_path):
    root = tmp_path / "base"
    base = ModelBasePath(str(root))
    assert base.publish(model(tmp_path, "first", "1")) == 1
    hand = model(root, "4", "copied by hand")  # a whole version copied by hand: TF Serving's v4
    (root / "6").mkdir()  # an empty folder
    (root / "009").mkdir()  # TF Serving parses it as 9
    (root / "009" / "README").write_text("not a model")
    before = {n: digest(root / n) for n in ("4", "6", "009")}

    published = base.publish_model(model(tmp_path, "second", "2"))
    assert published.version == 10 and published.new
    assert published.skipped == [6, 9]  # 4 is a version (it has saved_model.pb); 6 and 9 are not
    assert {n: digest(root / n) for n in ("4", "6", "009")} == before  # never written into
    assert base.versions() == [1, 4, 10] and base.manifest(4) == digest(hand)


def test_identical_pushes_released_together_publish_one_version(tmp_path):
    source = model(tmp_path, "m", "same")
    base = ModelBasePath(str(tmp_path / "base"))
    barrier, results, errors = threading.Barrier(6), [], []

    def push():
        try:
            barrier.wait()
            results.append(base.publish_if_changed(source))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [(1, False)] * 5 + [(1, True)]
    assert base.versions() == [1] and base.manifest(1) == digest(source)
    assert not [p for p in (tmp_path / "base").iterdir() if p.name.startswith(".staging-")]


RACE = """
import json, sys
from conveyor.registry import ModelBasePath, StaleBaseline
base = ModelBasePath(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
try:
    print(json.dumps(base.publish_if_changed(sys.argv[2], baseline=int(sys.argv[3]))))
except StaleBaseline as exc:
    print(json.dumps(str(exc)))
"""


def race(uri: str, models: list[Path], baseline: int) -> list:
    """Publish each model in its own process, all released at the same instant."""
    import json

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


def test_two_runs_evaluated_against_the_same_baseline_publish_once(tmp_path):
    base = ModelBasePath(str(tmp_path / "base"))
    assert base.publish(model(tmp_path, "v1", "one")) == 1
    runs = [model(tmp_path, f"run-{i}", f"run {i}") for i in range(3)]
    out = race(base.uri, runs, baseline=1)
    published = [o for o in out if isinstance(o, list)]
    refused = [o for o in out if isinstance(o, str)]
    assert published == [[2, True]] and len(refused) == 2
    for message in refused:
        assert message == ("push: another run published v2 after this model was evaluated "
                           "against v1; re-run evaluate")
    assert base.versions() == [1, 2]
    winner = runs[[isinstance(o, list) for o in out].index(True)]
    assert base.manifest(2) == digest(winner)


def test_baseline_rules(tmp_path):
    base = ModelBasePath(str(tmp_path / "base"))
    first, second = model(tmp_path, "a", "a"), model(tmp_path, "b", "b")
    assert base.publish_if_changed(first, baseline=0) == (1, True)  # no baseline, empty base
    with pytest.raises(StaleBaseline, match=r"published v1 after this model was evaluated "
                                            r"without a baseline; re-run evaluate"):
        base.publish_if_changed(second, baseline=0)
    with pytest.raises(StaleBaseline, match=r"evaluated against v7, which is not the newest"):
        base.publish_if_changed(second, baseline=7)
    # the same model as the latest version is its own rerun: reported, whatever the baseline
    assert base.publish_if_changed(first, baseline=0) == (1, False)
    assert base.publish_if_changed(second, baseline=1) == (2, True)
    assert base.publish_if_changed(second) == (2, False)
    assert base.version_of(base.version_uri(2)) == 2
    assert base.version_of(str(tmp_path / "base" / "." / "2")) == 2
    assert base.version_of(str(tmp_path / "other" / "2")) is None
    assert base.version_of(None) is None and base.version_of(f"{base.uri}/02") is None


def test_a_failed_copy_removes_its_staging_and_says_one_line(tmp_path, monkeypatch):
    source = model(tmp_path, "m", "x")
    root = tmp_path / "base"
    base = ModelBasePath(str(root))
    real, calls = registry_local._copy_file, []

    def disk_full_on_the_third_file(src, dst):
        calls.append(dst)
        if len(calls) % 4 == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst)

    monkeypatch.setattr(registry_local, "_copy_file", disk_full_on_the_third_file)
    for attempt in range(3):
        with pytest.raises(PublishError) as raised:
            base.publish(source)
        message = str(raised.value)
        assert "\n" not in message and len(message) < 400, message
        assert message.startswith(f"model_base_path: cannot write {root}/.staging-")
        assert "[Errno 28] No space left on device" in message
        assert sorted(p.name for p in root.iterdir()) == [], attempt  # no staging, no version
    monkeypatch.setattr(registry_local, "_copy_file", real)
    assert base.publish(source) == 1
    assert sorted(p.name for p in root.iterdir()) == sorted(["1", LOCK])


def test_a_file_in_the_way(tmp_path):
    (tmp_path / "models").write_text("a file, not a folder")
    base = ModelBasePath(str(tmp_path / "models" / "penguins"))
    with pytest.raises(InputError, match=f"model_base_path: {tmp_path}/models is a file"):
        base.check_writable()
    with pytest.raises(PublishError) as raised:
        base.publish(model(tmp_path, "m"))
    assert str(raised.value) == (f"model_base_path: cannot create the folder {base.uri}: "
                                 "[Errno 20] Not a directory")
    assert (tmp_path / "models").read_text() == "a file, not a folder"


def test_check_writable_creates_nothing(tmp_path):
    ModelBasePath(str(tmp_path / "a" / "b" / "c")).check_writable()
    assert list(tmp_path.iterdir()) == []


def test_staging_of_a_killed_publisher_is_removed_by_the_next_one(tmp_path):
    root = tmp_path / "base"
    base = ModelBasePath(str(root))
    assert base.publish(model(tmp_path, "a", "a")) == 1
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import socket

    leftover = root / f".staging-{dead}-0123456789ab-{socket.gethostname()}"
    (leftover / "variables").mkdir(parents=True)
    alive = root / f".staging-{os.getpid()}-0123456789ab-{socket.gethostname()}"
    alive.mkdir()  # a publisher still copying (this process): kept
    other_host = root / f".staging-{dead}-0123456789ab-some-other-host"
    other_host.mkdir()  # another machine's: cannot tell, kept
    assert base.publish(model(tmp_path, "b", "b")) == 2
    assert not leftover.exists() and alive.exists() and other_host.exists()
