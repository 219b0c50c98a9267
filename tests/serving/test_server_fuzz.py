"""Property-based tests of `conveyor serve`'s request handling: whatever a client sends, the
answer is 2xx for a valid request or 4xx with a JSON `{"error": ...}` body, never 5xx, and the
server still predicts afterwards.

The bulk of the examples go to the ASGI app in this process (starlette's TestClient: fast, so
many examples); a smaller run goes to a real `conveyor serve` process on 127.0.0.1, which also
checks the default request limits (413) and that it binds to loopback. Hypothesis runs
derandomized, without its example database, so CI sees the same examples every time.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support import free_ports
from support.serving import ROW, app_client

from conveyor.registry import ModelBasePath
from conveyor.serving import MAX_BODY_BYTES, MAX_INSTANCES

pytestmark = [pytest.mark.local]

STRINGS = ["island", "sex"]
NUMBERS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
PREDICT = "/v1/models/penguins:predict"
PATHS = [PREDICT, "/v1/models/penguins/versions/1:predict",
         "/v1/models/penguins/versions/9:predict",
         "/v1/models/other:predict", "/v1/models/penguins:classify", "/v1/models/penguins:regress",
         "/v1/models/penguins/metadata", "/v1/models/penguins/versions/1/metadata",
         "/v1/models/penguins", "/v1/models/penguins/versions/1", "/v1/models/", "/v1/x"]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain",
                 "application/x-www-form-urlencoded", "application/octet-stream",
                 "multipart/form-data; boundary=x", "image/png", ";;;", b"\xc3\xa9/\xff"]


def fuzz_settings(examples: int):
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


# -- what clients send --------------------------------------------------------------------------

odd_numbers = st.sampled_from([2**31, 2**63, -(2**63) - 1, 2**64, 10**39, -(10**39), 10**400,
                               3.4e38, 3.5e38, 1e308, -1e308, 5e-324, -0.0, math.nan, math.inf,
                               -math.inf])
leaves = (st.none() | st.booleans() | st.integers() | odd_numbers | st.floats()
          | st.text(max_size=20))
any_json = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
text_values = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
valid_values = {
    **{name: st.none() | text_values for name in STRINGS},
    **{name: st.none() | st.just(math.nan) | st.floats(-3.0e38, 3.0e38)
       | st.integers(-(10**38), 10**38) for name in NUMBERS},
}
valid_rows = st.fixed_dictionaries(valid_values)


def columnar(rows: list[dict]) -> dict:
    names = sorted({name for row in rows for name in row})
    return {name: [row[name] for row in rows if name in row] for name in names}


@st.composite
def mutated_rows(draw) -> dict:
    """A row with features dropped, renamed, retyped or added."""
    row = dict(draw(valid_rows))
    for op in draw(st.lists(st.sampled_from(["drop", "add", "retype", "rename"]), max_size=3)):
        if op == "add":
            row[draw(st.text(max_size=12))] = draw(any_json)
        elif row:
            name = draw(st.sampled_from(sorted(row)))
            if op == "drop":
                del row[name]
            elif op == "retype":
                row[name] = draw(any_json)
            else:
                row[name.upper() + draw(st.text(max_size=3))] = row.pop(name)
    return row


@st.composite
def bodies(draw) -> object:
    """A request body as JSON data: right or wrong in structure, names, types and values."""
    rows = draw(st.lists(mutated_rows() | valid_rows, max_size=5))
    kind = draw(st.sampled_from(["rows", "columns", "both", "instances-anything",
                                 "inputs-anything", "anything", "extra-keys"]))
    if kind == "rows":
        return {"instances": rows}
    if kind == "columns":
        return {"inputs": columnar(rows)}
    if kind == "both":
        return {"instances": rows, "inputs": columnar(rows)}
    if kind == "instances-anything":
        return {"instances": draw(any_json)}
    if kind == "inputs-anything":
        return {"inputs": draw(any_json)}
    if kind == "extra-keys":
        return {"instances": rows, "signature_name": draw(any_json),
                draw(st.text()): draw(any_json)}
    return draw(any_json)


def encode(body: object, ascii_only: bool) -> bytes:
    """JSON as Python writes it (NaN/Infinity included); a lone surrogate in non-ASCII output
    makes the bytes invalid UTF-8, on purpose."""
    return json.dumps(body, allow_nan=True, ensure_ascii=ascii_only).encode("utf-8",
                                                                            "surrogatepass")


@st.composite
def raw_bodies(draw) -> bytes:
    """Bytes that are not (quite) JSON: random, truncated, corrupted, deeply nested, blank."""
    kind = draw(st.sampled_from(["bytes", "truncated", "corrupted", "nested", "blank", "utf16"]))
    valid = encode({"instances": [ROW]}, True)
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncated":
        return valid[:draw(st.integers(0, len(valid) - 1))]
    if kind == "corrupted":
        at = draw(st.integers(0, len(valid) - 1))
        return valid[:at] + draw(st.binary(min_size=1, max_size=4)) + valid[at + 1:]
    if kind == "nested":
        depth = draw(st.integers(1, 200_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return b'{"instances":' + opener * depth + b"1" + closer * depth + b"}"
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\n\t", b"\xef\xbb\xbf", b"null", b"0"]))
    return encode({"instances": [ROW]}, True).decode().encode("utf-16")


@st.composite
def requests(draw) -> tuple[str, str, dict, bytes]:
    """(method, path, headers, body) of a request a client might send."""
    if draw(st.booleans()):
        body = encode(draw(bodies()), draw(st.booleans()))
    else:
        body = draw(raw_bodies())
    method = draw(st.sampled_from(["POST"] * 16 + ["GET", "PUT", "DELETE", "PATCH"]))
    path = draw(st.sampled_from([PREDICT] * 8 + PATHS))
    headers = {"Content-Type": draw(st.sampled_from(CONTENT_TYPES))} if draw(
        st.integers(0, 3)) else {}
    return method, path, headers, body


# -- what the server must answer ----------------------------------------------------------------

def check_answer(status: int, body: bytes, what: str) -> None:
    event(f"HTTP {status}")  # the spread shows in --hypothesis-show-statistics
    assert status < 500, f"{what} -> {status} {body[:500]!r}"
    answer = json.loads(body)
    if status >= 400:
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str) \
            and answer["error"], f"{what} -> {status} without a JSON error: {body[:500]!r}"
    else:
        assert status == 200 and isinstance(answer, dict), f"{what} -> {status} {body[:500]!r}"


def check_prediction(status: int, body: bytes, rows: int, what: str) -> None:
    assert status == 200, f"{what} -> {status} {body[:500]!r}"
    answer = json.loads(body)
    predictions = answer.get("predictions")
    if predictions is None:
        outputs = answer["outputs"]
        predictions = [dict(zip(outputs, values)) for values in zip(*outputs.values())]
    assert len(predictions) == rows
    for p in predictions:
        assert p["class_id"] in (0, 1, 2) and isinstance(p["class_label"], str)
        assert len(p["probabilities"]) == 3


# -- the in-process app -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_path(penguin_model, tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("serve-fuzz") / "penguins"
    ModelBasePath(str(base)).publish(penguin_model / "model")
    return str(base)


def make_client(base_path: str, **limits):
    from conveyor.serving.models import ModelManager

    manager = ModelManager(base_path, "penguins")
    manager.poll_once()
    assert manager.current is not None, manager.errors
    spec = manager.current.inputs
    assert sorted(spec) == sorted(STRINGS + NUMBERS)
    assert all(spec[n].dtype.name == "string" for n in STRINGS)
    assert all(spec[n].dtype.is_floating for n in NUMBERS)
    return app_client(manager, **limits)


@pytest.fixture(scope="module")
def app(base_path):
    with make_client(base_path) as client:
        yield client


@fuzz_settings(600)
@given(sent=requests())
def test_fuzzed_requests_get_2xx_or_a_4xx_json_error(app, sent):
    method, path, headers, body = sent
    response = app.request(method, path, content=body, headers=headers)
    check_answer(response.status_code, response.content, f"{method} {path} {body[:200]!r}")


@fuzz_settings(200)
@given(rows=st.lists(valid_rows, min_size=1, max_size=16), rows_format=st.booleans())
def test_valid_requests_always_predict(app, rows, rows_format):
    body = {"instances": rows} if rows_format else {"inputs": columnar(rows)}
    response = app.post(PREDICT, content=encode(body, False))
    check_prediction(response.status_code, response.content, len(rows), repr(body)[:300])


@pytest.mark.parametrize("body, status, words", [
    ({"instances": [{**ROW, "year": 10**400}]}, 400, "input 'year' value #0 is <an integer of 401"),
    ({"instances": [{**ROW, "body_mass_g": 1e39}]}, 400, "outside the range of float32"),
    ({"instances": [{**ROW, "body_mass_g": math.inf}]}, 400, "'body_mass_g' value #0 is inf"),
    ({"instances": [{**ROW, "island": "\ud800"}]}, 400, "input 'island' value #0 is not valid"),
    ({"instances": [ROW], "inputs": {}}, 400, "either 'instances' (row format) or 'inputs'"),
    ({"instances": [{**ROW, "x" * 10_000: 1}]}, 400, "unknown input(s) ['xxxxxx"),
    ("[" * 100_000 + "]" * 100_000, 400, "nested too deeply"),
    ("", 400, "the body is empty"),
])
def test_inputs_that_once_gave_500_get_a_400_naming_them(app, body, status, words):
    raw = body.encode() if isinstance(body, str) else encode(body, True)
    response = app.post(PREDICT, content=raw)
    assert response.status_code == status and words in response.json()["error"], response.text
    assert len(response.content) < 2_000  # error messages quote values cut short


def test_the_limits_answer_413_naming_them(base_path):
    with make_client(base_path, max_body_bytes=1024, max_instances=3) as client:
        declared = client.post(PREDICT, content=b" " * 1025)
        chunked = client.post(PREDICT, content=(b" " * 100 for _ in range(11)))
        rows = client.post(PREDICT, content=encode({"instances": [ROW] * 4}, True))
        columns = client.post(PREDICT, content=encode({"inputs": columnar([ROW] * 4)}, True))
        fits = client.post(PREDICT, content=encode({"instances": [ROW] * 3}, True).ljust(1024))
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert "limit of 1024 bytes (--max-request-bytes)" in response.json()["error"]
    for response in (rows, columns):
        assert response.status_code == 413, response.text
        assert "4 instances in one request, more than this server's limit of 3" in \
            response.json()["error"]
    check_prediction(fits.status_code, fits.content, 3, "3 rows padded to the limit")


def test_the_app_still_predicts_after_the_fuzzing(app):
    response = app.post(PREDICT, json={"instances": [ROW]})
    check_prediction(response.status_code, response.content, 1, "after fuzzing")
    metrics = app.get("/metrics").text
    assert 'status="500"' not in metrics


# -- a real `conveyor serve` process ------------------------------------------------------------

class Connection:
    """One keep-alive HTTP connection, reopened when the server closes it."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def send(self, method: str, path: str, body: bytes | None = None, headers=None,
             chunked: bool = False) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body, headers or {}, encode_chunked=chunked)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def served(base_path, tmp_path_factory):
    """`conveyor serve` with its default limits and host; yields (connection, its banner)."""
    port = free_ports(1)[0]
    log = tmp_path_factory.mktemp("serve-fuzz-log") / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
                                 "--model-base-path",
                                 base_path, "--model-name", "penguins", "--port", str(port)],
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    banner = proc.stdout.readline()
    conn = Connection(port)
    deadline = time.monotonic() + 120
    while True:
        try:
            if conn.send("GET", "/readyz")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, banner + log.read_text()
        time.sleep(0.3)
    yield conn, banner
    proc.terminate()
    proc.wait(timeout=30)


