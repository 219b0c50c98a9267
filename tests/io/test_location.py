"""conveyor.io.location on a local folder: the same calls as on gs:// (tests/io/
test_location_gcs.py runs them against the GCS emulator)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from conveyor.errors import InputError, one_line
from conveyor.io.location import GcsLocation, LocalLocation, Location, PreconditionError


def test_parse_gives_a_local_or_a_gcs_location(tmp_path):
    local = Location.parse(str(tmp_path / "a" / ".." / "b"))
    assert isinstance(local, LocalLocation) and local.is_local
    assert local.uri == str(tmp_path / "b") and local.path == tmp_path / "b"
    assert Location.parse(tmp_path) == LocalLocation(tmp_path)
    gcs = Location.parse("gs://bucket/some/prefix/")
    assert isinstance(gcs, GcsLocation) and not gcs.is_local
    assert (gcs.uri, gcs.bucket_name, gcs.key) == ("gs://bucket/some/prefix", "bucket",
                                                   "some/prefix")
    assert Location.parse("gs://bucket").uri == "gs://bucket"
    with pytest.raises(InputError, match="names no bucket"):
        Location.parse("gs:///x")
    with pytest.raises(InputError, match="empty"):
        Location.parse("")


def test_child_joins_a_name_on_both(tmp_path):
    assert (Location.parse(str(tmp_path)) / "x" / "y.json").uri == str(tmp_path / "x" / "y.json")
    assert Location.parse("gs://b").child("x/").child("y.json").uri == "gs://b/x/y.json"
    assert Location.parse("gs://b/p").child("y").uri == "gs://b/p/y"
    assert Location.parse("gs://b/p/y.json").name == "y.json"


def test_write_read_exists_delete(tmp_path):
    where = Location.parse(str(tmp_path / "deep" / "folder" / "é.txt"))
    assert not where.exists()
    with pytest.raises(FileNotFoundError):
        where.read_bytes()
    where.write_text("Adélie\n")  # creates the folders
    assert where.exists() and where.read_text() == "Adélie\n"
    where.write_bytes(b"\0\1")
    assert where.read_bytes() == b"\0\1"
    assert sorted(p.name for p in where.path.parent.iterdir()) == ["é.txt"]  # no temp left
    where.delete()
    assert not where.exists()
    where.delete()  # missing_ok
    with pytest.raises(FileNotFoundError):
        where.delete(missing_ok=False)


def test_create_only_write_refuses_an_existing_file(tmp_path):
    where = Location.parse(str(tmp_path / "marker"))
    where.write_bytes(b"first", if_generation_match=0)
    with pytest.raises(PreconditionError):
        where.write_bytes(b"second", if_generation_match=0)
    assert where.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["marker"]
    with pytest.raises(ValueError):
        where.write_bytes(b"x", if_generation_match=7)


def test_a_write_is_whole_for_a_concurrent_reader(tmp_path):
    """A reader polling the file while it is rewritten sees one version or the other, never a
    partial file (a temporary in the same folder, then os.replace)."""
    where = Location.parse(str(tmp_path / "big.bin"))
    old, new = b"a" * 3_000_000, b"b" * 3_000_000
    where.write_bytes(old)
    seen, done = set(), threading.Event()

    def read():
        while not done.is_set():
            data = where.read_bytes()
            seen.add("old" if data == old else "new" if data == new else "partial")

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(10):
        where.write_bytes(new)
        where.write_bytes(old)
    done.set()
    reader.join()
    assert seen and seen <= {"old", "new"}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    where = Location.parse(str(tmp_path / "f"))
    where.write_bytes(b"old")
    with pytest.raises(TypeError):
        where.write_bytes("not bytes")  # type: ignore[arg-type]
    assert where.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_list_names_files_under_a_prefix(tmp_path):
    root = Location.parse(str(tmp_path / "root"))
    assert root.list() == []  # a folder that does not exist holds nothing
    for name in ["date=2026-01-02/part-1.parquet", "date=2026-01-01/part-0.parquet", "top.json"]:
        (root / name).write_bytes(b"x")
    (tmp_path / "root" / "empty").mkdir()
    assert root.list() == ["date=2026-01-01/part-0.parquet", "date=2026-01-02/part-1.parquet",
                           "top.json"]
    assert root.list("date=2026-01-02/") == ["date=2026-01-02/part-1.parquet"]
    root.delete()  # a folder and everything in it
    assert not os.path.exists(tmp_path / "root")


def test_download_copies_to_a_local_path(tmp_path):
    where = Location.parse(str(tmp_path / "src.bin"))
    where.write_bytes(b"payload")
    target = where.download(tmp_path / "out" / "copy.bin")
    assert target == Path(tmp_path / "out" / "copy.bin") and target.read_bytes() == b"payload"
    with pytest.raises(FileNotFoundError):
        Location.parse(str(tmp_path / "missing")).download(tmp_path / "m")


def test_one_line():
    assert one_line(ValueError("first\n\n  second")) == "ValueError: first"
    assert one_line(RuntimeError("a   b\tc")) == "RuntimeError: a b c"
    assert one_line(OSError(28, "No space left on device", "/x")) == \
        "[Errno 28] No space left on device"
    assert one_line(KeyError()) == "KeyError: "
    assert one_line(None) == "none recorded"
    long = one_line(ValueError("x" * 1000), limit=50)
    assert long == "ValueError: " + "x" * 47 + "..."
