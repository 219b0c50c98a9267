"""Prediction logging for `conveyor serve`: a sample of requests, one row per instance, in
Parquet files under a local folder or a gs:// prefix, and optionally loaded into BigQuery.

    PREFIX/date=2026-12-02/part-20261202T101500123456Z-<12 hex>.parquet

The rows' format and sampling are `conveyor.serving.log_format`, the files' places
`conveyor.serving.log_sinks` and the BigQuery table `conveyor.serving.log_bigquery`.

The request path only appends to a queue. A background thread turns the queued requests into
rows and writes a file when `flush_rows` rows are pending or the oldest is `flush_seconds` old.
Memory is bounded: rows not yet written (queued or pending) are counted against `queue_rows`
and their requests' body bytes against `queue_bytes`; a request that would pass either is
dropped whole and counted (`conveyor_prediction_log_rows_dropped_total{reason="queue_full"}`,
and a log line at most once a minute). A batch that fails to write is dropped and counted
(`reason="write_failed"`), the server keeps serving. `close()` (a clean stop, SIGTERM) writes
everything queued before it returns. Local files are written in a scratch folder of the
process's own and renamed into place; a killed process's is removed by the next one
(`conveyor.serving.log_sinks`).
"""

from __future__ import annotations

import collections
import datetime
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from conveyor.errors import InputError, one_line
from conveyor.serving.log_bigquery import BigQueryTable
from conveyor.serving.log_format import (
    Entry,
    Signature,
    instance_count,
    parquet_bytes,
    rows_of,
    sampled,
)
from conveyor.serving.log_sinks import sink_for

log = logging.getLogger("conveyor.serve")

DEFAULT_FLUSH_ROWS = 1000
DEFAULT_FLUSH_SECONDS = 10.0
DEFAULT_QUEUE_ROWS = 100_000
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024
DROP_LOG_EVERY = 60.0  # seconds between "dropped rows" log lines


# -- the logger ------------------------------------------------------------------------------

