"""Prediction logging for `conveyor serve`: a sample of requests, one row per instance, in
Parquet files under a local folder or a gs:// prefix, and optionally loaded into BigQuery.

    PREFIX/date=2026-12-02/part-20261202T101500123456Z-<12 hex>.parquet

Each row (format 1, `conveyor.prediction_log.format` in the file's metadata):

    request_id     string      the request's X-Request-Id header, else one the server made up
                               (answered in the X-Request-Id response header either way)
    instance       int32       the row's position in the request; null when the body held no
                               instance (not JSON, not an object, no 'instances'/'inputs')
    timestamp      timestamp   when the request arrived (UTC, microseconds)
    model_name     string
    model_version  int64       the version that answered
    status         int32       the HTTP status answered: 200, 400, 413 or 500
    latency_ms     float64     the server's time for the request
    features       struct      one field per serving-signature input, typed from it (float64,
                               int64, string, bool); null for a missing or null value
    unparsed       string      JSON object of the values that do not fit their typed field (a
                               string for a numeric input, an integer beyond int64, ...) and of
                               keys the model does not take, so nothing sent is lost; null if none
    outputs        struct      one field per output ([None] outputs as scalars, [None, k] as
                               lists); null unless the status is 200
    error          string      the error answered (first 1,000 characters); null for a 200

A file holds one date and one model version, so its `features` and `outputs` have that version's
fields. Files are written whole or not at all: locally to a dot-named temporary file in the same
folder, fsynced and renamed into place (readers such as pyarrow's datasets skip dot files); on
Cloud Storage as one create-only upload (an object is visible only once complete).

Sampling is deterministic by request id: a request is logged when the first 8 bytes of the
BLAKE2b hash of its id, as a fraction of 2^64, are below the sample rate, so a client-given id
is logged (or not) by every replica alike.

The request path only appends to a queue. A background thread turns the queued requests into
rows and writes a file when `flush_rows` rows are pending or the oldest is `flush_seconds` old.
Memory is bounded: rows not yet written (queued or pending) are counted against `queue_rows`
and their requests' body bytes against `queue_bytes`; a request that would pass either is
dropped whole and counted (`conveyor_prediction_log_rows_dropped_total{reason="queue_full"}`,
and a log line at most once a minute). A batch that fails to write is dropped and counted
(`reason="write_failed"`), the server keeps serving. `close()` (a clean stop, SIGTERM) writes
everything queued before it returns.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from conveyor.errors import InputError, SourceNotFoundError, one_line
from conveyor.io.location import Location, PreconditionError

log = logging.getLogger("conveyor.serve")

FORMAT = "1"
DEFAULT_FLUSH_ROWS = 1000
DEFAULT_FLUSH_SECONDS = 10.0
DEFAULT_QUEUE_ROWS = 100_000
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024
ERROR_CHARS = 1000
DROP_LOG_EVERY = 60.0  # seconds between "dropped rows" log lines
MAX_REQUEST_ID = 128  # characters of a client's X-Request-Id kept

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
_TABLE = re.compile(r"^(?:(?P<project>[A-Za-z0-9-]+)[.:])?(?P<dataset>[A-Za-z0-9_]+)\."
                    r"(?P<table>[A-Za-z0-9_-]+)$")


# -- what the server hands over ----------------------------------------------------------------

def kind_of(dtype_name: str) -> str:
    """The log column kind of a serving-signature dtype: float, int, string, bool."""
    if dtype_name.startswith(("float", "bfloat", "half", "double")):
        return "float"
    if dtype_name.startswith(("int", "uint")):
        return "int"
    if dtype_name == "bool":
        return "bool"
    return "string"


@dataclass(frozen=True)
class Signature:
    """What the log needs of a model version: its inputs' kinds and its outputs' kinds and
    ranks (1: one value per instance, 2: a list per instance, else the value as JSON text)."""

    inputs: dict[str, str]
    outputs: dict[str, tuple[str, int]]

    @classmethod
    def of(cls, inputs: dict[str, Any], outputs: dict[str, Any]) -> "Signature":
        """From TensorSpecs (anything with `.dtype.name` and `.shape.rank`)."""
        return cls({n: kind_of(s.dtype.name) for n, s in inputs.items()},
                   {n: (kind_of(s.dtype.name), _rank(s)) for n, s in outputs.items()})


def _rank(spec: Any) -> int:
    try:
        rank = spec.shape.rank
    except AttributeError:
        return 0
    return -1 if rank is None else int(rank)


@dataclass
class Entry:
    """One answered predict request, as the request path enqueues it (nothing converted)."""

    request_id: str
    received: float  # time.time() when it arrived
    model_name: str
    model_version: int
    signature: Signature
    status: int
    body: Any  # the parsed JSON body, None when it did not parse (or was not read)
    answer: Any  # the JSON answered
    latency_ms: float
    body_bytes: int
    rows: int = field(default=1)


def instance_count(body: Any) -> int:
    """The rows a request's body becomes in the log (at least 1)."""
    if isinstance(body, dict):
        rows = body.get("instances")
        if isinstance(rows, list) and rows:
            return len(rows)
        inputs = body.get("inputs")
        if isinstance(inputs, dict) and inputs:
            lengths = [len(v) for v in inputs.values() if isinstance(v, list)]
            if lengths and max(lengths):
                return max(lengths)
    return 1


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request with this id is logged at `rate` (deterministic)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2 ** 64