def listening_addresses(port: int) -> set[str]:
    """Local addresses listening on `port`, from /proc/net/tcp (hex, little-endian IPv4)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.slow
def test_the_server_binds_to_loopback_by_default(served):
    conn, banner = served
    assert f"on http://127.0.0.1:{conn.port} " in banner
    assert f"requests up to {MAX_BODY_BYTES} bytes and {MAX_INSTANCES} instances" in banner
    if Path("/proc/net/tcp").exists():
        assert listening_addresses(conn.port) == {"127.0.0.1"}


@pytest.mark.slow
def test_the_default_limits_answer_413_over_http(served):
    conn, _ = served
    over = b" " * (MAX_BODY_BYTES + 1)
    for chunked in (False, True):  # Content-Length declared, then chunked without one
        body = iter([over[i:i + 65536] for i in range(0, len(over), 65536)]) if chunked else over
        status, text = conn.send("POST", PREDICT, body, chunked=chunked)
        assert status == 413 and f"limit of {MAX_BODY_BYTES} bytes" in json.loads(text)["error"]
    status, text = conn.send("POST", PREDICT, encode({"instances": [ROW] * (MAX_INSTANCES + 1)},
                                                     True))
    assert status == 413 and f"limit of {MAX_INSTANCES}" in json.loads(text)["error"]
    at_limit = encode({"instances": [ROW] * 2}, True).ljust(MAX_BODY_BYTES)
    check_prediction(*conn.send("POST", PREDICT, at_limit), 2, "a body of exactly the limit")


@pytest.mark.slow
@fuzz_settings(300)
@given(sent=requests())
def test_fuzzed_requests_over_http(served, sent):
    conn, _ = served
    method, path, headers, body = sent
    status, answer = conn.send(method, path, body, headers)
    check_answer(status, answer, f"{method} {path} {body[:200]!r}")


@pytest.mark.slow
def test_the_server_still_predicts_after_the_fuzzing(served):
    conn, _ = served
    check_prediction(*conn.send("POST", PREDICT, encode({"instances": [ROW]}, True)), 1,
                     "after fuzzing over HTTP")
    status, metrics = conn.send("GET", "/metrics")
    assert status == 200 and b'status="500"' not in metrics


# -- JSON booleans for integer inputs -----------------------------------------------------------

@pytest.fixture(scope="module")
def typed_app(tmp_path_factory):
    """A SavedModel (not trained: a function) with an int64, an int32, a float and a string
    input, each returned as it reached the model, served in process."""
    import tensorflow as tf

    class Echo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="flag"),
                                      tf.TensorSpec([None], tf.int32, name="small"),
                                      tf.TensorSpec([None], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.string, name="s")])
        def serve(self, flag, small, x, s):
            return {"flag": flag, "small": small, "x": x, "s": s}

    base = tmp_path_factory.mktemp("serve-typed") / "echo"
    echo = Echo()
    tf.saved_model.save(echo, str(base / "1"), signatures={"serving_default": echo.serve})
    from conveyor.serving.models import ModelManager

    manager = ModelManager(str(base), "echo")
    manager.poll_once()
    assert manager.current is not None, manager.errors
    with app_client(manager) as client:
        yield client


ECHO = "/v1/models/echo:predict"
TYPED = {"flag": 1, "small": 1, "x": 0.5, "s": "a"}


@fuzz_settings(150)
@given(flags=st.lists(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1),
                      min_size=1, max_size=8),
       smalls=st.data(), rows_format=st.booleans())
def test_booleans_reach_integer_inputs_as_1_and_0(typed_app, flags, smalls, rows_format):
    from conveyor.model.inputs import MISSING_INT

    small = smalls.draw(st.lists(st.booleans() | st.integers(-(2**31), 2**31 - 1),
                                 min_size=len(flags), max_size=len(flags)))
    rows = [{**TYPED, "flag": f, "small": s} for f, s in zip(flags, small)]
    body = {"instances": rows} if rows_format else {"inputs": columnar(rows)}
    response = typed_app.post(ECHO, content=encode(body, True))
    assert response.status_code == 200, response.text
    answer = response.json()
    got = ([p["flag"] for p in answer["predictions"]], [p["small"] for p in answer["predictions"]]
           ) if rows_format else (answer["outputs"]["flag"], answer["outputs"]["small"])
    assert got == ([MISSING_INT if f is None else int(f) for f in flags], [int(s) for s in small])


@pytest.mark.parametrize("row, words", [
    ({**TYPED, "x": True}, "input 'x' expects numbers; value #0 is True"),
    ({**TYPED, "s": False}, "input 's' expects strings; value #0 is False"),
    ({**TYPED, "flag": 1.0}, "input 'flag' expects integers; value #0 is 1.0"),
    ({**TYPED, "flag": "true"}, "input 'flag' expects integers; value #0 is 'true'"),
    ({**TYPED, "flag": [True]}, "input 'flag' expects integers; value #0 is [True]"),
    ({**TYPED, "small": 2**31}, "input 'small' value #0 is 2147483648: outside the range of int32"),
])
def test_booleans_stay_refused_for_float_and_string_inputs(typed_app, row, words):
    response = typed_app.post(ECHO, json={"instances": [row]})
    assert response.status_code == 400 and words in response.json()["error"], response.text
