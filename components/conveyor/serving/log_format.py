"""The prediction log's record format: what the server hands over for one request (`Entry`, the
model's `Signature`), whether it is sampled, and the rows and Parquet bytes it becomes.

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
fields.

Sampling is deterministic by request id: a request is logged when the first 8 bytes of the
BLAKE2b hash of its id, as a fraction of 2^64, are below the sample rate, so a client-given id
is logged (or not) by every replica alike.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

FORMAT = "1"
ERROR_CHARS = 1000
MAX_REQUEST_ID = 128  # characters of a client's X-Request-Id kept


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
    def of(cls, inputs: dict[str, Any], outputs: dict[str, Any]) -> Signature:
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
            longest = max((len(v) for v in inputs.values() if isinstance(v, list)), default=0)
            if longest:
                return longest
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
            "timestamp": datetime.datetime.fromtimestamp(entry.received, datetime.UTC),
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
        body_text = None if entry.body is None else _json(entry.body)
        return [{**base, "instance": None, "features": None, "unparsed": body_text,
                 "outputs": None, "error": error}]
    outputs = _answers(entry.answer, len(instances)) if entry.status == 200 else None
    rows = []
    for i, instance in enumerate(instances):
        features: dict[str, Any] = {}
        unparsed: dict[str, Any] = {}
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