def request_id(header: str | None) -> str:
    """The request's id: the client's X-Request-Id (cut to 128 characters), else a new one."""
    if header:
        header = header.strip()[:MAX_REQUEST_ID]
        if header:
            return header
    return uuid.uuid4().hex


# -- rows ----------------------------------------------------------------------------------------

_MISSING = object()


def _fit(kind: str, value: Any) -> Any:
    """`value` as a `kind` column holds it, or _MISSING when it does not fit."""
    if value is None:
        return None
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _MISSING
        try:
            return float(value)
        except OverflowError:
            return _MISSING
    if kind == "int":
        if isinstance(value, bool):
            return int(value)  # the server feeds true/false to integer inputs as 1/0
        if isinstance(value, int) and -2 ** 63 <= value < 2 ** 63:
            return value
        return _MISSING
    if kind == "bool":
        return value if isinstance(value, bool) else _MISSING
    if isinstance(value, str) and _encodable(value):
        return value
    return _MISSING


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, allow_nan=True, default=repr)
    return text if _encodable(text) else json.dumps(value, allow_nan=True, default=repr)


def _output(kind: str, rank: int, value: Any) -> Any:
    if rank == 1:
        fitted = _fit(kind, value)
        return None if fitted is _MISSING else fitted
    if rank == 2:
        if not isinstance(value, list):
            return None
        out = [_fit(kind, v) for v in value]
        return [None if v is _MISSING else v for v in out]
    return None if value is None else _json(value)


def rows_of(entry: Entry) -> list[dict[str, Any]]:
    """The log rows of one request: one per instance (see the module docstring)."""
    sig = entry.signature
    base = {"request_id": entry.request_id,
            "timestamp": datetime.datetime.fromtimestamp(entry.received, datetime.timezone.utc),
            "model_name": entry.model_name, "model_version": entry.model_version,
            "status": entry.status, "latency_ms": round(entry.latency_ms, 3)}
    error = None
    if entry.status != 200:
        message = entry.answer.get("error") if isinstance(entry.answer, dict) else None
        error = str(message if message is not None else entry.answer)[:ERROR_CHARS]
        if not _encodable(error):  # a lone surrogate (echoed from the request): escaped
            error = error.encode("utf-8", "backslashreplace").decode("utf-8")
    instances = _instances(entry.body)
    if instances is None:
        unparsed = None if entry.body is None else _json(entry.body)
        return [{**base, "instance": None, "features": None, "unparsed": unparsed,
                 "outputs": None, "error": error}]
    outputs = _answers(entry.answer, len(instances)) if entry.status == 200 else None
    rows = []
    for i, instance in enumerate(instances):
        features, unparsed = {}, {}
        if isinstance(instance, dict):
            for name, kind in sig.inputs.items():
                value = instance.get(name)
                fitted = _fit(kind, value)
                if fitted is _MISSING:
                    unparsed[name] = value
                    fitted = None
                features[name] = fitted
            for key in instance:
                if key not in sig.inputs:
                    unparsed[key] = instance[key]
        else:
            features = {name: None for name in sig.inputs}
            unparsed = {"_instance": instance}
        out = None
        if outputs is not None:
            answer = outputs[i]
            out = {name: _output(kind, rank, answer.get(name))
                   for name, (kind, rank) in sig.outputs.items()}
        rows.append({**base, "instance": i, "features": features,
                     "unparsed": _json(unparsed) if unparsed else None, "outputs": out,
                     "error": error})
    return rows


