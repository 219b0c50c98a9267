"""Storage Read streams at once: `conveyor.ingest.bigquery.in_parallel` runs one reader thread
per stream, and `DatasetWriter(parts=...)` gives each its own shards, listed stream after stream."""

import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from conveyor.ingest.bigquery import in_parallel
from conveyor.io import DatasetWriter
from conveyor.io.dataset import Dataset


def items(values, delay=0.0, fail_at=None):
    def source():
        for i, value in enumerate(values):
            if i == fail_at:
                raise ConnectionError(f"stream broke at {value}")
            time.sleep(delay)
            yield value
    return source


def test_results_come_in_source_order_whatever_finishes_first():
    sources = [items(range(0, 5), delay=0.02), items(range(5, 10)), items(range(10, 12))]
    assert in_parallel(sources, lambda i, it: (i, list(it))) == [
        (0, [0, 1, 2, 3, 4]), (1, [5, 6, 7, 8, 9]), (2, [10, 11])]


def test_sources_are_read_at_the_same_time():
    barrier = threading.Barrier(3, timeout=5)

    def source():
        barrier.wait()  # BrokenBarrierError unless all three run at once
        yield 1

    assert in_parallel([source] * 3, lambda i, it: sum(it)) == [1, 1, 1]


def test_an_error_stops_the_other_streams_and_is_raised():
    started, stopped = [], []

    def endless():
        started.append(1)
        i = 0
        try:
            while True:
                time.sleep(0.001)
                yield i
                i += 1
        finally:
            stopped.append(1)

    def consume(i, it):
        for _ in it:
            pass

    with pytest.raises(ConnectionError, match="stream broke at 3"):
        in_parallel([endless, items(range(10), fail_at=3), endless], consume)
    assert not [t for t in threading.enumerate() if t.name.startswith("read-stream-")]
    assert len(stopped) == len(started)  # every endless stream that started was stopped


def _table(start, n):
    return pa.table({"id": pa.array(np.arange(start, start + n), pa.int64()),
                     "x": pa.array(np.arange(start, start + n) * 0.5)})


def test_parts_hold_the_same_dataset_as_one_writer(tmp_path):
    """Three parts written at once, out of order, give the rows of part 0, then 1, then 2: the
    same rows, order and fingerprint as writing them in that order through one part."""
    chunks = [[_table(p * 1000 + k * 100, 100) for k in range(10)] for p in range(3)]
    with DatasetWriter(tmp_path / "one", chunks[0][0].schema, ["train"], {"type": "test"},
                       shard_rows=250, row_group_rows=100) as one:
        for part in chunks:
            for t in part:
                one.write("train", t)

    def consume(p, tables):
        for t in tables:
            many.write("train", t, part=p)

    with DatasetWriter(tmp_path / "many", chunks[0][0].schema, ["train"], {"type": "test"},
                       shard_rows=250, row_group_rows=100, parts=3) as many:
        in_parallel([items(c, delay=0.001 * (3 - p)) for p, c in enumerate(chunks)], consume)
    a, b = Dataset(tmp_path / "one"), Dataset(tmp_path / "many")
    assert a.info.fingerprint == b.info.fingerprint
    assert a.read_table("train").equals(b.read_table("train"))
    assert b.split("train").rows == 3000
    assert [f.split("/")[-1] for f in b.split("train").files][:5] == [
        "part-00-00000.parquet", "part-00-00001.parquet", "part-00-00002.parquet",
        "part-00-00003.parquet", "part-01-00000.parquet"]


def test_an_error_in_one_part_leaves_nothing(tmp_path):
    def consume(p, tables):
        for t in tables:
            writer.write("train", t, part=p)

    good = [_table(k * 100, 100) for k in range(5)]
    with pytest.raises(ConnectionError):
        with DatasetWriter(tmp_path / "ds", good[0].schema, ["train"], {"type": "test"},
                           parts=2) as writer:
            in_parallel([items(good), items(good, fail_at=2)], consume)
    assert not (tmp_path / "ds").exists()
