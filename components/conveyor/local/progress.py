"""Quiet progress for local pipeline runs: one line per task on the console, every log in files.

`Capture` wraps a `kfp.local` run. While it is active:

- file descriptors 1 and 2 of this process point at the run's whole-stream log (`run.log`), so
  whatever writes to them below Python (TensorFlow, absl, gRPC, CUDA probes) lands there;
- `sys.stdout` and `sys.stderr` are a router that writes every chunk to `run.log` and to the log
  of the task running now (`<task>.log`); kfp.local pipes each task's subprocess output through
  the parent's `print`, so a task's whole stream (executor input JSON, Great Expectations'
  closure notices, TF banners, tracebacks) goes through the router;
- a filter on the root logger reads kfp.local's own records ("Executing task 'x'", "Task 'x'
  finished with status SUCCESS", "Task x failed (attempt 1/3). Retrying ...", "Pipeline 'p'
  finished with status ...") and turns them into progress lines, written to the console's
  original descriptor (saved before the redirection). Task names are the pipeline's step names
  (`conveyor.local.names`); at the end, one line names the steps that did not run and why
  (a false condition by its name in the pipeline, or an earlier failure), never a branch the run
  did not take because another one ran (the GPU branch of a CPU run).

With `verbose`, nothing is redirected at the descriptor level and the router also writes the
whole stream to the console, as a plain kfp.local run does (the log files are still written).

When a task finishes, its key figures are read from its outputs (`executor_output.json` in its
folder: artifact metadata and parameters) by `conveyor.local.task_report.figures`; a failed task's
error is the exception line of the last traceback in its log (or conveyor's fail-fast record,
`failfast.marker`), by `conveyor.local.task_report.task_error`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from conveyor.local.names import StepNames, skip_line
from conveyor.local.task_report import figures, link_reports, strip_ansi, task_error

_START = re.compile(r"^Executing task '(?P<task>[^']+)'")
_FINISH = re.compile(r"^Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
_RETRY = re.compile(r"^Task (?P<task>\S+) failed \(attempt (?P<attempt>\d+)/(?P<of>\d+)\)\. "
                    r"Retrying in (?P<delay>[0-9.]+)s")
_PIPELINE_DONE = re.compile(r"^Pipeline '(?P<pipeline>[^']+)' finished with status "
                            r"(?P<status>[A-Z]+)")
_EPOCH = re.compile(r"Epoch (\d+)/(\d+)")


# -- the capture ---------------------------------------------------------------------------------

@dataclasses.dataclass
class TaskEvent:
    """What the console knows about a task while the run goes on."""

    name: str
    status: str = "RUNNING"  # RUNNING, SUCCESS, FAILURE, SKIPPED
    started: float = 0.0
    seconds: float = 0.0
    attempts: int = 0
    figures: str = ""
    error_type: str = ""
    error: str = ""
    log: Path | None = None
    folder: Path | None = None
    outputs: dict = dataclasses.field(default_factory=dict)
    reports: dict[str, Path] = dataclasses.field(default_factory=dict)  # name -> report.html
    detail: str = ""  # the last progress hint seen in its stream (e.g. "epoch 12/200")


class Console:
    """Progress lines on a file descriptor; on a terminal a running task's line is rewritten in
    place (elapsed seconds, epoch), elsewhere each task gets a start line and an end line. When
    the reader goes away (`| head` closed the pipe) the console falls silent and the run goes on
    to its end: its logs are files, and a run stopped halfway would leave half a run."""

    def __init__(self, fd: int, tty: bool | None = None):
        self.fd = fd
        self.tty = os.isatty(fd) if tty is None else tty
        self._lock = threading.Lock()
        self._open = False  # a start line without its newline (terminal only)
        self.closed = False  # the reader went away: nothing more is written

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            os.write(self.fd, data)
        except BrokenPipeError:
            self.closed = True

    def write(self, text: str) -> None:
        with self._lock:
            if self._open:
                text = "\r\x1b[K" + text
                self._open = False
            self._write(text.encode("utf-8", "replace"))

    def line(self, text: str) -> None:
        self.write(text + "\n")

    def status(self, text: str) -> None:
        """A line that the next write replaces (terminal), or a full line (elsewhere)."""
        if not self.tty:
            self.line(text)
            return
        with self._lock:
            self._write(("\r\x1b[K" + text).encode("utf-8", "replace"))
            self._open = True


def _task_line(mark: str, task: TaskEvent, text: str = "") -> str:
    seconds = f"{task.seconds:6.1f} s" if task.status != "RUNNING" else " " * 8
    return f"  {mark:<7} {task.name:<24} {seconds}  {text}".rstrip()


class _Router(io.TextIOBase):
    """sys.stdout/sys.stderr during a capture: every chunk to run.log and the current task's log
    (and to the console when verbose)."""

    def __init__(self, capture: Capture, name: str):
        super().__init__()
        self._capture = capture
        self.name = name

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._capture.run_log.fileno()

    def write(self, text: str) -> int:  # type: ignore[override]
        self._capture._stream(text)
        return len(text)

    def flush(self) -> None:
        self._capture._flush()


class _KfpRecords(logging.Filter):
    """Reads kfp.local's task records on the root logger; lets every record through."""

    def __init__(self, on_record: Callable[[str], None]):
        super().__init__()
        self._on_record = on_record

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._on_record(strip_ansi(record.getMessage()))
        except Exception:  # progress must never break the run
            logging.getLogger(__name__).debug("progress failed", exc_info=True)
        return True


