"""The prediction log's rows, files and queue (conveyor.serving.prediction_log), without a server:
real Parquet files in a temporary folder, read back with pyarrow."""

from __future__ import annotations

import datetime
import json
import math
import threading
import time
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from support.serving import wait_for

from conveyor.errors import InputError
from conveyor.serving.log_format import Entry, Signature, rows_of, sampled
from conveyor.serving.prediction_log import PredictionLog, from_environment

# A signature as the penguins model has it, plus an int64 and a bool input and an odd output.
SIG = Signature({"island": "string", "bill_length_mm": "float", "year": "int", "alive": "bool",
                 "Île_x": "float"},
                {"probabilities": ("float", 2), "class_id": ("int", 1),
                 "class_label": ("string", 1), "cube": ("float", 3)})
ROW = {"island": "Biscoe", "bill_length_mm": 45.1, "year": 2008, "alive": True, "Île_x": 1.0}
ANSWER = {"probabilities": [0.1, 0.2, 0.7], "class_id": 2, "class_label": "Gentoo",
          "cube": [[[1.0]]]}
NOON = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC).timestamp()


DEFAULT = object()


def entry(rid="r1", body=DEFAULT, answer=None, status=200, version=1, signature=SIG,
          received=NOON, raw_bytes=100) -> Entry:
    if body is DEFAULT:
        body = {"instances": [ROW]}
    if answer is None:
        n = len(body["instances"]) if isinstance(body, dict) and "instances" in body else 1
        answer = {"predictions": [ANSWER] * n}
    return Entry(rid, received, "penguins", version, signature, status, body, answer, 3.5,
                 raw_bytes)


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def read(folder: Path):
    return pads.dataset(str(folder), format="parquet", partitioning="hive").to_table()


def value(counter, *labels) -> float:
    return (counter.labels(*labels) if labels else counter)._value.get()


# -- rows -------------------------------------------------------------------------------------

def test_a_row_holds_typed_features_outputs_and_the_request():
    (row,) = rows_of(entry())
    assert row["request_id"] == "r1" and row["instance"] == 0 and row["status"] == 200
    assert row["timestamp"] == datetime.datetime(2026, 12, 2, 12, tzinfo=datetime.UTC)
    assert (row["model_name"], row["model_version"]) == ("penguins", 1)
    assert row["features"] == ROW and row["unparsed"] is None and row["error"] is None
    assert row["outputs"]["probabilities"] == [0.1, 0.2, 0.7]
    assert row["outputs"]["class_id"] == 2 and row["outputs"]["class_label"] == "Gentoo"
    assert json.loads(row["outputs"]["cube"]) == [[[1.0]]]  # rank 3: kept as JSON text


def test_values_that_do_not_fit_their_column_go_to_unparsed_and_nothing_is_lost():
    odd = {"island": 7, "bill_length_mm": "long", "year": 2 ** 70, "alive": "yes",
           "Île_x": None, "ünïcödé key": {"nested": [1, None]}, "from": None}
    rows = rows_of(entry(body={"instances": [odd, {**ROW, "year": False, "island": "\ud800"}]},
                         answer={"error": "input 'island' expects strings"}, status=400))
    first, second = rows
    assert first["features"] == {n: None for n in SIG.inputs}
    assert json.loads(first["unparsed"]) == {k: v for k, v in odd.items() if k != "Île_x"}
    assert first["outputs"] is None and first["error"] == "input 'island' expects strings"
    assert second["features"]["year"] == 0  # false reaches an integer input as 0, as served
    assert second["features"]["island"] is None  # a lone surrogate cannot be UTF-8 text...
    assert json.loads(second["unparsed"]) == {"island": "\ud800"}  # ...but is kept, escaped
    assert second["unparsed"].isascii()
    assert [r["instance"] for r in rows] == [0, 1] and {r["status"] for r in rows} == {400}


def test_columnar_requests_become_one_row_per_instance():
    body = {"inputs": {k: [v, v] for k, v in ROW.items()}}
    answer = {"outputs": {k: [v, v] for k, v in ANSWER.items()}}
    rows = rows_of(entry(body=body, answer=answer))
    assert [r["instance"] for r in rows] == [0, 1]
    assert all(r["features"] == ROW and r["outputs"]["class_id"] == 2 for r in rows)


