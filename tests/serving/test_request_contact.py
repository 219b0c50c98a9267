"""What a TF Serving client meets first (issue 28): a malformed date is a 400 naming the input
and the value (not a silent missing value), every missing input is named at once, every flag of
`conveyor serve` has help, and a start prints no TensorFlow banner and says when the base path
holds no version yet."""

from __future__ import annotations

import datetime
import subprocess
import sys
import time

import pytest

from conveyor.cli import parser
from conveyor.serving.loaded import Loaded, RequestError, is_iso_moment

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def dated(tmp_path_factory):
    """A conveyor model with a date, a timestamp, a number and a string input, trained briefly
    by the steps' own functions."""
    import pyarrow as pa
    from support.data import write_dataset
    from support.models import fit_transform, train_model

    root = tmp_path_factory.mktemp("dated")
    day0 = datetime.date(2024, 1, 1)
    n = 200
    table = pa.table({
        "sold_on": pa.array([day0 + datetime.timedelta(days=i % 90) for i in range(n)]),
        "seen_at": pa.array([datetime.datetime(2024, 1, 1, i % 24, tzinfo=datetime.UTC)
                             for i in range(n)], pa.timestamp("us", tz="UTC")),
        "size": pa.array([float(i % 17) for i in range(n)]),
        "shop": pa.array(["north" if i % 3 else "south" for i in range(n)]),
        "big": pa.array([i % 2 for i in range(n)], pa.int64()),
    })
    write_dataset(root / "ds", table)
    fit_transform(root / "ds", root / "t", label="big", values={0: 1, 1: 1}, task="binary")
    train_model(root / "ds", root / "t", root / "model", {"epochs": 1, "batch_size": 64})
    return Loaded(1, str(root / "model"))


def row(**change):
    return {"sold_on": "2024-02-03", "seen_at": "2024-02-03 04:05:06", "size": 3.0,
            "shop": "north", **change}


@pytest.mark.parametrize("text", ["2024-02-29", "2024-02-03 04:05:06", "2024-02-03T04:05:06Z",
                                  "2024-02-03 04:05:06.123+00:00"])
def test_iso_moments_the_model_reads_are_taken(text):
    assert is_iso_moment(text)


@pytest.mark.parametrize("text", ["2023-13-45", "garbage", "2023-02-30", "20240203",
                                  "2024-02-03 25:00", "2024-2-3", "2024-02-03x"])
def test_malformed_moments_are_not(text):
    assert not is_iso_moment(text)


def test_a_malformed_date_is_refused_naming_input_and_value(dated):
    assert dated.dates == {"sold_on": "date", "seen_at": "timestamp"}
    assert len(dated.predict({"instances": [row(), row(sold_on=None), row(sold_on="")]})[
        "predictions"]) == 3
    for bad in ("2023-13-45", "garbage"):
        with pytest.raises(RequestError) as caught:
            dated.predict({"instances": [row(), row(sold_on=bad)]})
        message = str(caught.value)
        assert "'sold_on'" in message and repr(bad) in message and "value #1" in message
        assert "YYYY-MM-DD" in message
    with pytest.raises(RequestError, match="'seen_at'.*'2024-02-03 24:00:00'"):
        dated.predict({"inputs": {k: [v] for k, v in row(seen_at="2024-02-03 24:00:00").items()}})


def test_every_missing_input_is_named_at_once(dated):
    with pytest.raises(RequestError) as caught:
        dated.predict({"instances": [{"size": 1.0}]})
    assert "instances[0]" in str(caught.value)
    for name in ("'sold_on'", "'seen_at'", "'shop'"):
        assert name in str(caught.value)
    with pytest.raises(RequestError) as caught:
        dated.predict({"inputs": {"size": [1.0], "shop": ["north"]}})
    assert "'sold_on'" in str(caught.value) and "'seen_at'" in str(caught.value)


def test_every_serve_flag_has_help():
    serve = parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    bare = [a.option_strings[0] for a in serve._actions
            if a.option_strings and not a.help]
    assert bare == []


def test_a_start_is_quiet_and_says_the_base_path_is_empty(tmp_path):
    """No oneDNN, CUDA or CPU-instruction notices on a CPU machine, and one line naming the
    empty base path, within seconds of the start."""
    (tmp_path / "models").mkdir()
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
             "--model-base-path",
             str(tmp_path / "models"), "--model-name", "shops", "--port", "0",
             "--poll-seconds", "0"], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while "no version folders" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert "no version folders" in text and str(tmp_path / "models") in text, text
    assert "--poll-seconds 0" in text
    for notice in ("oneDNN", "cuda drivers", "cuInit", "cpu_feature_guard", "absl::"):
        assert notice not in text, text
