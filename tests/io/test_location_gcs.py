"""conveyor.io.location on Cloud Storage (the GCS emulator): the calls tests/io/
test_location.py makes on a local folder, and a generation precondition."""

from __future__ import annotations

import pytest

from conveyor.errors import SourceNotFoundError
from conveyor.io.location import GcsLocation, Location, PreconditionError

pytestmark = [pytest.mark.local]


@pytest.fixture()
def root(bucket, tmp_path) -> GcsLocation:
    where = Location.parse(f"gs://{bucket('location')}/{tmp_path.name}/Mixed Case")
    assert isinstance(where, GcsLocation)
    return where


def test_write_read_exists_delete(root):
    where = root / "deep" / "é.txt"
    assert not where.exists()
    with pytest.raises(FileNotFoundError, match="é.txt not found"):
        where.read_bytes()
    where.write_text("Adélie\n")
    assert where.exists() and where.read_text() == "Adélie\n"
    where.write_bytes(b"\0\1")  # an unconditional write replaces it
    assert where.read_bytes() == b"\0\1"
    assert where.generation() is not None
    where.delete()
    assert not where.exists() and where.generation() is None
    where.delete()  # missing_ok
    with pytest.raises(FileNotFoundError):
        where.delete(missing_ok=False)


def test_create_only_and_generation_preconditions(root):
    where = root / "marker"
    where.write_bytes(b"first", if_generation_match=0)
    with pytest.raises(PreconditionError):
        where.write_bytes(b"second", if_generation_match=0)
    generation = where.generation()
    where.write_bytes(b"third", if_generation_match=generation)
    assert where.read_bytes() == b"third"
    with pytest.raises(PreconditionError):  # the generation it was read at is gone
        where.write_bytes(b"fourth", if_generation_match=generation)
    assert where.read_bytes() == b"third"


def test_list_names_objects_under_a_prefix_and_delete_removes_them(root):
    assert root.list() == []
    for name in ["date=2026-01-02/part-1.parquet", "date=2026-01-01/part-0.parquet", "top.json"]:
        (root / name).write_bytes(b"x")
    root._bucket().blob(root.key + "/placeholder/").upload_from_string(b"")  # a folder marker
    assert root.list() == ["date=2026-01-01/part-0.parquet", "date=2026-01-02/part-1.parquet",
                           "top.json"]
    assert root.list("date=2026-01-02/") == ["date=2026-01-02/part-1.parquet"]
    assert (root / "date=2026-01-01").list() == ["part-0.parquet"]
    root.delete()  # every object under the prefix
    assert root.list() == [] and not (root / "top.json").exists()


def test_download(root, tmp_path):
    where = root / "src.bin"
    where.write_bytes(b"payload")
    target = where.download(tmp_path / "out" / "copy.bin")
    assert target.read_bytes() == b"payload"
    with pytest.raises(FileNotFoundError):
        (root / "missing").download(tmp_path / "m")
    assert not (tmp_path / "m").exists()  # no empty file left behind


def test_a_missing_bucket_is_named(stack):
    where = Location.parse("gs://no-such-bucket-conveyor/x")
    with pytest.raises(SourceNotFoundError, match="gs://no-such-bucket-conveyor not found"):
        where.read_bytes()
    with pytest.raises(SourceNotFoundError):
        where.list()


def test_tfjob_staging_on_gcs_reads_copies_and_removes(root, tmp_path):
    """train/tfjob_launch's staging helpers, built on Location, on a gs:// staging folder."""
    from conveyor.train import tfjob_launch

    staging = root / "tfjob-staging"
    assert tfjob_launch.read_text(f"{staging.uri}/executor_output.json") is None
    assert tfjob_launch.read_text("gs://no-such-bucket-conveyor/x") is None
    assert tfjob_launch.copy_tree(f"{staging.uri}/model", str(tmp_path / "none")) == 0
    (staging / "executor_output.json").write_text('{"a": 1}')
    (staging / "model" / "saved_model.pb").write_bytes(b"graph")
    (staging / "model" / "variables" / "variables.index").write_bytes(b"index")
    assert tfjob_launch.read_text(f"{staging.uri}/executor_output.json") == '{"a": 1}'
    assert tfjob_launch.copy_tree(f"{staging.uri}/model", str(tmp_path / "model")) == 2
    assert (tmp_path / "model" / "variables" / "variables.index").read_bytes() == b"index"
    tfjob_launch.remove_tree(staging.uri)
    assert staging.list() == []
    tfjob_launch.remove_tree(staging.uri)  # nothing left: no error
