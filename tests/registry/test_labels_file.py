"""The writers of the labels file (push, promote, start_canary: `update_labels`) never take a
broken file for an empty one and overwrite it (issue 25, class 2, the registry side): each
refuses with a LabelsError naming the file, which stays byte for byte as it was, on a local
folder and on gs:// (the GCS emulator). Serve's side is tests/serving/test_server_labels.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.promote.promote import start_canary
from conveyor.push import push as pushing
from conveyor.registry import GRAPH, LABELS, LabelsError, ModelBasePath

BROKEN = [b"{not json", b"", b"[1, 2]", b'{"champion": "1"}', b'{"champion": 1.5}',
          b'{"champion": 9223372036854775808}', b'{"Champion!": 1}', b"\xff\xff"]


def base_path(where: str, tmp_path, request) -> ModelBasePath:
    if where == "gs":
        bucket = request.getfixturevalue("bucket")
        return ModelBasePath(f"gs://{bucket('labels-file')}/{tmp_path.name}/penguins")
    return ModelBasePath(str(tmp_path / "penguins"))


def read_raw(base: ModelBasePath) -> bytes:
    if base.gcs:
        from conveyor import gcp

        blob = gcp.storage_client().bucket(base.bucket_name).blob(base._key(LABELS))
        return blob.download_as_bytes()
    return (Path(base.uri) / LABELS).read_bytes()


def write_raw(base: ModelBasePath, raw: bytes) -> None:
    if base.gcs:
        from conveyor import gcp

        gcp.storage_client().bucket(base.bucket_name).blob(base._key(LABELS)) \
            .upload_from_string(raw)
    else:
        (Path(base.uri) / LABELS).write_bytes(raw)


@pytest.mark.parametrize("where", ["local", pytest.param("gs", marks=pytest.mark.local)])
def test_every_labels_writer_refuses_a_broken_file_and_leaves_it_as_it_was(
        where, tmp_path, request):
    base = base_path(where, tmp_path, request)
    model = tmp_path / "model"
    model.mkdir()
    (model / GRAPH).write_text("graph")
    base.publish(model)
    base.publish(model)
    writers = {
        "push (challenger)": lambda: pushing._label(base, 2, "challenger", previous=1),
        "push (champion)": lambda: pushing._label(base, 2, "champion", previous=1),
        "start_canary": lambda: start_canary(base.uri),
        "update_labels": lambda: base.update_labels(lambda labels: {"champion": 2}),
    }
    for raw in BROKEN:
        write_raw(base, raw)
        for what, write in writers.items():
            with pytest.raises(LabelsError) as refused:
                write()
            assert str(refused.value).startswith(f"{base.uri}/{LABELS}: "), (what, raw)
            assert read_raw(base) == raw, (what, raw)


@pytest.mark.parametrize("where", ["local", pytest.param("gs", marks=pytest.mark.local)])
def test_a_champion_label_naming_a_deleted_version_is_refused_by_push_not_rewritten(
        where, tmp_path, request):
    """A retention job deleted the champion: a challenger push refuses to label beside it,
    naming the version and the file; a champion push replaces it (the labels it writes name
    only published versions)."""
    base = base_path(where, tmp_path, request)
    model = tmp_path / "model"
    model.mkdir()
    (model / GRAPH).write_text("graph")
    for _ in range(3):
        base.publish(model)
    write_raw(base, b'{"champion": 7}')
    with pytest.raises(LabelsError, match=r"'champion' -> version 7, which is not a published"):
        pushing._label(base, 3, "challenger", previous=2)
    assert read_raw(base) == b'{"champion": 7}'
    assert pushing._label(base, 3, "champion", previous=2) == {"champion": 3}