@pytest.mark.parametrize("body, unparsed", [
    (None, None),                          # not JSON, or a 413 (the body is not kept)
    ([1, 2], [1, 2]),                      # not an object
    ({"rows": [ROW]}, {"rows": [ROW]}),    # neither instances nor inputs
    ({"instances": []}, {"instances": []}),
])
def test_a_body_without_instances_is_one_row_with_the_error(body, unparsed):
    (row,) = rows_of(entry(body=body, answer={"error": "bad"}, status=400))
    assert row["instance"] is None and row["features"] is None and row["error"] == "bad"
    assert (json.loads(row["unparsed"]) if row["unparsed"] else None) == unparsed


def test_a_row_that_is_not_an_object_is_kept_in_unparsed():
    (row,) = rows_of(entry(body={"instances": [[1, 2]]}, answer={"error": "x"}, status=400))
    assert json.loads(row["unparsed"]) == {"_instance": [1, 2]}
    assert set(row["features"].values()) == {None}


# -- sampling -----------------------------------------------------------------------------------

def test_sampling_is_deterministic_by_request_id_and_about_the_rate():
    ids = [f"request-{i}" for i in range(20_000)]
    at_10 = [i for i in ids if sampled(i, 0.1)]
    assert at_10 == [i for i in ids if sampled(i, 0.1)]  # the same decision every time
    # binomial(20000, 0.1): mean 2000, standard deviation 42; 5 standard deviations
    assert abs(len(at_10) - 2000) < 5 * 42
    at_30 = {i for i in ids if sampled(i, 0.3)}
    assert set(at_10) <= at_30  # a higher rate logs a superset
    assert all(sampled(i, 1.0) for i in ids[:100]) and not any(sampled(i, 0.0) for i in ids)
    assert sampled("\ud800-lone-surrogate", 1.0) in (True, False)  # any id hashes


# -- files ---------------------------------------------------------------------------------

def test_batches_of_flush_rows_become_files_and_close_writes_the_rest(tmp_path):
    plog = PredictionLog(str(tmp_path / "log"), flush_rows=5, flush_seconds=3600)
    plog.check()
    plog.start()
    for i in range(10):
        assert plog.submit(entry(f"r{i}"))
    wait_for(lambda: value(plog.files_written) == 2, "two files of 5 rows", every=0.02)
    assert plog.submit(entry("big", body={"instances": [ROW] * 3}))
    assert plog.close()
    written = files(tmp_path / "log")
    assert [p.parent.name for p in written] == ["date=2026-12-02"] * 3
    assert all(p.name.startswith("part-") and p.suffix == ".parquet" for p in written)
    assert sorted(pq.read_table(p).num_rows for p in written) == [3, 5, 5]
    table = read(tmp_path / "log")
    assert sorted(table["request_id"].to_pylist()) == sorted([f"r{i}" for i in range(10)]
                                                             + ["big"] * 3)
    assert table.schema.field("timestamp").type.tz == "UTC"
    assert pq.read_schema(written[0]).metadata[b"conveyor.prediction_log.format"] == b"1"
    assert value(plog.rows_written) == 13 and value(plog.rows_dropped, "queue_full") == 0


def test_rows_wait_at_most_flush_seconds(tmp_path):
    plog = PredictionLog(str(tmp_path), flush_rows=1000, flush_seconds=0.2)
    plog.start()
    plog.submit(entry("lonely", received=time.time()))
    wait_for(lambda: value(plog.files_written) == 1, "the lonely row's file", every=0.02)
    plog.close()
    assert read(tmp_path)["request_id"].to_pylist() == ["lonely"]


def test_a_batch_across_midnight_and_a_hot_swap_is_one_file_per_date_and_version(tmp_path):
    v2 = Signature({**SIG.inputs, "new_input": "string"}, {"value": ("float", 1)})
    plog = PredictionLog(str(tmp_path), flush_rows=100)
    before, after = NOON - 12 * 3600 - 1, NOON - 12 * 3600  # 23:59:59 and 00:00:00
    plog.submit(entry("a", received=before))
    plog.submit(entry("b", received=after))
    plog.submit(entry("c", received=after, version=2, signature=v2,
                      answer={"predictions": [{"value": 1.5}]}))
    plog.close()  # no thread: close writes in this thread
    written = files(tmp_path)
    assert [p.parent.name for p in written] == ["date=2026-12-01", "date=2026-12-02",
                                                "date=2026-12-02"]
    by_version = {pq.read_table(p)["model_version"][0].as_py(): pq.read_table(p)
                  for p in written[1:]}
    assert by_version[2].schema.field("features").type.get_field_index("new_input") >= 0
    assert by_version[2]["outputs"].to_pylist() == [{"value": 1.5}]
    assert by_version[1]["outputs"][0].as_py()["class_label"] == "Gentoo"


