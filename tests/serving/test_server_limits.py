"""`conveyor serve` as a real process under the faults of issue 25's classes 8 and 10: 300
half-sent requests (slow-loris) while a normal client predicts, the CPU an idle server with
`--poll-seconds 0` burns, and what a server killed with SIGKILL leaves for the next one.

Bounds on time are generous (a loaded machine); the cost bound is in CPU seconds of the server
process (/proc), never in wall time."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]
ROW = {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
       "flipper_length_mm": 218.0, "body_mass_g": 4950.0, "sex": "female", "year": 2008}
READ_TIMEOUT = 5.0  # seconds, short for the test (the default is 30)
CLEAN_STOP = 128 + signal.SIGTERM  # the exit status of a stop by SIGTERM, after its cleanup
GENEROUS = 90.0  # seconds any awaited event may take on a loaded machine before failing


@pytest.fixture(scope="module")
def model(penguin_model):
    return penguin_model / "model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body=None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Serve:
    """`conveyor serve` on a free loopback port, its TMPDIR and stderr (the log) given."""

    def __init__(self, base_uri: str, tmp_path: Path, *options: str, tag: str = "serve",
                 tmpdir: Path | None = None, wait: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"{tag}-stderr.txt"
        env = dict(os.environ)
        if tmpdir is not None:
            env["TMPDIR"] = str(tmpdir)
        with self.log_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
                 "--model-base-path", base_uri,
                 "--model-name", "penguins", "--port", str(self.port), *options],
                stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> dict:
        deadline = time.monotonic() + 180
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

    def predict(self) -> int:
        return call(f"{self.url}/v1/models/penguins:predict", {"instances": [ROW]})[0]

    def metric(self, sample: str) -> float:
        for line in call(f"{self.url}/metrics")[1].splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {sample} in /metrics")

    def cpu_seconds(self) -> float:
        """User and system CPU seconds the server process has used (/proc/PID/stat)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=60) == -signal.SIGKILL


@pytest.fixture()
def local_base(model, tmp_path) -> ModelBasePath:
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    return base


# -- class 8: slow clients -----------------------------------------------------------------------

HEAD = b"POST /v1/models/penguins:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
HALF_SENT = {"request line": b"POST /v1/models/peng", "headers": HEAD + b"Content-Len",
             "body": HEAD + b"Content-Length: 400\r\n\r\n{\"instances\": [{\"island\": "}


def test_300_half_sent_requests_are_closed_at_the_read_timeout_while_predict_answers(
        local_base, tmp_path):
    """Before: all 300 were still open after 65 s (no read timeout). Now each gets 408 and is
    closed once READ_TIMEOUT has passed since its first byte, including 20 that keep dribbling a
    byte every 0.5 s; a normal client is answered meanwhile."""
    serve = Serve(local_base.uri, tmp_path, "--read-timeout", f"{READ_TIMEOUT:g}")
    try:
        selector = selectors.DefaultSelector()
        opened: dict[socket.socket, tuple[str, float]] = {}
        kinds = [k for k in HALF_SENT for _ in range(94)][:280] + ["dribbling"] * 20
        for kind in kinds:
            sock = socket.create_connection(("127.0.0.1", serve.port), timeout=30)
            sock.sendall(HALF_SENT.get(kind, b"P"))
            sock.setblocking(False)
            opened[sock] = (kind, time.monotonic())
            selector.register(sock, selectors.EVENT_READ)
        assert len(opened) == 300
        assert serve.predict() == 200  # answered while the 300 are held
        answers, closed_after = {}, []
        deadline, next_dribble = time.monotonic() + READ_TIMEOUT + GENEROUS, 0.0
        while selector.get_map() and time.monotonic() < deadline:
            if time.monotonic() >= next_dribble:  # the dribblers send one more header byte
                next_dribble = time.monotonic() + 0.5
                for sock, (kind, _) in opened.items():
                    if kind == "dribbling" and sock.fileno() != -1 and sock not in answers:
                        try:
                            sock.send(b"O")
                        except OSError:
                            pass
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:  # a dribbler's byte met the closed socket
                    chunk, answers[sock] = b"", answers.get(sock) or b"(reset)"
                answers.setdefault(sock, b"")
                if chunk:
                    answers[sock] += chunk
                    continue
                selector.unregister(sock)
                closed_after.append(time.monotonic() - opened[sock][1])
                sock.close()
                answers[sock] = answers[sock] or b"(closed)"
        still_open = [opened[s][0] for s in opened if s.fileno() != -1]
        assert not still_open, f"{len(still_open)} half-sent connections still open: " \
                               f"{sorted(set(still_open))}"
        wrong = {opened[s][0]: a[:80] for s, a in answers.items()
                 if not a.startswith(b"HTTP/1.1 408 Request Timeout")
                 and not (opened[s][0] == "dribbling" and a == b"(reset)")}
        assert not wrong, wrong
        assert min(closed_after) >= READ_TIMEOUT - 0.1  # never before the deadline
        print(f"\n300 half-sent connections closed {min(closed_after):.1f}-"
              f"{max(closed_after):.1f} s after their first byte (read timeout "
              f"{READ_TIMEOUT:g} s)")
        assert serve.predict() == 200
        assert serve.metric('conveyor_serving_connections_closed_total{reason="read_timeout"}') \
            == 300
        assert "Traceback" not in serve.log()
    finally:
        assert serve.stop() == CLEAN_STOP, serve.log()