def _instances(body: Any) -> list | None:
    """The body's instances as rows (columnar 'inputs' turned into rows), None if it has none."""
    if not isinstance(body, dict):
        return None
    rows = body.get("instances")
    if isinstance(rows, list) and rows:
        return rows
    inputs = body.get("inputs")
    if isinstance(inputs, dict) and inputs:
        columns = {k: v for k, v in inputs.items() if isinstance(v, list)}
        n = max((len(v) for v in columns.values()), default=0)
        if n:
            out = [{k: v[i] for k, v in columns.items() if i < len(v)} for i in range(n)]
            for k, v in inputs.items():
                if not isinstance(v, list):
                    out[0][k] = v
            return out
    return None


def _answers(answer: Any, n: int) -> list[dict]:
    if isinstance(answer, dict) and isinstance(answer.get("predictions"), list):
        got = answer["predictions"]
        return [got[i] if i < len(got) and isinstance(got[i], dict) else {} for i in range(n)]
    if isinstance(answer, dict) and isinstance(answer.get("outputs"), dict):
        cols = answer["outputs"]
        return [{k: v[i] for k, v in cols.items() if isinstance(v, list) and i < len(v)}
                for i in range(n)]
    return [{} for _ in range(n)]


def arrow_schema(signature: Signature):
    import pyarrow as pa

    types = {"float": pa.float64(), "int": pa.int64(), "string": pa.string(),
             "bool": pa.bool_()}

    def output_type(kind: str, rank: int):
        if rank == 1:
            return types[kind]
        if rank == 2:
            return pa.list_(types[kind])
        return pa.string()

    features = pa.struct([(n, types[k]) for n, k in signature.inputs.items()])
    outputs = pa.struct([(n, output_type(k, r)) for n, (k, r) in signature.outputs.items()])
    return pa.schema([
        ("request_id", pa.string()), ("instance", pa.int32()),
        ("timestamp", pa.timestamp("us", tz="UTC")), ("model_name", pa.string()),
        ("model_version", pa.int64()), ("status", pa.int32()), ("latency_ms", pa.float64()),
        ("features", features), ("unparsed", pa.string()), ("outputs", outputs),
        ("error", pa.string()),
    ], metadata={"conveyor.prediction_log.format": FORMAT})


def parquet_bytes(rows: list[dict], signature: Signature) -> bytes:
    import pyarrow as pa
    from conveyor.io import parquet

    schema = arrow_schema(signature)
    table = pa.Table.from_pylist(rows, schema=schema)
    return parquet.buffer(table, compression="zstd").getvalue()


# -- where files go ------------------------------------------------------------------------------

class Sink:
    """A place files are written to whole: a local folder or a gs:// prefix."""

    uri: str

    def write(self, relative: str, data: bytes) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """Raise an InputError now if files cannot be written (fail fast)."""
        raise NotImplementedError


class LocalSink(Sink):
    def __init__(self, folder: str):
        self.uri = os.path.normpath(folder)
        self.root = Path(self.uri)
        self.location = Location.parse(self.uri)

    def write(self, relative: str, data: bytes) -> None:
        self.location.child(relative).write_bytes(data)  # whole: a temporary, then a rename

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".conveyor-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise InputError(f"--log-predictions: {self.uri} is not a writable folder: "
                             f"{exc.strerror or exc}") from None


