"""`conveyor serve` in tests: as a real process on a free loopback port (`Serve`), spoken to over
HTTP (`call`, `exchange`), or its ASGI app in this process (`app_client`); a clock a test moves
by hand (`ManualClock`) and a bounded wait (`wait_for`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

from support.network import free_ports

#: One penguin the penguin model answers for.
ROW = {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
       "flipper_length_mm": 218.0, "body_mass_g": 4950.0, "sex": "female", "year": 2008}
#: The exit status of `conveyor serve` stopped by SIGTERM, after its cleanup.
CLEAN_STOP = 128 + signal.SIGTERM
GENEROUS = 180.0  # seconds a server may take to get ready on a loaded machine


def exchange(url: str, body=None, *, raw: bytes | None = None,
             rid: str | None = None) -> tuple[int, str, Message]:
    """GET `url`, or POST `body` as JSON (or `raw` bytes as they are) with an optional
    X-Request-Id: (status, text, headers). An HTTP error status is an answer, not an error."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json", **({"X-Request-Id": rid} if rid else {})}
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def call(url: str, body=None) -> tuple[int, str]:
    """`exchange` without the headers: (status, text)."""
    status, text, _ = exchange(url, body)
    return status, text


def wait_for(condition, what: str, timeout: float = 120.0, every: float = 0.2) -> None:
    """Until `condition()` is true, asking every `every` seconds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(every)


class Serve:
    """`conveyor serve --model-name penguins` as a process on a free loopback port: its stderr
    (the log) in `tmp_path/<tag>-stderr.txt`, its TMPDIR (where it caches versions) `scratch`,
    by default `tmp_path/<tag>-tmp`. `poll` is `--poll-seconds` (None: the server's default).
    Waits until /readyz answers 200 unless `wait` is False."""

    def __init__(self, base_uri: str, tmp_path: Path, *options: str, tag: str = "serve",
                 poll: str | None = "0.5", scratch: Path | None = None, wait: bool = True):
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.scratch = scratch or tmp_path / f"{tag}-tmp"
        self.scratch.mkdir(exist_ok=True)
        self.log_path = tmp_path / f"{tag}-stderr.txt"
        polling = ["--poll-seconds", poll] if poll is not None else []
        with self.log_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "serve", "--model-base-path", base_uri,
                 "--model-name", "penguins", "--port", str(self.port), "--grpc-port", "0",
                 *polling, *options],
                stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, "TMPDIR": str(self.scratch)})
        if wait:
            self.wait_ready()

    def wait_ready(self) -> dict:
        """/readyz's answer once it is 200; stops the server and fails if it exits first or
        takes longer than GENEROUS seconds."""
        deadline = time.monotonic() + GENEROUS
        while time.monotonic() < deadline:
            try:
                status, text = call(f"{self.url}/readyz")
                if status == 200:
                    return json.loads(text)
            except OSError:
                pass
            assert self.proc.poll() is None, self.log()
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"conveyor serve did not get ready: {self.log()}")

    def readyz(self) -> tuple[int, dict]:
        """/readyz now: (status, its JSON)."""
        status, text = call(f"{self.url}/readyz")
        return status, json.loads(text)

    def ready(self) -> dict:
        """/readyz now, which must be 200."""
        status, body = self.readyz()
        assert status == 200, body
        return body

    def predict(self, body=None, *, rid: str | None = None, version: int | None = None,
                raw: bytes | None = None) -> tuple[int, str, Message]:
        """POST to :predict (of `version`, if given) `body`, by default one ROW, or `raw`."""
        if body is None and raw is None:
            body = {"instances": [ROW]}
        path = f"/versions/{version}" if version else ""
        return exchange(f"{self.url}/v1/models/penguins{path}:predict", body, raw=raw, rid=rid)

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample on /metrics: `name` with `labels` given as `{k="v"}` or as
        `k="v"`, or a whole sample name with its labels as `name`."""
        for line in call(f"{self.url}/metrics")[1].splitlines():
            if line.startswith(f"{name}{labels} ") or line.startswith(f"{name}{{{labels}}} "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {name}{labels} in /metrics")

    def cpu_seconds(self) -> float:
        """User and system CPU seconds the server process has used (/proc/PID/stat)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_for(self, condition, what: str, timeout: float = 90.0) -> None:
        """`wait_for`, failing at once (with the log) if the server exits meanwhile."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"gave up waiting for {what}: {self.log()}"
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        """SIGTERM, as Kubernetes stops a pod, unless it has exited already: the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> int:
        """SIGKILL (no cleanup), unless it has exited already: the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=60)


def app_client(manager, **options):
    """starlette's TestClient on the server's ASGI app (`create_app(manager, **options)`), in
    this process; a server error is a 500 answer, not an exception."""
    import warnings

    from conveyor.serving.server import create_app

    with warnings.catch_warnings():  # starlette 1.x prefers httpx2; httpx works the same
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient(create_app(manager, **options), raise_server_exceptions=False)


class ManualClock:
    """A clock for `ModelManager(clock=...)` that stands still until a test sets `now`."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now