# -- class 8: polling ----------------------------------------------------------------------------

def test_poll_seconds_zero_loads_once_then_costs_no_cpu(local_base, model, tmp_path):
    """Before: `--poll-seconds 0` polled in a busy loop (0.4 cores while idle). Now it loads
    the newest version once and never polls again: a version published later is not loaded
    and the idle server uses almost no CPU (measured in its CPU seconds, not wall time)."""
    serve = Serve(local_base.uri, tmp_path, "--poll-seconds", "0")
    try:
        assert serve.wait_ready()["version"] == 1 and serve.predict() == 200
        local_base.publish(model)  # version 2: not looked for any more
        time.sleep(1.0)
        before, started = serve.cpu_seconds(), time.monotonic()
        time.sleep(5.0)
        used, seconds = serve.cpu_seconds() - before, time.monotonic() - started
        print(f"\n--poll-seconds 0, idle: {used:.2f} CPU s in {seconds:.1f} s "
              f"({used / seconds:.3f} cores)")
        assert used < 0.5, f"the idle server used {used:.2f} CPU seconds in {seconds:.1f} s"
        assert serve.wait_ready()["loaded_versions"] == [1]
        assert "serving version 2" not in serve.log()
    finally:
        serve.stop()


@pytest.mark.parametrize("option, value", [("--poll-seconds", "-1"), ("--poll-seconds", "nan"),
                                           ("--read-timeout", "0"), ("--max-connections", "0")])
def test_unusable_poll_and_connection_settings_are_refused(tmp_path, option, value):
    serve = Serve(str(tmp_path / "none"), tmp_path, option, value, wait=False)
    assert serve.proc.wait(timeout=120) == 2
    assert f"conveyor: error: {option}: expected" in serve.log(), serve.log()


# -- class 10: leftovers after kill -9 -----------------------------------------------------------

def folders(parent: Path) -> list[Path]:
    """The claimed folders under `parent` (each has a `.lock` file beside it)."""
    return sorted(p for p in parent.iterdir() if p.is_dir())


def test_a_restarted_serve_removes_what_a_killed_one_left_and_never_a_live_ones(
        model, tmp_path, bucket):
    """Before: a serve killed with SIGKILL left its download cache in TMPDIR (and a temporary
    prediction-log file) for good. Now the next serve on the same TMPDIR and log folder removes
    them at start, with a log line, and leaves a live serve's alone."""
    base = ModelBasePath(f"gs://{bucket('serve-test')}/{tmp_path.name}/penguins")
    base.publish(model)
    scratch, logs = tmp_path / "tmp", tmp_path / "logs"
    scratch.mkdir()
    options = ("--poll-seconds", "0.5", "--log-predictions", str(logs), "--log-flush-rows", "1")
    first = Serve(base.uri, tmp_path, *options, tag="first", tmpdir=scratch)
    assert first.predict() == 200
    deadline = time.monotonic() + GENEROUS
    while not list(logs.glob("date=*/part-*.parquet")):
        assert time.monotonic() < deadline, "the first serve wrote no log file"
        time.sleep(0.2)
    cache = folders(scratch)
    (writer,) = folders(logs / ".conveyor-tmp")
    assert len(cache) == 1 and (cache[0] / "1" / "saved_model.pb").is_file()
    first.kill9()
    # The kill cannot be timed to land inside a write: put what an interrupted write leaves.
    (writer / "0123456789abcdef.tmp").write_bytes(b"PAR1 half a file")
    assert cache[0].exists() and writer.exists()

    second = Serve(base.uri, tmp_path, *options, tag="second", tmpdir=scratch)
    assert not cache[0].exists() and not Path(f"{cache[0]}.lock").exists()
    assert not writer.exists() and not Path(f"{writer}.lock").exists()
    assert f"removed {cache[0]}: the download cache of a process that died" in second.log()
    assert f"removed {writer}: the prediction log scratch folder of a process that died" \
        in second.log()
    (second_cache,) = folders(scratch)
    (second_writer,) = folders(logs / ".conveyor-tmp")

    third = Serve(base.uri, tmp_path, *options, tag="third", tmpdir=scratch)
    assert (second_cache / "1" / "saved_model.pb").is_file() and second_writer.is_dir()
    assert "removed" not in third.log()
    assert second.predict() == 200 and third.predict() == 200
    assert third.stop() == CLEAN_STOP and second.stop() == CLEAN_STOP
    assert list(scratch.iterdir()) == []
    assert not (logs / ".conveyor-tmp").exists()
    parts = sorted(p.name for p in logs.rglob("*") if p.is_file())
    assert len(parts) == 3 and all(n.startswith("part-") for n in parts), parts
