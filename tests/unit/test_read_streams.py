"""`conveyor.ingest.bigquery.in_order`: Storage Read streams read at once, consumed in order."""

import threading
import time

import pytest

from conveyor.ingest.bigquery import in_order


def slow(items, delay=0.0, fail_at=None):
    def source():
        for i, item in enumerate(items):
            if i == fail_at:
                raise ConnectionError(f"stream broke at {item}")
            time.sleep(delay)
            yield item
    return source


def test_items_come_in_source_order_whatever_finishes_first():
    # The first source is the slowest: the others are read meanwhile, and wait their turn.
    sources = [slow(range(0, 5), delay=0.02), slow(range(5, 10)), slow(range(10, 15))]
    assert list(in_order(sources, buffered=2)) == list(range(15))


def test_sources_are_read_at_the_same_time():
    started = []
    barrier = threading.Barrier(3, timeout=5)

    def source(n):
        def read():
            started.append(n)
            barrier.wait()  # deadlocks (BrokenBarrierError) unless all three run at once
            yield n
        return read

    assert list(in_order([source(0), source(1), source(2)], buffered=1)) == [0, 1, 2]


def test_an_error_in_a_stream_reaches_the_consumer_after_the_rows_before_it():
    got = []
    with pytest.raises(ConnectionError, match="stream broke at 7"):
        for item in in_order([slow(range(5)), slow(range(5, 10), fail_at=2)], buffered=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4, 5, 6]


def test_closing_early_stops_every_reader():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    items = in_order([endless, endless, endless], buffered=3)
    assert [next(items) for _ in range(4)] == [0, 1, 2, 3]
    items.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
