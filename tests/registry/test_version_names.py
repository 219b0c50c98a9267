"""Version folder names (issue 25, class 13): only ASCII digits within int64 are a version, on a
local folder and on gs://, decided in one place (`registry.versions`, listed by
`ModelBasePath.scan`). Before: a number past int64 was a version (the newest: served, and push
numbered past it); a non-ASCII digit folder was skipped without a word."""

from __future__ import annotations

import json

import pytest

from conveyor.io.digest import digest
from conveyor.registry import GRAPH, MARKERS, ModelBasePath, PublishError, check_labels
from conveyor.registry.labels import LabelsError
from conveyor.registry.versions import INT64_MAX, canonical, not_a_version, number

# folder names that are all digits but never a version, and words of the reason given
NEVER = {
    "١": "only ASCII digits",  # ARABIC-INDIC DIGIT ONE: int() reads it as 1
    "²": "only ASCII digits",
    "９": "only ASCII digits",  # FULLWIDTH DIGIT NINE
    "99999999999999999999": "past the largest version number",
    str(INT64_MAX + 1): "past the largest version number",
    "9" * 5000: "past the largest version number",  # int() of it raises on Python 3.11
    "007": "not a version number as conveyor and `push` write it",
}


def test_only_ascii_digits_within_int64_are_version_numbers():
    assert (number("7"), canonical("7"), not_a_version("7")) == (7, 7, None)
    assert number(str(INT64_MAX)) == canonical(str(INT64_MAX)) == INT64_MAX
    for name, words in NEVER.items():
        assert canonical(name) is None, name
        assert words in not_a_version(name), name
    assert number("007") == 7  # it still counts when push picks the next number
    for name in ("labels.json", "5.tmp", "", "7a", ".staging-1"):  # not versions, no word
        assert (number(name), not_a_version(name)) == (None, None)


def test_a_label_past_int64_is_refused():
    with pytest.raises(LabelsError, match="expected a version number"):
        check_labels({"champion": INT64_MAX + 1}, "labels.json")
    assert check_labels({"champion": INT64_MAX}, "labels.json") == {"champion": INT64_MAX}


def test_a_local_base_path_lists_and_reports_each_name(tmp_path):
    root = tmp_path / "penguins"
    for name in ["1", *[n for n in NEVER if len(n) < 200]]:  # a file name has 255 bytes
        (root / name).mkdir(parents=True)
        (root / name / GRAPH).write_text("graph")
    (root / "5.tmp").mkdir()
    (root / "labels.json").write_text("{}")
    base = ModelBasePath(str(root))
    versions, unusable = base.scan()
    assert versions == base.versions() == [1]
    assert set(unusable) == {n for n in NEVER if len(n) < 200}
    for name, reason in unusable.items():
        assert NEVER[name] in reason, (name, reason)


def test_push_numbers_past_int64_names_never_and_stops_at_the_last_number(tmp_path):
    root = tmp_path / "penguins"
    model = tmp_path / "model"
    model.mkdir()
    (model / GRAPH).write_text("graph")
    base = ModelBasePath(str(root))
    assert base.publish(model) == 1
    (root / "99999999999999999999").mkdir()
    assert base.publish(model) == 2  # before: 100000000000000000000, past int64
    (root / str(INT64_MAX)).mkdir()
    with pytest.raises(PublishError, match="the largest version number"):
        base.publish(model)


@pytest.mark.local
def test_a_gs_base_path_lists_and_reports_each_name(bucket, tmp_path):
    """Folders and commit markers forged under names that are never versions: none is
    published; each is reported with why."""
    from conveyor import gcp

    base = ModelBasePath(f"gs://{bucket('version-names')}/{tmp_path.name}/penguins")
    model = tmp_path / "model"
    model.mkdir()
    (model / GRAPH).write_text("graph")
    assert base.publish(model) == 1
    store = gcp.storage_client().bucket(base.bucket_name)
    names = [n for n in NEVER if len(n) < 200]
    for name in names:
        store.blob(base._key(f"{name}/{GRAPH}")).upload_from_string(b"graph")
        marker = {"version": name, "files": [GRAPH], "sha256": digest(model)}
        store.blob(base._key(f"{MARKERS}/committed/{name}")).upload_from_string(
            json.dumps(marker))
    versions, unusable = base.scan()
    assert versions == base.versions() == [1]
    assert set(unusable) == set(names)
    for name, reason in unusable.items():
        assert NEVER[name] in reason, (name, reason)
    # push numbers past 007 (TensorFlow Serving reads it as 7), never past the others
    assert base.publish(model) == 8
