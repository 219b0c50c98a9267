"""A real MLflow tracking server (`mlflow server`, the full `mlflow` package) on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from support.network import free_ports


@contextmanager
def mlflow_server(folder: Path, timeout: float = 120.0):
    """`mlflow server` with a SQLite store and artifacts under `folder`, on a free port of
    127.0.0.1; yields its URI once /health answers; stopped (its process ended) afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--default-artifact-root", str(folder / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder,
        start_new_session=True)  # its own process group: the server starts uvicorn beside it
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server ended ({process.returncode}): "
                                   + (folder / "server.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server on {uri} did not answer in {timeout} s")
            time.sleep(0.3)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the group this fixture started, and only it
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
