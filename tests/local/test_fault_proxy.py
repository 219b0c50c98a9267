"""The loopback fault proxies themselves, against a small upstream server (no emulator)."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conveyor.local.faults import FaultProxy, TcpFaultProxy


@pytest.fixture()
def upstream():
    """An HTTP server that echoes each request's method, path and body, and counts them."""
    seen = []

    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _echo(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path, body))
            out = json.dumps({"method": self.command, "path": self.path,
                              "body": body.decode()}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = _echo

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_without_faults_requests_pass_through_unchanged(upstream):
    url, seen = upstream
    with FaultProxy(url, rate=0.0) as proxy:
        answer = requests.post(f"{proxy.url}/a/b?x=1", data=b"payload", timeout=5)
    assert answer.status_code == 201
    assert answer.json() == {"method": "POST", "path": "/a/b?x=1", "body": "payload"}
    assert proxy.counts == {"forwarded": 1} and len(seen) == 1


def test_injected_errors_look_like_google_api_errors(upstream):
    url, seen = upstream
    with FaultProxy(url, rate=1.0, kinds=("503",)) as proxy:
        answer = requests.get(f"{proxy.url}/x", timeout=5)
    assert answer.status_code == 503
    assert answer.json()["error"]["errors"][0]["reason"] == "backendError"
    assert not seen  # the upstream never heard of it


def test_drop_after_reaches_the_upstream_but_not_the_client(upstream):
    url, seen = upstream
    with FaultProxy(url, rate=1.0, kinds=("drop-after",)) as proxy:
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.put(f"{proxy.url}/obj", data=b"v1", timeout=5)
    assert seen == [("PUT", "/obj", b"v1")]


def test_the_schedule_is_reproducible_from_its_seed(upstream):
    url, _ = upstream

    def outcomes(seed):
        out = []
        with FaultProxy(url, rate=0.5, seed=seed, kinds=("429", "500")) as proxy:
            for _ in range(30):
                out.append(requests.get(f"{proxy.url}/", timeout=5).status_code)
        return out

    first = outcomes(4)
    assert first == outcomes(4)
    assert {201, 429, 500} == set(first)
    assert first != outcomes(5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="rate"):
        FaultProxy("http://127.0.0.1:1", rate=1.5)
    with pytest.raises(ValueError, match="kinds"):
        FaultProxy("http://127.0.0.1:1", rate=0.1, kinds=("418",))
    with pytest.raises(ValueError, match="upstream"):
        FaultProxy("https://example.com", rate=0.1)
    with pytest.raises(ValueError, match="upstream"):
        TcpFaultProxy("nowhere", rate=0.1)


def test_tcp_proxy_relays_and_refuses(upstream):
    url, _ = upstream
    port = url.rsplit(":", 1)[1]
    with TcpFaultProxy(f"127.0.0.1:{port}", rate=0.0) as relay:
        answer = requests.get(f"http://{relay.endpoint}/via-tcp", timeout=5)
        assert answer.json()["path"] == "/via-tcp"
    with TcpFaultProxy(f"127.0.0.1:{port}", rate=1.0, kinds=("refuse",)) as relay:
        host, relay_port = relay.endpoint.split(":")
        with socket.create_connection((host, int(relay_port)), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(100) == b""  # closed without an answer
    assert relay.counts == {"refuse": 1}