class GcsSink(Sink):
    def __init__(self, uri: str):
        bucket, _, prefix = uri[5:].partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise InputError(f"--log-predictions: {bucket!r} in {uri!r} is not a Cloud Storage "
                             "bucket name (expected gs://bucket/path)")
        prefix = prefix.strip("/")
        if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
            raise InputError(f"--log-predictions: {uri!r} has an empty, '.' or '..' folder name")
        self.bucket_name, self.prefix = bucket, prefix
        self.uri = f"gs://{bucket}" + (f"/{prefix}" if prefix else "")
        self.location = Location.parse(self.uri)

    def write(self, relative: str, data: bytes) -> None:
        try:  # create-only, so a retry after a lost response cannot write the file twice
            self.location.child(relative).write_bytes(
                data, content_type="application/vnd.apache.parquet", if_generation_match=0)
        except PreconditionError:
            pass  # the unique name exists: an earlier attempt of this very upload succeeded

    def check(self) -> None:
        from google.api_core.exceptions import Forbidden, GoogleAPIError, NotFound

        from conveyor import gcp
        from conveyor.gcp import retry

        try:
            with retry.giving_up(f"--log-predictions: check {self.uri}"):
                gcp.storage_client().get_bucket(self.bucket_name, retry=retry.storage())
                probe = self.location.child(f".conveyor-probe-{uuid.uuid4().hex}")
                probe.write_bytes(b"", if_generation_match=0)
                probe.delete()
        except NotFound:
            raise SourceNotFoundError(f"--log-predictions: bucket gs://{self.bucket_name} "
                                      "not found") from None
        except (Forbidden, GoogleAPIError) as exc:
            raise InputError(f"--log-predictions: {self.uri} is not writable: "
                             f"{one_line(exc)}") from None


def sink_for(prefix: str) -> Sink:
    if not isinstance(prefix, str) or not prefix.strip():
        raise InputError("--log-predictions: empty; expected a local folder or gs://bucket/path")
    if any(ord(c) < 32 or ord(c) == 127 for c in prefix):
        raise InputError(f"--log-predictions: {prefix!r} holds a control character")
    if prefix.startswith("gs://"):
        return GcsSink(prefix)
    if _SCHEME.match(prefix):
        raise InputError(f"--log-predictions: {prefix!r}: only a local folder or gs://bucket/path")
    return LocalSink(prefix)


# -- BigQuery --------------------------------------------------------------------------------

class BigQueryTable:
    """Each written file is also loaded (a Parquet load job, WRITE_APPEND) into `table`,
    created if missing with the first file's schema. The Parquet file is the record: a failed
    load is counted and logged, the file stays."""

    def __init__(self, table: str):
        match = _TABLE.match(table or "")
        if not match:
            raise InputError(f"--log-bigquery-table: {table!r} is not dataset.table or "
                             "project.dataset.table (letters, digits, '_'; '-' in a project)")
        self.project, self.dataset, self.table = match["project"], match["dataset"], \
            match["table"]
        self.spec = table
        self._client = None
        self._ready: set[str] = set()

    @property
    def client(self):
        if self._client is None:
            from conveyor import gcp

            self._client = gcp.bigquery_client(self.project)
        return self._client

    @property
    def table_id(self) -> str:
        return f"{self.client.project}.{self.dataset}.{self.table}"

    def check(self) -> None:
        from google.api_core.exceptions import GoogleAPIError, NotFound

        from conveyor.gcp import retry

        try:
            with retry.giving_up(f"--log-bigquery-table: check {self.spec}"):
                self.client.get_dataset(f"{self.client.project}.{self.dataset}",
                                        retry=retry.bigquery())
        except NotFound:
            raise SourceNotFoundError(f"--log-bigquery-table: dataset {self.client.project}."
                                      f"{self.dataset} not found") from None
        except GoogleAPIError as exc:
            raise InputError(f"--log-bigquery-table: {self.spec}: {one_line(exc)}") from None

    def load(self, data: bytes, signature: Signature) -> None:
        from google.api_core.exceptions import Conflict, NotFound
        from google.cloud import bigquery

        from conveyor.gcp import retry

        schema = bigquery_schema(signature)
        key = json.dumps([f.to_api_repr() for f in schema], sort_keys=True)
        if key not in self._ready:
            try:
                table = self.client.get_table(self.table_id, retry=retry.bigquery())
            except NotFound:
                try:
                    self.client.create_table(bigquery.Table(self.table_id, schema=schema),
                                             retry=retry.bigquery())
                except Conflict:
                    pass  # another replica created it
            else:
                have = {f.name for f in table.schema}
                added = [f for f in schema if f.name not in have]
                if added:
                    table.schema = [*table.schema, *added]
                    self.client.update_table(table, ["schema"], retry=retry.bigquery())
            self._ready.add(key)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET, schema=schema,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            schema_update_options=[bigquery.SchemaUpdateOption.ALLOW_FIELD_ADDITION])
        job = self.client.load_table_from_file(io.BytesIO(data), self.table_id,
                                               job_config=config, rewind=True)
        job.result(retry=retry.bigquery(), timeout=retry.deadline())