def test_a_full_queue_drops_whole_requests_counts_them_and_never_blocks(tmp_path):
    plog = PredictionLog(str(tmp_path), flush_rows=4, queue_rows=10, queue_bytes=10_000)
    # No writer thread: nothing drains, so the queue fills.
    accepted = [plog.submit(entry(f"r{i}")) for i in range(12)]
    assert accepted == [True] * 10 + [False] * 2
    assert not plog.submit(entry("three", body={"instances": [ROW] * 3}))
    assert value(plog.rows_dropped, "queue_full") == 5
    assert not plog.submit(entry("huge", raw_bytes=20_000))  # the byte budget too
    plog.close()
    assert sorted(read(tmp_path)["request_id"].to_pylist()) == sorted(f"r{i}"
                                                                      for i in range(10))
    assert value(plog.rows_written) == 10 and value(plog.queued) == 0


def test_submitting_from_many_threads_loses_or_doubles_no_row(tmp_path):
    plog = PredictionLog(str(tmp_path), flush_rows=50, flush_seconds=0.05)
    plog.start()

    def client(k):
        for i in range(200):
            assert plog.submit(entry(f"{k}-{i}", body={"instances": [ROW] * (1 + i % 3)}))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert plog.close()
    table = read(tmp_path)
    expected = sum(1 + i % 3 for i in range(200)) * 6
    assert table.num_rows == expected == value(plog.rows_written)
    pairs = set(zip(table["request_id"].to_pylist(), table["instance"].to_pylist()))
    assert len(pairs) == expected  # each (request, instance) once


def test_readers_never_see_a_half_file(tmp_path):
    """A reader lists and opens every visible file while the writer writes 12,000 rows in files
    of at most 200: each file it sees is a whole Parquet file; no temporary file is left."""
    plog = PredictionLog(str(tmp_path), flush_rows=200)
    plog.start()
    stop, seen, bad = threading.Event(), set(), []

    def reader():
        while not stop.is_set():
            for p in tmp_path.rglob("*.parquet"):
                if p.name.startswith("."):
                    continue
                try:
                    assert 0 < pq.read_table(p).num_rows <= 200
                    seen.add(p.name)
                except Exception as exc:
                    bad.append(f"{p.name}: {exc!r}")

    thread = threading.Thread(target=reader)
    thread.start()
    big = {**ROW, "island": "x" * 2000}
    for i in range(60 * 200):
        plog.submit(entry(f"r{i}", body={"instances": [big]}))
        if i % 1000 == 0:
            time.sleep(0.01)
    plog.close()
    stop.set()
    thread.join()
    assert not bad, bad[:3]
    assert read(tmp_path).num_rows == 60 * 200 and len(files(tmp_path)) >= 60 and seen
    assert not [p for p in tmp_path.rglob(".*")]


def test_a_prefix_that_becomes_unwritable_counts_failures_and_recovers(tmp_path):
    prefix = tmp_path / "log"
    plog = PredictionLog(str(prefix), flush_rows=2, flush_seconds=3600)
    plog.check()
    plog.start()
    plog.submit(entry("a"))
    plog.submit(entry("b"))
    wait_for(lambda: value(plog.files_written) == 1, "the first file", every=0.02)
    prefix.rename(tmp_path / "moved")
    prefix.write_text("a file where the log folder was")
    plog.submit(entry("c"))
    plog.submit(entry("d"))
    wait_for(lambda: value(plog.write_failures) == 1, "the failed write", every=0.02)
    assert value(plog.rows_dropped, "write_failed") == 2 and value(plog.queued) == 0
    prefix.unlink()
    plog.submit(entry("e"))
    plog.submit(entry("f"))
    wait_for(lambda: value(plog.files_written) == 2, "the writer to go on", every=0.02)
    assert plog.close()
    assert sorted(read(prefix)["request_id"].to_pylist()) == ["e", "f"]
    assert sorted(read(tmp_path / "moved")["request_id"].to_pylist()) == ["a", "b"]


