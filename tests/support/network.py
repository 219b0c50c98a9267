"""Loopback networking for tests: free ports, and a recording stand-in for a cloud API."""

from __future__ import annotations

import socket
from contextlib import contextmanager


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextmanager
def loopback_api(answer):
    """An HTTP server on 127.0.0.1 standing in for a cloud API (KFP, Vertex AI, Kubernetes), so
    the real clients send their real requests. Each request is recorded as (method, path, JSON
    body or None, Content-Type) and answered 200 with `answer(method, path, body)` as JSON.
    Yields (base URL, the list of recorded requests)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def _record_and_answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else None
            seen.append((self.command, self.path, body, self.headers.get("Content-Type")))
            payload = json.dumps(answer(self.command, self.path, body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = _record_and_answer

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


def kfp_answer(method, path, body):
    """What the Kubeflow Pipelines v2beta1 API answers (for `loopback_api`): the resource sent,
    with its id."""
    if "healthz" in path:
        return {"multi_user": False}
    if method != "POST":
        return {}
    if path.endswith("/experiments"):
        return {"experiment_id": "exp-1", **body}
    if path.endswith("/recurringruns"):
        return {"recurring_run_id": "rr-1", **body}
    return {"run_id": "run-1", **body}
