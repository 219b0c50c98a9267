"""The connection guard (`conveyor.serving.guard`) on a real uvicorn server in this process,
spoken to over raw sockets: half-sent requests, dribbling clients, idle and keep-alive
connections, the connection limit, and that slow answers and normal clients are not cut."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conveyor.errors import InputError
from conveyor.serving.guard import protocol_for
from conveyor.serving.listener import ConnectionLimits

READ, IDLE = 0.6, 0.8  # seconds: short, so the test is quick
GENEROUS = 20.0  # seconds a closing may take on a loaded machine before the test fails
seen_bodies: list[bytes] = []


async def echo(request: Request) -> Response:
    try:
        body = await request.body()
    except ClientDisconnect:
        return Response(status_code=400)
    seen_bodies.append(body)
    return JSONResponse({"bytes": len(body)})


async def slow(request: Request) -> JSONResponse:
    await asyncio.sleep(3 * READ)
    return JSONResponse({"slow": True})


class Server:
    """uvicorn with the guard on a free loopback port, in a thread."""

    def __init__(self, limits: ConnectionLimits):
        self.registry = CollectorRegistry()
        app = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"]),
                                Route("/slow", slow)])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                http=protocol_for(limits, self.registry),
                                timeout_keep_alive=60)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def connect(self, data: bytes = b"") -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=GENEROUS)
        if data:
            sock.sendall(data)
        return sock

    def closed(self, reason: str) -> float:
        return self.registry.get_sample_value("conveyor_serving_connections_closed_total",
                                              {"reason": reason}) or 0.0

    def wait_open(self, count: int) -> None:
        """Until the server counts `count` open connections (it sees connects and closes a
        moment after the client)."""
        deadline = time.monotonic() + GENEROUS
        while self.registry.get_sample_value("conveyor_serving_open_connections") != count:
            assert time.monotonic() < deadline, f"never {count} open connections"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture()
def server():
    s = Server(ConnectionLimits(read_timeout=READ, idle_timeout=IDLE, max_connections=50))
    yield s
    s.stop()


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    sock.close()
    return out


def ask(server: Server, request: bytes) -> bytes:
    """One whole request on a new connection: the answer."""
    sock = server.connect(request)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, answer
        answer += chunk
    sock.close()
    return answer


POST = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def test_half_sent_requests_get_408_and_are_closed_while_others_are_answered(server):
    half_line = [server.connect(b"POST /ec") for _ in range(10)]
    half_head = [server.connect(POST + b"Content-Le") for _ in range(10)]
    half_body = [server.connect(POST + b"Content-Length: 100\r\n\r\n{\"a\": ") for _ in range(10)]
    answer = ask(server, POST + b"Content-Length: 2\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"bytes":2}')
    for sock in half_line + half_head + half_body:
        got = until_closed(sock)
        assert got.startswith(b"HTTP/1.1 408 Request Timeout"), got
        error = json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]
        assert "--read-timeout" in error and f"{READ:g} s" in error
    assert server.closed("read_timeout") == 30
    assert b'{"a": ' not in seen_bodies  # the app never took a half body for a whole one


def test_a_client_dribbling_bytes_is_cut_at_the_deadline_of_its_first_byte(server):
    sock = server.connect()
    request = POST + b"Content-Length: 2\r\n\r\n{}"
    started, sent, cut = time.monotonic(), 0, False
    for byte in request[:-1]:  # one byte every READ/4 s: far past the deadline, never whole
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            cut = True
            break
        sent += 1
        time.sleep(READ / 4)
        if time.monotonic() - started > GENEROUS:
            break
    got = b"" if cut else until_closed(sock)
    assert cut or got.startswith(b"HTTP/1.1 408"), got
    assert sent < len(request) - 1, "the server let a dribbling client go on"
    assert server.closed("read_timeout") == 1


def test_idle_connections_are_closed_and_counted(server):
    silent = server.connect()
    keep_alive = server.connect(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    got = until_closed(keep_alive)  # the answer, then the close after the idle timeout
    assert got.startswith(b"HTTP/1.1 200") and got.count(b"HTTP/1.1") == 1
    assert until_closed(silent) == b""
    assert server.closed("idle_timeout") == 2 and server.closed("read_timeout") == 0


def test_a_slow_answer_and_pipelined_requests_are_not_cut(server):
    sock = server.connect(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                          + POST + b"Content-Length: 2\r\n\r\n{}")
    answer = b""
    while answer.count(b"HTTP/1.1 200") < 2 or not answer.endswith(b'{"bytes":2}'):
        chunk = sock.recv(65536)
        assert chunk, answer
        answer += chunk
    assert b'{"slow":true}' in answer
    sock.close()
    assert server.closed("read_timeout") == 0


def test_past_the_limit_the_longest_idle_goes_else_the_newcomer_gets_503():
    server = Server(ConnectionLimits(read_timeout=30, idle_timeout=30, max_connections=3))
    try:
        oldest_idle = server.connect()
        server.wait_open(1)
        idle = server.connect()
        busy = server.connect(POST + b"Content-Length: 10\r\n\r\n{")  # mid-request
        server.wait_open(3)
        newcomer = server.connect(POST + b"Content-Length: 2\r\n\r\n{}")
        assert until_closed(oldest_idle) == b""  # evicted to make room
        assert newcomer.recv(65536).startswith(b"HTTP/1.1 200")
        assert server.closed("evicted") == 1
        newcomer.close()
        idle.sendall(POST + b"Content-Length: 10\r\n\r\n{")
        third = server.connect(POST + b"Content-Length: 10\r\n\r\n{")
        server.wait_open(3)  # all three mid-request: none idle to let go
        refused = until_closed(server.connect())
        assert refused.startswith(b"HTTP/1.1 503") and b"--max-connections" in refused
        assert b"retry-after: 1" in refused.lower()
        assert server.closed("over_limit") == 1 and server.closed("evicted") == 1
        for sock in (idle, busy, third):  # the ones mid-request were kept and finish
            sock.sendall(b'"a": 123}')
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.close()
    finally:
        server.stop()


@pytest.mark.parametrize("limits, flag", [
    (ConnectionLimits(read_timeout=0), "--read-timeout"),
    (ConnectionLimits(idle_timeout=float("inf")), "--idle-timeout"),
    (ConnectionLimits(idle_timeout=float("nan")), "--idle-timeout"),
    (ConnectionLimits(max_connections=0), "--max-connections"),
])
def test_unusable_limits_are_refused_naming_the_flag(limits, flag):
    with pytest.raises(InputError, match=flag):
        limits.check()