def bigquery_schema(signature: Signature):
    from google.cloud import bigquery

    types = {"float": "FLOAT64", "int": "INT64", "string": "STRING", "bool": "BOOL"}

    def output(name: str, kind: str, rank: int):
        if rank == 1:
            return bigquery.SchemaField(name, types[kind])
        if rank == 2:
            return bigquery.SchemaField(name, types[kind], mode="REPEATED")
        return bigquery.SchemaField(name, "STRING")

    F = bigquery.SchemaField
    return [
        F("request_id", "STRING"), F("instance", "INT64"), F("timestamp", "TIMESTAMP"),
        F("model_name", "STRING"), F("model_version", "INT64"), F("status", "INT64"),
        F("latency_ms", "FLOAT64"),
        F("features", "RECORD", fields=[F(n, types[k]) for n, k in signature.inputs.items()]),
        F("unparsed", "STRING"),
        F("outputs", "RECORD", fields=[output(n, k, r)
                                       for n, (k, r) in signature.outputs.items()]),
        F("error", "STRING"),
    ]


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
            except Exception:  # noqa: BLE001  (a bug here must not stop the logging for good)
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
            except Exception as exc:  # noqa: BLE001
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
        stamp = datetime.datetime.fromtimestamp(self._clock(), datetime.timezone.utc)
        name = (f"date={day}/part-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}-"
                f"{uuid.uuid4().hex[:12]}.parquet")
        try:
            data = parquet_bytes(rows, signature)
            self.sink.write(name, data)
        except Exception as exc:  # noqa: BLE001  (serving goes on; the loss is counted)
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
            except Exception as exc:  # noqa: BLE001
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


def from_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The logging settings the environment gives (for manifests): CONVEYOR_PREDICTION_LOG
    (the prefix), CONVEYOR_PREDICTION_LOG_SAMPLE_RATE, _FLUSH_ROWS, _FLUSH_SECONDS, _QUEUE_ROWS,
    _QUEUE_BYTES and _BIGQUERY_TABLE; only those set."""
    environ = os.environ if environ is None else environ
    names = {"prefix": ("CONVEYOR_PREDICTION_LOG", str),
             "sample_rate": ("CONVEYOR_PREDICTION_LOG_SAMPLE_RATE", float),
             "flush_rows": ("CONVEYOR_PREDICTION_LOG_FLUSH_ROWS", int),
             "flush_seconds": ("CONVEYOR_PREDICTION_LOG_FLUSH_SECONDS", float),
             "queue_rows": ("CONVEYOR_PREDICTION_LOG_QUEUE_ROWS", int),
             "queue_bytes": ("CONVEYOR_PREDICTION_LOG_QUEUE_BYTES", int),
             "bigquery_table": ("CONVEYOR_PREDICTION_LOG_BIGQUERY_TABLE", str)}
    out: dict[str, Any] = {}
    for key, (variable, kind) in names.items():
        value = environ.get(variable, "").strip()
        if not value:
            continue
        try:
            out[key] = kind(value)
        except ValueError:
            expected = "a number" if kind is float else "an integer"
            raise InputError(f"{variable}: expected {expected}, got {value!r}") from None
    return out