class PredictionLog:
    """The queue, the writer thread and the counters (see the module docstring).

    `registry` is the Prometheus registry the counters join; None gives the log its own
    (`.registry`). `clock` gives wall-clock seconds for file names."""

    def __init__(self, prefix: str, sample_rate: float = 1.0,
                 flush_rows: int = DEFAULT_FLUSH_ROWS,
                 flush_seconds: float = DEFAULT_FLUSH_SECONDS,
                 queue_rows: int = DEFAULT_QUEUE_ROWS, queue_bytes: int = DEFAULT_QUEUE_BYTES,
                 bigquery_table: str | None = None, registry=None,
                 clock: Callable[[], float] = time.time):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        if not (isinstance(sample_rate, (int, float)) and 0.0 <= sample_rate <= 1.0):
            raise InputError(f"--log-sample-rate: expected a number from 0 to 1, got "
                             f"{sample_rate!r}")
        for option, value in (("--log-flush-rows", flush_rows),
                              ("--log-queue-rows", queue_rows),
                              ("--log-queue-bytes", queue_bytes)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{option}: expected a whole number of at least 1, got "
                                 f"{value!r}")
        if not (isinstance(flush_seconds, (int, float)) and 0 < flush_seconds < math.inf):
            raise InputError(f"--log-flush-seconds: expected a positive number of seconds, got "
                             f"{flush_seconds!r}")
        if queue_rows < flush_rows:
            raise InputError(f"--log-queue-rows ({queue_rows}) must be at least "
                             f"--log-flush-rows ({flush_rows})")
        self.sink = sink_for(prefix)
        self.bigquery = BigQueryTable(bigquery_table) if bigquery_table else None
        self.sample_rate = float(sample_rate)
        self.flush_rows, self.flush_seconds = flush_rows, float(flush_seconds)
        self.queue_rows, self.queue_bytes = queue_rows, queue_bytes
        self._clock = clock
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.rows_written = Counter("conveyor_prediction_log_rows_written",
                                    "Prediction log rows written to files", registry=registry)
        self.files_written = Counter("conveyor_prediction_log_files_written",
                                     "Prediction log files written", registry=registry)
        self.rows_dropped = Counter("conveyor_prediction_log_rows_dropped",
                                    "Sampled prediction log rows not written, by reason",
                                    ["reason"], registry=registry)
        self.write_failures = Counter("conveyor_prediction_log_write_failures",
                                      "Prediction log files that failed to write",
                                      registry=registry)
        self.bigquery_rows = Counter("conveyor_prediction_log_bigquery_rows",
                                     "Prediction log rows loaded into BigQuery",
                                     registry=registry)
        self.bigquery_failures = Counter("conveyor_prediction_log_bigquery_failures",
                                         "Prediction log files that failed to load into "
                                         "BigQuery", registry=registry)
        self.queued = Gauge("conveyor_prediction_log_queued_rows",
                            "Prediction log rows waiting to be written", registry=registry)
        for reason in ("queue_full", "write_failed", "stopped"):
            self.rows_dropped.labels(reason)
        self._queue: collections.deque[Entry] = collections.deque()
        self._rows = 0  # rows not yet written: queued, or pending in the writer
        self._bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._dropped_since_line = 0
        self._last_drop_line = -math.inf
        self._last_failure_line = -math.inf
        self.describe = (f"{self.sink.uri} (sample rate {self.sample_rate:g}, a file every "
                         f"{flush_rows} rows or {self.flush_seconds:g} s"
                         + (f", loaded into BigQuery {bigquery_table}" if bigquery_table else "")
                         + ")")

    # -- the request path ------------------------------------------------------------------

    def sampled(self, request_id: str) -> bool:
        return sampled(request_id, self.sample_rate)

    def submit(self, entry: Entry) -> bool:
        """Queue one answered request; never blocks. False (counted) when the queue is full."""
        entry.rows = instance_count(entry.body)
        with self._cond:
            if self._closing:
                self.rows_dropped.labels("stopped").inc(entry.rows)
                return False
            if (self._rows + entry.rows > self.queue_rows
                    or self._bytes + entry.body_bytes > self.queue_bytes):
                self.rows_dropped.labels("queue_full").inc(entry.rows)
                self._dropped_since_line += entry.rows
                return False
            self._queue.append(entry)
            self._rows += entry.rows
            self._bytes += entry.body_bytes
            self.queued.set(self._rows)
            if self._rows >= self.flush_rows:
                self._cond.notify()
        return True

    # -- lifecycle -----------------------------------------------------------------------------

    def check(self) -> None:
        """Fail fast: raise an InputError if the prefix (or the BigQuery dataset) is not usable."""
        self.sink.check()
        if self.bigquery:
            self.bigquery.check()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="conveyor-prediction-log",
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float = 60.0) -> bool:
        """Stop taking rows and write everything queued; True if it all went out in time."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is None:
            self._drain()
        else:
            self._thread.join(timeout)
        with self._cond:
            left = self._rows
        if self._thread is None or not self._thread.is_alive():
            self.sink.close()  # its scratch folder (a writer still running keeps it)
        if left:
            log.warning("prediction log: %d rows still unwritten after %.0f s at stop",
                        left, timeout)
        return left == 0

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        pending: dict[tuple[str, int], tuple[Signature, list[dict]]] = {}
        oldest: list[float] = []  # wall-clock arrival of the oldest pending row
        while True:
            with self._cond:
                if not self._closing and not (self._queue and self._rows >= self.flush_rows):
                    self._cond.wait(self._next_wait(oldest))
                entries = list(self._queue)
                self._queue.clear()
                closing = self._closing
            try:
                self._take(entries, pending, oldest)
                if (closing or self._pending_rows(pending) >= self.flush_rows
                        or (oldest and time.time() - oldest[0] >= self.flush_seconds)):
                    self._flush(pending)
                    oldest.clear()
                self._log_drops()
            except Exception:  # a bug here must not stop the logging for good
                log.exception("prediction log: the writer raised; its pending rows are dropped")
                self._release(self._pending_rows(pending), None, "write_failed")
                pending.clear()
                oldest.clear()
            if closing:
                with self._cond:
                    if not self._queue:
                        return

    def _next_wait(self, oldest: list[float]) -> float:
        if oldest:
            return max(0.01, min(1.0, oldest[0] + self.flush_seconds - time.time()))
        return 1.0

    @staticmethod
    def _pending_rows(pending) -> int:
        return sum(len(rows) for _, rows in pending.values())

    def _take(self, entries: list[Entry], pending, oldest) -> None:
        for entry in entries:
            try:
                rows = rows_of(entry)[:entry.rows]  # the budget counted entry.rows
            except Exception as exc:
                log.warning("prediction log: request %s could not be turned into rows: %s",
                            entry.request_id, one_line(exc))
                self._release(entry.rows, entry.body_bytes, "write_failed")
                continue
            if not oldest:
                oldest.append(entry.received)
            for row in rows:
                day = row["timestamp"].strftime("%Y-%m-%d")
                pending.setdefault((day, entry.model_version),
                                   (entry.signature, []))[1].append(row)
            with self._cond:
                self._bytes -= entry.body_bytes
                self._rows -= entry.rows - len(rows)
            entry.body = entry.answer = None

    def _flush(self, pending) -> None:
        """Write the pending rows: one file per (date, model version)."""
        for key in sorted(pending):
            signature, all_rows = pending.pop(key)
            for start in range(0, len(all_rows), self.flush_rows):
                self._write(key[0], signature, all_rows[start:start + self.flush_rows])

    def _write(self, day: str, signature: Signature, rows: list[dict]) -> None:
        """One file of `rows` (of one date and version), then its BigQuery load."""
        stamp = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        name = (f"date={day}/part-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}-"
                f"{uuid.uuid4().hex[:12]}.parquet")
        try:
            data = parquet_bytes(rows, signature)
            self.sink.write(name, data)
        except Exception as exc:  # serving goes on; the loss is counted
            self.write_failures.inc()
            self._release(len(rows), None, "write_failed")
            now = time.monotonic()
            if now - self._last_failure_line >= DROP_LOG_EVERY:
                self._last_failure_line = now
                log.warning("prediction log: writing %d rows to %s/%s failed (%s); they "
                            "are dropped (counted), serving goes on", len(rows),
                            self.sink.uri, name, one_line(exc))
            return
        self.files_written.inc()
        self.rows_written.inc(len(rows))
        self._release(len(rows), None, None)
        if self.bigquery is not None:
            try:
                self.bigquery.load(data, signature)
                self.bigquery_rows.inc(len(rows))
            except Exception as exc:
                self.bigquery_failures.inc()
                log.warning("prediction log: loading %s/%s into BigQuery %s failed: %s",
                            self.sink.uri, name, self.bigquery.spec, one_line(exc))

    def _release(self, rows: int, body_bytes: int | None, reason: str | None) -> None:
        with self._cond:
            self._rows -= rows
            if body_bytes:
                self._bytes -= body_bytes
            self.queued.set(self._rows)
        if reason:
            self.rows_dropped.labels(reason).inc(rows)

    def _log_drops(self) -> None:
        with self._cond:
            dropped = self._dropped_since_line
            now = time.monotonic()
            if not dropped or now - self._last_drop_line < DROP_LOG_EVERY:
                return
            self._dropped_since_line = 0
            self._last_drop_line = now
        log.warning("prediction log: the queue was full (%d rows or %d bytes waiting); dropped "
                    "%d sampled rows since the last such line (conveyor_prediction_log_rows_"
                    "dropped_total{reason=\"queue_full\"})", self.queue_rows, self.queue_bytes,
                    dropped)

    def _drain(self) -> None:
        """Write everything queued, in the calling thread (no writer thread was started)."""
        with self._cond:
            entries = list(self._queue)
            self._queue.clear()
        pending: dict = {}
        self._take(entries, pending, [])
        self._flush(pending)


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The logging settings the environment gives (for manifests): CONVEYOR_PREDICTION_LOG
    (the prefix), CONVEYOR_PREDICTION_LOG_SAMPLE_RATE, _FLUSH_ROWS, _FLUSH_SECONDS, _QUEUE_ROWS,
    _QUEUE_BYTES and _BIGQUERY_TABLE; only those set."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    names = {"prefix": ("CONVEYOR_PREDICTION_LOG", str),
             "sample_rate": ("CONVEYOR_PREDICTION_LOG_SAMPLE_RATE", float),
             "flush_rows": ("CONVEYOR_PREDICTION_LOG_FLUSH_ROWS", int),
             "flush_seconds": ("CONVEYOR_PREDICTION_LOG_FLUSH_SECONDS", float),
             "queue_rows": ("CONVEYOR_PREDICTION_LOG_QUEUE_ROWS", int),
             "queue_bytes": ("CONVEYOR_PREDICTION_LOG_QUEUE_BYTES", int),
             "bigquery_table": ("CONVEYOR_PREDICTION_LOG_BIGQUERY_TABLE", str)}
    out: dict[str, Any] = {}
    for key, (variable, kind) in names.items():
        value = env.get(variable, "").strip()
        if not value:
            continue
        try:
            out[key] = kind(value)
        except ValueError:
            expected = "a number" if kind is float else "an integer"
            raise InputError(f"{variable}: expected {expected}, got {value!r}") from None
    return out
