"""Shared fixtures. The emulator stack starts once per test session, only if a test asks for it."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """A running local stack (real BigQuery and GCS emulators); its environment is set here."""
    from conveyor.local import LocalStack

    saved = dict(os.environ)
    local = LocalStack(tmp_path_factory.mktemp("stack"), project="conveyor-test")
    info = local.up()
    info.activate()
    yield info
    local.down()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def penguins(stack):
    """The demo table, seeded once: its table id."""
    from conveyor.local import seed

    seed.seed_penguins()
    return seed.DEMO_TABLE


@pytest.fixture()
def kfp_local(tmp_path):
    """kfp.local's subprocess runner in this interpreter; returns the pipeline root."""
    from kfp import local

    root = tmp_path / "kfp_outputs"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    return root


def write_dataset(path, table, ratios=None, key=None):
    """A Dataset artifact of `table`'s rows, split as ingest would split them (no emulator)."""
    import pyarrow as pa

    from conveyor.io.split import SplitSpec
    from conveyor.io import DatasetWriter

    spec = SplitSpec.parse(ratios or {"train": 0.8, "eval": 0.2}, key)
    index = spec.assign(table.combine_chunks().to_batches()[0])
    with DatasetWriter(path, table.schema, spec.names, {"type": "test"}) as writer:
        for i, name in enumerate(spec.names):
            writer.write(name, table.filter(pa.array(index == i)))
    return path


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


@pytest.fixture(scope="session")
def penguin_model(tmp_path_factory):
    """A small trained penguins classifier: its folder holds ds/ (Dataset), t/ (fitted
    transform) and model/ (SavedModel). Trained once per test session."""
    from conveyor.io import Dataset
    from conveyor.local.seed import penguins
    from conveyor.train.train import train
    from conveyor.transform.fit import fit
    from conveyor.transform.spec import propose_spec

    root = tmp_path_factory.mktemp("penguin-model")
    ds = write_dataset(root / "ds", penguins())
    types = {c.name: c.type for c in Dataset(ds).info.columns}
    fit(Dataset(ds), propose_spec(types, "species", {"a": 1, "b": 1, "c": 1})).write(root / "t")
    train(ds, root / "t", root / "model", hparams={"epochs": 8, "batch_size": 32,
                                                   "learning_rate": 0.01})
    return root


@pytest.fixture(scope="session")
def bucket(stack):
    """make(name) -> name: a bucket in the GCS emulator, created if missing."""
    from conveyor import gcp

    def make(name: str) -> str:
        client = gcp.storage_client()
        if not client.bucket(name).exists():
            client.create_bucket(name)
        return name

    return make


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