class Capture:
    """Route a kfp.local run's output into log files and show progress (see the module doc).

    `logs` is a new folder for `run.log` and the task logs; `console` writes progress to a
    descriptor that is not 1 or 2 (a dup of the terminal made before); `locate(task, log)`
    returns a finished task's folder (from its log so far), or None; the caller may move the
    log folder meanwhile and say so with `moved(new_folder)`; `steps` (the pipeline's step
    names) says at the end which steps did not run.
    """

    def __init__(self, logs: Path, *, console: Console, verbose: bool = False,
                 locate: Callable[[str, str], Path | None] = lambda task, log: None,
                 steps: StepNames | None = None, ticker_seconds: float = 1.0):
        self.logs = logs
        self.verbose = verbose
        self.console = console
        self._locate = locate
        self._steps = steps
        self._told_not_run = False
        self._ticker_seconds = ticker_seconds
        self.tasks: list[TaskEvent] = []
        self.current: TaskEvent | None = None
        self.pipeline_status = ""
        self._pending_failure: TaskEvent | None = None
        self._retrying: TaskEvent | None = None
        self._task_file: TextIO | None = None
        self._partial = ""
        self._lock = threading.RLock()
        self._stop = threading.Event()

    # context management
    def __enter__(self) -> Capture:
        self.logs.mkdir(parents=True, exist_ok=False)
        self.run_log = open(self.logs / "run.log", "a", encoding="utf-8", buffering=1)
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved_fds = (os.dup(1), os.dup(2))
        self._saved_streams = (sys.stdout, sys.stderr)
        if not self.verbose:
            os.dup2(self.run_log.fileno(), 1)
            os.dup2(self.run_log.fileno(), 2)
        sys.stdout = _Router(self, "<stdout>")
        sys.stderr = _Router(self, "<stderr>")
        root = logging.getLogger()
        self._saved_level = root.level
        self._filter = _KfpRecords(self._record)
        self._handler = logging.StreamHandler(sys.stdout)
        self._handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addFilter(self._filter)
        root.addHandler(self._handler)
        root.setLevel(logging.INFO)  # kfp.local's retry and skip records: INFO, outside its context
        self._saved_showwarning = None
        self._ticker = None
        if self.console.tty and not self.verbose:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        with self._lock:
            self._flush_pending_failure()
            if self.current is not None and self.current.status == "RUNNING":
                self.current.status = "FAILURE"  # the run ended under it (kfp raised)
                self.current.seconds = time.monotonic() - self.current.started
                self.console.line(_task_line("FAILED", self.current, _kind(self.current)))
            self._tell_not_run()
        root = logging.getLogger()
        root.removeFilter(self._filter)
        root.removeHandler(self._handler)
        root.setLevel(self._saved_level)
        sys.stdout, sys.stderr = self._saved_streams
        os.dup2(self._saved_fds[0], 1)
        os.dup2(self._saved_fds[1], 2)
        self._close_task_file()
        self.run_log.close()
        for fd in self._saved_fds:
            os.close(fd)

    def moved(self, logs: Path) -> None:
        """The log folder was renamed to `logs` (open files keep writing)."""
        with self._lock:
            old = self.logs
            self.logs = logs
            for task in self.tasks:
                if task.log is not None and task.log.parent == old:
                    task.log = logs / task.log.name

    # the stream
    def _stream(self, text: str) -> None:
        with self._lock:
            plain = strip_ansi(text) if "\x1b" in text else text
            self.run_log.write(plain)
            if self._task_file is not None:
                self._task_file.write(plain)
                if self.current is not None and self.current.status == "RUNNING":
                    self._hint(self.current, text)
            if self.verbose:
                self.console.write(text)

    def _flush(self) -> None:
        with self._lock:
            self.run_log.flush()
            if self._task_file is not None:
                self._task_file.flush()

    def _hint(self, task: TaskEvent, text: str) -> None:
        self._partial = (self._partial + text)[-400:]
        found = _EPOCH.findall(self._partial)
        if found:
            task.detail = f"epoch {found[-1][0]}/{found[-1][1]}"

    def _tick(self) -> None:
        while not self._stop.wait(self._ticker_seconds):
            with self._lock:
                task = self.current
                if task is not None and task.status == "RUNNING":
                    elapsed = time.monotonic() - task.started
                    self.console.status(f"  {'..':<7} {task.name:<24} {elapsed:6.0f} s  "
                                        f"{task.detail}".rstrip())

    def _close_task_file(self) -> None:
        if self._task_file is not None:
            self._task_file.close()
            self._task_file = None

    # kfp.local's records
    def _record(self, message: str) -> None:
        with self._lock:
            if m := _START.match(message):
                self._start(m["task"])
            elif m := _FINISH.match(message):
                self._finish(m["task"], m["status"])
            elif m := _RETRY.match(message):
                self._retry(int(m["attempt"]), int(m["of"]), float(m["delay"]))
            elif m := _PIPELINE_DONE.match(message):
                self._flush_pending_failure()
                self.pipeline_status = m["status"]
                self._tell_not_run()

    def _tell_not_run(self) -> None:
        """Once, at the end: the steps that did not run and why (`conveyor.local.names`)."""
        if self._told_not_run or self._steps is None:
            return
        self._told_not_run = True
        failed = self.pipeline_status not in ("", "SUCCESS") or \
            any(t.status == "FAILURE" for t in self.tasks)
        steps, reasons = self._steps.not_run(failed, [t.name for t in self.tasks])
        line = skip_line(steps, reasons, failed)
        if line:
            self.console.line(line)

    def _start(self, name: str) -> None:
        self._flush_pending_failure()
        self._close_task_file()
        task = self._retrying if self._retrying is not None and self._retrying.name == name \
            else None
        self._retrying = None
        if task is None:
            task = TaskEvent(name=name)
            self.tasks.append(task)
        if task.log is None:
            task.log = self.logs / f"{_file_name(name)}.log"
        task.status, task.started, task.detail, task.attempts = "RUNNING", time.monotonic(), "", \
            task.attempts + 1
        self._partial = ""
        self._task_file = open(task.log, "a", encoding="utf-8", buffering=1)
        if task.attempts > 1:
            self._task_file.write(f"\n---- attempt {task.attempts} ----\n")
        self.current = task
        self.console.status(_task_line("start" if task.attempts == 1 else "retry", task,
                                       f"attempt {task.attempts}" if task.attempts > 1 else ""))

    def _finish(self, name: str, status: str) -> None:
        task = self.current if self.current is not None and self.current.name == name else \
            next((t for t in reversed(self.tasks) if t.name == name), None)
        if task is None:
            return
        task.seconds = time.monotonic() - task.started
        task.status = "SUCCESS" if status == "SUCCESS" else "FAILURE"
        if self._task_file is not None:
            self._task_file.flush()
        log_text = _read(task.log)
        folder = self._locate(name, log_text)
        task.folder = folder
        if folder is not None:
            try:
                task.outputs = json.loads((folder / "executor_output.json").read_text())
            except (OSError, ValueError):
                task.outputs = {}
            if self._steps is not None:
                try:
                    task.reports = link_reports(folder, self._steps.output_types(name))
                except OSError:  # a report's name is a nicety, never a failure
                    task.reports = {}
        if task.status == "SUCCESS":
            task.error_type = task.error = ""
            try:
                task.figures = figures(task.outputs, log_text)
            except Exception as exc:  # a figure is a nicety, never a failure
                task.figures = f"(figures unreadable: {type(exc).__name__})"
            self.console.line(_task_line("done", task, task.figures))
        else:
            task.error_type, task.error = task_error(log_text, folder)
            self._pending_failure = task  # final, unless kfp.local retries it next

    def _retry(self, attempt: int, of: int, delay: float) -> None:
        task = self._pending_failure
        self._pending_failure = None
        if task is None:
            return
        self._retrying = task
        self.console.line(_task_line("failed", task, f"attempt {attempt} of {of}: "
                                     f"{_one_line(task)}; retrying in {delay:.0f} s"))

    def _flush_pending_failure(self) -> None:
        task = self._pending_failure
        self._pending_failure = None
        if task is not None:
            self.console.line(_task_line("FAILED", task, _kind(task)))


def _one_line(task: TaskEvent) -> str:
    first = (task.error.splitlines() or [""])[0]
    kind = task.error_type.rpartition(".")[2]
    text = f"{kind}: {first}" if kind and first else (kind or first or "failed (see its log)")
    return text if len(text) <= 160 else text[:157] + "..."


def _kind(task: TaskEvent) -> str:
    """A failed task's line: the kind of error only. The error itself is told once, at the end
    (`conveyor run`: on stderr; the Python API: in the PipelineFailed it raises)."""
    return task.error_type.rpartition(".")[2] or "failed"


def _file_name(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", task) or "task"


def _read(path: Path | None) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace") if path else ""
    except OSError:
        return ""