# -- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("prefix, words", [
    ("", "empty"), ("s3://bucket/x", "only a local folder or gs://"),
    ("gs://Bad_Bucket/x", "not a Cloud Storage bucket name"), ("gs://bucket/../x", "'..' folder"),
    ("logs\n", "control character"),
])
def test_bad_prefixes_are_refused(prefix, words):
    with pytest.raises(InputError, match="--log-predictions") as info:
        PredictionLog(prefix)
    assert words in str(info.value)


def test_an_unwritable_local_prefix_fails_the_check(tmp_path):
    (tmp_path / "file").write_text("x")
    plog = PredictionLog(str(tmp_path / "file" / "logs"))
    with pytest.raises(InputError, match="is not a writable folder"):
        plog.check()


@pytest.mark.parametrize("options, words", [
    ({"sample_rate": 1.5}, "--log-sample-rate"), ({"sample_rate": -0.1}, "--log-sample-rate"),
    ({"flush_rows": 0}, "--log-flush-rows"), ({"flush_seconds": 0}, "--log-flush-seconds"),
    ({"flush_seconds": math.inf}, "--log-flush-seconds"),
    ({"queue_rows": 10, "flush_rows": 20}, "at least --log-flush-rows"),
    ({"bigquery_table": "just_a_table"}, "--log-bigquery-table"),
    ({"bigquery_table": "ds.t; DROP x"}, "--log-bigquery-table"),
])
def test_bad_settings_are_refused_naming_the_option(tmp_path, options, words):
    with pytest.raises(InputError) as info:
        PredictionLog(str(tmp_path), **options)
    assert words in str(info.value)


def test_settings_come_from_the_environment():
    env = {"CONVEYOR_PREDICTION_LOG": "gs://b/logs", "CONVEYOR_PREDICTION_LOG_SAMPLE_RATE": "0.25",
           "CONVEYOR_PREDICTION_LOG_FLUSH_ROWS": "50", "CONVEYOR_PREDICTION_LOG_FLUSH_SECONDS": "",
           "CONVEYOR_PREDICTION_LOG_BIGQUERY_TABLE": "serving.predictions"}
    assert from_environment(env) == {"prefix": "gs://b/logs", "sample_rate": 0.25,
                                     "flush_rows": 50, "bigquery_table": "serving.predictions"}
    with pytest.raises(InputError, match="CONVEYOR_PREDICTION_LOG_FLUSH_ROWS: expected an "
                                         "integer, got 'many'"):
        from_environment({"CONVEYOR_PREDICTION_LOG_FLUSH_ROWS": "many"})


# -- any body the server may have parsed -------------------------------------------------------

def test_any_json_body_becomes_rows_that_write_as_parquet():
    """Arbitrary JSON (what parse_body can return: nesting, unicode keys, huge integers, NaN,
    lone surrogates) under the names of the signature's inputs or others, as rows or columns:
    rows_of never raises, gives exactly instance_count rows, and the rows write as Parquet."""
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    from conveyor.serving.log_format import instance_count, parquet_bytes

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 80, 2 ** 80),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                        st.sampled_from(["\ud800", "Île", "from", ""]))
    values = st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
        max_leaves=8)
    keys = st.one_of(st.sampled_from(sorted(SIG.inputs)), st.text(max_size=6))
    instance = st.one_of(st.dictionaries(keys, values, max_size=6), values)
    bodies = st.one_of(
        st.fixed_dictionaries({"instances": st.lists(instance, max_size=4)}),
        st.fixed_dictionaries({"inputs": st.dictionaries(keys, st.one_of(
            st.lists(values, max_size=4), values), max_size=6)}),
        values)
    answers = st.one_of(st.fixed_dictionaries({"predictions": st.lists(
        st.dictionaries(st.sampled_from(sorted(SIG.outputs)), values), max_size=4)}), values)

    @settings(max_examples=120, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @example(body={"instances": []}, answer="\ud800", status=400)  # once a bare error string
    @given(body=bodies, answer=answers, status=st.sampled_from([200, 400, 500]))
    def check(body, answer, status):
        e = entry(body=body, answer=answer, status=status)
        rows = rows_of(e)
        assert len(rows) == instance_count(body) >= 1
        assert parquet_bytes(rows, SIG)

    check()
