"""Fault injection on loopback: proxies in front of the emulators that fail a share of requests.

Cloud APIs fail transiently: 429 and 5xx answers, slow answers, connections that drop, sometimes
after the server has done the work. `FaultProxy` puts that in front of an HTTP emulator (the
BigQuery REST API, the Cloud Storage JSON API): each request draws from a seeded generator and is
forwarded untouched, answered with an injected error, delayed, or has its connection dropped
before or after the upstream handled it. `TcpFaultProxy` does the connection-level faults for
the gRPC Storage Read API, which multiplexes every call on one HTTP/2 connection.

    with FaultProxy("http://127.0.0.1:9050", rate=0.15, seed=7) as proxy:
        os.environ["CONVEYOR_BIGQUERY_ENDPOINT"] = proxy.url
        ...
    print(proxy.counts)   # Counter({'forwarded': 412, '503': 21, 'drop-after': 18, ...})

No existing tool fits: Toxiproxy (not on PyPI) works on TCP only and cannot answer an HTTP status;
mitmproxy would bring a TLS stack and ~30 packages for plaintext loopback HTTP/1.1.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import socketserver
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseRequestHandler, ThreadingTCPServer
from urllib.parse import urlsplit

#: What `FaultProxy` may do to a request, besides forwarding it.
HTTP_FAULTS = ("429", "500", "503", "delay", "drop-before", "drop-after")
#: What `TcpFaultProxy` may do to a connection, besides relaying it.
TCP_FAULTS = ("refuse", "delay", "cut")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
               "te", "trailer", "proxy-authenticate", "proxy-authorization"}
_REASONS = {"429": "rateLimitExceeded", "500": "backendError", "503": "backendError"}


class _Schedule:
    """Seeded draws shared by the proxy's threads: which requests fail, and how."""

    def __init__(self, rate: float, seed: int, kinds: tuple[str, ...], allowed: tuple[str, ...]):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate: expected a share between 0 and 1, got {rate!r}")
        unknown = set(kinds) - set(allowed)
        if unknown or not kinds:
            raise ValueError(f"kinds: expected some of {allowed}, got {kinds!r}")
        self.rate, self.kinds = rate, tuple(kinds)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def draw(self) -> str | None:
        with self._lock:
            fault = (self._random.choice(self.kinds)
                     if self._random.random() < self.rate else None)
            self.counts[fault or "forwarded"] += 1
            return fault


class _Proxy:
    """What both proxies share: a server thread on 127.0.0.1, its schedule, start and stop."""

    _server: socketserver.TCPServer
    schedule: _Schedule

    @property
    def counts(self) -> Counter[str]:
        """How many requests (connections) were forwarded, and how many got each fault."""
        return self.schedule.counts

    def start(self):
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name=f"conveyor-{type(self).__name__}").start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class FaultProxy(_Proxy):
    """An HTTP/1.1 proxy on 127.0.0.1 in front of `upstream`, failing `rate` of the requests."""

    def __init__(self, upstream: str, rate: float, seed: int = 0,
                 kinds: tuple[str, ...] = HTTP_FAULTS, delay: float = 2.0, port: int = 0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream: expected http://host:port, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.schedule = _Schedule(rate, seed, kinds, HTTP_FAULTS)
        self.delay = delay
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size + 2)[:size]
                        if not size:
                            break
                        chunks.append(chunk)
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _drop(self) -> None:
                # An abortive close (RST), as when a load balancer or the network gives up.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.close_connection = True
                self.connection.close()

            def _error(self, status: int) -> None:
                body = json.dumps({"error": {
                    "code": status, "message": f"injected by conveyor's fault proxy ({status})",
                    "errors": [{"reason": _REASONS[str(status)], "message": "injected"}],
                }}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=600)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in _HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    return answer.status, answer.reason, answer.getheaders(), answer.read()
                finally:
                    upstream.close()

            def _handle(self) -> None:
                body = self._body()
                fault = proxy.schedule.draw()
                if fault in ("429", "500", "503"):
                    return self._error(int(fault))
                if fault == "drop-before":
                    return self._drop()
                if fault == "delay":
                    time.sleep(proxy.delay)
                status, reason, headers, payload = self._forward(body)
                if fault == "drop-after":  # the upstream did the work; the client never hears
                    return self._drop()
                self.send_response(status, reason)
                for key, value in headers:
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        return Handler


class TcpFaultProxy(_Proxy):
    """A TCP relay on 127.0.0.1 in front of `upstream` ("host:port"), for gRPC.

    Each new connection draws once: relayed untouched, refused (closed at once), delayed before
    relaying, or cut (reset) after a random 1-64 KiB of the answer has been relayed.
    """

    def __init__(self, upstream: str, rate: float, seed: int = 0,
                 kinds: tuple[str, ...] = TCP_FAULTS, delay: float = 2.0, port: int = 0):
        host, _, upstream_port = upstream.rpartition(":")
        if not host or not upstream_port.isdigit():
            raise ValueError(f"upstream: expected host:port, got {upstream!r}")
        self.upstream = (host, int(upstream_port))
        self.schedule = _Schedule(rate, seed, kinds, TCP_FAULTS)
        self.delay = delay
        self._cut_random = random.Random(seed + 1)
        self._cut_lock = threading.Lock()
        self._server = ThreadingTCPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._server.allow_reuse_address = True

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseRequestHandler]:
        proxy = self

        class Handler(BaseRequestHandler):
            def handle(self) -> None:
                client: socket.socket = self.request
                fault = proxy.schedule.draw()
                if fault == "refuse":
                    return
                if fault == "delay":
                    time.sleep(proxy.delay)
                with proxy._cut_lock:
                    cut_after = proxy._cut_random.randint(1024, 65536) if fault == "cut" else None
                upstream = socket.create_connection(proxy.upstream)
                done = threading.Event()

                def pump(src: socket.socket, dst: socket.socket, budget: int | None) -> None:
                    sent = 0
                    try:
                        while not done.is_set():
                            data = src.recv(65536)
                            if not data:
                                break
                            if budget is not None and sent + len(data) >= budget:
                                dst.sendall(data[:budget - sent])
                                dst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
                                break
                            dst.sendall(data)
                            sent += len(data)
                    except OSError:
                        pass
                    finally:
                        done.set()
                        for s in (src, dst):
                            try:
                                s.shutdown(socket.SHUT_RDWR)
                            except OSError:
                                pass

                back = threading.Thread(target=pump, args=(upstream, client, cut_after),
                                        daemon=True)
                back.start()
                pump(client, upstream, None)
                back.join()
                upstream.close()

        return Handler
