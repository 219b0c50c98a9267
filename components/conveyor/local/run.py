"""Run a pipeline on this machine: `conveyor run PIPELINE --local`, or `conveyor.local.run(...)`.

    from conveyor.local import run
    result = run("training", table="mydata.shops", label="Price",
                 model_base_path="gs://my-bucket/models/shops")
    result.run_dir, result.tasks[-1].figures, result.log

The pipeline is a reference pipeline's name (`conveyor.pipelines.PIPELINES`), a pipeline
function (`@dsl.pipeline`), `path/to/module.py:function` or `package.module:function`, or a
compiled pipeline YAML (loaded with `kfp.components.load_component_from_file`). Its arguments are
checked against the pipeline's inputs (names, types, the required ones) before anything starts.
The emulator stack is the one `stack_root` names, else the one the environment points at
(`eval "$(conveyor local env)"`), else the default one; it is started if it is not running (and
stopped afterwards unless `keep_stack`). kfp.local runs the tasks one after the other in
subprocesses of this interpreter (`SubprocessRunner(use_venv=False)`: a fresh venv would lack
conveyor and kfp), or, with `image` (`--docker`), in containers of conveyor's image
(`conveyor.local.docker`). The buckets that the gs:// arguments name are created on the local
stack if missing, one line saying so each (on Google Cloud a missing bucket is an error that
names the gcloud command: preflight). The console shows one line per task, under the
pipeline's step names (see `conveyor.local.progress` and `conveyor.local.names`); every task's
log is a file under `<run folder>/logs/`, and every HTML or Markdown report also has a name
ending in `.html` / `.md` beside its artifact. A failed run's error is told once: in the
PipelineFailed raised, or by the caller (`conveyor run`: on stderr). Which pipeline and which
arguments are settled first, by `conveyor.pipelines.resolve`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conveyor.errors import ConveyorError
from conveyor.local import progress, runs
from conveyor.local.names import StepNames
from conveyor.local.task_report import artifact_paths, is_input_error, strip_ansi, task_folder
from conveyor.pipelines.resolve import check_arguments, resolve


class PipelineFailed(ConveyorError):
    """A local run ended with a failed task; `result` says which, why and where its log is."""

    def __init__(self, result: RunResult):
        self.result = result
        super().__init__(result.error_line())


@dataclasses.dataclass
class TaskResult:
    name: str
    status: str  # SUCCESS or FAILURE
    seconds: float
    attempts: int
    figures: str
    log: Path | None
    folder: Path | None
    artifacts: dict[str, str]  # output name -> URI (metrics artifacts left out)
    error_type: str = ""
    error: str = ""
    #: output name -> the report's file with its suffix (`report.html`) beside the artifact
    reports: dict[str, Path] = dataclasses.field(default_factory=dict)

    @property
    def input_error(self) -> bool:
        """The task failed on bad input (one of conveyor's InputErrors)."""
        return self.status == "FAILURE" and is_input_error(self.error_type)


@dataclasses.dataclass
class RunResult:
    pipeline: str  # what was asked for
    name: str  # the pipeline's name in its spec
    status: str  # SUCCESS or FAILURE
    seconds: float
    run_dir: Path | None  # <pipeline_root>/<name>-<timestamp>
    logs: Path  # the folder with run.log and one <task>.log per task
    tasks: list[TaskResult]
    error_type: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS"

    @property
    def log(self) -> Path:
        """The whole stream of the run."""
        return self.logs / "run.log"

    @property
    def failed(self) -> TaskResult | None:
        return next((t for t in self.tasks if t.status == "FAILURE"), None)

    @property
    def input_error(self) -> bool:
        failed = self.failed
        return failed.input_error if failed else is_input_error(self.error_type)

    def task(self, name: str) -> TaskResult:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r} ran (tasks: {', '.join(t.name for t in self.tasks)})")

    def error_line(self) -> str:
        """Why the run failed, in one line."""
        return self.error_message(lines=1)

    def error_message(self, lines: int = 8) -> str:
        """Why the run failed: the failed task, its error's kind and up to `lines` lines of its
        message (continuation lines indented)."""
        failed = self.failed
        if failed is not None:
            kind = failed.error_type.rpartition(".")[2]
            message = "\n  ".join((failed.error or "failed (no traceback in its log)")
                                  .splitlines()[:lines])
            return f"task {failed.name} failed: {kind + ': ' if kind else ''}{message}"
        if self.error:
            return self.error
        return f"pipeline {self.name} finished with status {self.status}"

    def summary(self) -> str:
        """The lines printed after the task lines: where the artifacts and logs are (the error
        itself is told once, by whoever reports the failure: see the module docstring)."""
        lines = []
        if self.ok:
            lines.append(f"{self.name}: SUCCESS in {self.seconds:.1f} s, {len(self.tasks)} tasks")
        else:
            failed = self.failed
            lines.append(f"{self.name}: FAILED after {self.seconds:.1f} s"
                         + (f" in {failed.name}" if failed is not None else ""))
            if failed is not None and failed.log is not None:
                lines.append(f"its log: {failed.log}")
        if self.run_dir is not None:
            lines.append(f"run folder: {self.run_dir}")
            for task in self.tasks:
                shown = _artifact_names(self.run_dir / task.name, task)
                if shown:
                    lines.append(f"  {task.name + '/':<24} " + "  ".join(shown))
        lines.append(f"logs: {self.logs}/  (run.log: the whole stream; one <task>.log per task)")
        return "\n".join(lines)


def _artifact_names(folder: Path, task: TaskResult) -> list[str]:
    """A task's artifacts as the summary shows them: `name/` for a folder, a report by its
    file with the suffix (`report.html`), any other file by name; an artifact outside the
    task's folder by its URI."""
    inside, outside = [], []
    for name, uri in sorted(task.artifacts.items()):
        if uri != str(folder / name):
            outside.append(f"{name} {uri}")
        elif name in task.reports:
            inside.append(task.reports[name].name)
        else:
            inside.append(f"{name}/" if Path(uri).is_dir() else name)
    return inside + outside


# -- the stack ----------------------------------------------------------------------------------

@dataclasses.dataclass
class StackUse:
    """The stack a run uses: its StackInfo (None: the one the environment names) and whether
    this run started it (and so stops it unless keep_stack)."""

    info: Any
    started: bool
    stops: bool


@contextmanager
def use_stack(stack_root: str | os.PathLike[str] | None = None,
              keep_stack: bool = False) -> Iterator[StackUse]:
    """The stack under `stack_root`, else the one the environment names, else the default one;
    started if none runs there (and then stopped on the way out unless `keep_stack`)."""
    from conveyor.local import LocalStack
    from conveyor.local.stack import check_environment, environment_names_stack

    if not stack_root and environment_names_stack():
        check_environment()  # a stack stopped since: fail now, naming the command
        yield StackUse(None, started=False, stops=False)
        return
    stack = LocalStack(stack_root)
    info = stack.status()
    started = info is None
    if info is None:
        info = stack.up()
    saved = {key: os.environ.get(key) for key in info.environ()}
    info.activate()
    try:
        yield StackUse(info, started=started, stops=started and not keep_stack)
    finally:
        if started and not keep_stack:
            stack.down()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


# -- the run -----------------------------------------------------------------------------------

def run(pipeline: Any, /, arguments: Mapping[str, Any] | None = None, *,
        pipeline_root: str | os.PathLike[str] = "local_outputs",
        stack_root: str | os.PathLike[str] | None = None, keep_stack: bool = False,
        verbose: bool = False, raise_on_error: bool = True, image: str | None = None,
        console: progress.Console | None = None, **params: Any) -> RunResult:
    """Run `pipeline` through kfp.local against the local stack; see the module docstring.

    Parameters come as keywords (`label="species"`) or in `arguments` (for a parameter whose
    name is one of this function's own). Returns a RunResult; a failed run raises
    PipelineFailed (its `result` attached) unless `raise_on_error` is False. Bad arguments raise
    InputError before the stack or any task starts. With `image`, every task runs in that
    image (conveyor's, `conveyor.images.local_image()`) through kfp's DockerRunner
    (`conveyor.local.docker`).
    """
    component, label = resolve(pipeline)
    checked = check_arguments(component, {**(arguments or {}), **params}, label)
    return run_component(component, label, checked, pipeline_root=pipeline_root,
                         stack_root=stack_root, keep_stack=keep_stack, verbose=verbose,
                         raise_on_error=raise_on_error, console=console, image=image)


def run_component(component, label: str, arguments: Mapping[str, Any], *,
                  pipeline_root: str | os.PathLike[str] = "local_outputs",
                  stack_root: str | os.PathLike[str] | None = None, keep_stack: bool = False,
                  verbose: bool = False, raise_on_error: bool = True,
                  console: progress.Console | None = None, image: str | None = None) -> RunResult:
    """`run` for a resolved pipeline (`resolve`) and checked arguments (`check_arguments`)."""
    name = component.pipeline_spec.pipeline_info.name
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    own_console = console is None
    if console is None:
        sys.stdout.flush()
        console = progress.Console(os.dup(1))  # the terminal, whatever fd 1 becomes meanwhile
    try:
        result = _run(component, label, name, dict(arguments), root, console, stack_root=stack_root,
                      keep_stack=keep_stack, verbose=verbose, image=image)
        console.line(result.summary())
    finally:
        if own_console:
            os.close(console.fd)
    if not result.ok and raise_on_error:
        raise PipelineFailed(result)
    return result


@contextmanager
def _scratch(root: Path):
    """A TMPDIR for the run's task processes, removed afterwards: kfp's command for every
    lightweight component writes its code into `$(mktemp -d)` and never removes it."""
    folder = Path(tempfile.mkdtemp(prefix=".conveyor-tmp-", dir=root))
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    try:
        yield folder
    finally:
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved
        shutil.rmtree(folder, ignore_errors=True)


class _RunFolder:
    """The run's folder under the root (kfp.local names it <pipeline>-<timestamp>), found from
    the first finished task; the log folder moves into it as `logs` as soon as it is known."""

    def __init__(self, root: Path, name: str):
        self.root = root
        self.name = name
        self.before = {p.name for p in root.iterdir()}
        self.path: Path | None = None
        self.capture: progress.Capture | None = None  # attach(): the capture that writes the logs

    def attach(self, capture: progress.Capture) -> None:
        self.capture = capture

    def locate(self, task: str, log_text: str) -> Path | None:
        """A finished task's folder (Capture's `locate`), or None."""
        if self.path is None:
            self.path = self._find(task, log_text)
            if self.path is None:
                return None
            target = self.path / "logs"
            if not target.exists():
                self._move_logs(target)
        folder = self.path / task
        return folder if folder.is_dir() else None

    def _find(self, task: str, log_text: str) -> Path | None:
        exact = task_folder(log_text)
        if exact is not None and exact.parent.parent == self.root and exact.is_dir():
            return exact.parent
        # no executor input in the log: the new folder that has this task
        candidates = [p for p in self.root.iterdir() if p.name not in self.before
                      and p.is_dir() and (p / task).is_dir() and not p.name.startswith(".")]
        if not candidates:
            return None
        mine = [p for p in candidates if p.name.startswith(f"{self.name}-")] or candidates
        return max(mine, key=lambda p: (p / task).stat().st_mtime)

    def settle(self) -> Path:
        """The run folder; when no task wrote anything, a new one for the logs alone."""
        if self.path is None:
            stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
            self.path = self.root / f"{self.name}-{stamp}-{os.getpid()}"
            self.path.mkdir()
            self._move_logs(self.path / "logs")
        return self.path

    def _move_logs(self, target: Path) -> None:
        assert self.capture is not None, "attach() the capture before the run starts"
        os.rename(self.capture.logs, target)
        self.capture.moved(target)


def _run(component, label: str, name: str, arguments: dict, root: Path,
         console: progress.Console, *, stack_root, keep_stack: bool, verbose: bool,
         image: str | None) -> RunResult:
    from kfp import local

    with use_stack(stack_root, keep_stack) as used:
        if used.info is not None:
            console.line(f"stack: BigQuery {used.info.bigquery_endpoint}, GCS "
                         f"{used.info.gcs_endpoint}, data in {used.info.root}"
                         + (" (started; stopped at the end)" if used.stops else
                            " (started; left running)" if used.started else ""))
        _create_buckets(arguments, console)
        task_runner = local.SubprocessRunner(use_venv=False)
        if image:
            from conveyor.local import docker

            component, arguments, task_runner = docker.prepare(component, image, arguments, root)
        local.init(runner=task_runner, pipeline_root=str(root), raise_on_error=False)
        folder = _RunFolder(root, name)
        logs = root / f".conveyor-logs-{os.getpid()}-{time.time_ns()}"
        started = time.monotonic()
        steps = StepNames(component.pipeline_spec)
        capture = progress.Capture(logs, verbose=verbose, console=console, locate=folder.locate,
                                   steps=steps)
        folder.attach(capture)
        console.line(f"{label}: running {name} through kfp.local"
                     + (f", every task in {image}" if image else ""))
        with capture, _scratch(root), steps.naming():
            error_type, error = _call(component, arguments, capture)
        seconds = time.monotonic() - started
        run_dir = folder.settle()
        result = _result(label, name, capture, run_dir, round(seconds, 2), error_type, error)
        runs.write_record(result, arguments)
        return result


def _create_buckets(arguments: Mapping[str, Any], console: progress.Console) -> None:
    """Create on the local stack each bucket a gs:// argument names that does not exist yet,
    one line each: a fresh stack has none, and a pipeline's first push needs one."""
    from conveyor.local import data

    for parameter, value in arguments.items():
        for bucket in data.ensure_buckets(data.buckets_named(value)):
            console.line(f"created bucket gs://{bucket} on the local stack ({parameter} names it)")


def _call(component, arguments: dict, capture: progress.Capture) -> tuple[str, str]:
    """Run the pipeline; kfp's own failures are reported (type, first line), not raised."""
    try:
        component(**arguments)
    except Exception as exc:  # kfp's own failures: reported, not raised
        import traceback

        traceback.print_exc()  # into run.log
        error_type = f"{type(exc).__module__}.{type(exc).__name__}"
        text = strip_ansi(str(exc)).strip()
        error = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        running = capture.current
        if running is not None and not running.error:  # kfp refused the task itself
            running.error_type, running.error = error_type, text
        return error_type, error
    return "", ""


def _result(label: str, name: str, capture: progress.Capture, run_dir: Path, seconds: float,
            error_type: str, error: str) -> RunResult:
    """The RunResult of a finished run, from what the capture saw."""
    tasks = [TaskResult(name=t.name, status=t.status, seconds=round(t.seconds, 2),
                        attempts=t.attempts, figures=t.figures, log=t.log, folder=t.folder,
                        artifacts=artifact_paths(t.outputs), error_type=t.error_type,
                        error=t.error, reports=dict(t.reports)) for t in capture.tasks]
    failed = any(t.status != "SUCCESS" for t in tasks) or bool(error) \
        or capture.pipeline_status not in ("", "SUCCESS") or not tasks
    if not tasks and not error:
        error = "no task ran"
    return RunResult(pipeline=label, name=name, status="FAILURE" if failed else "SUCCESS",
                     seconds=seconds, run_dir=run_dir,
                     logs=capture.logs, tasks=tasks, error_type=error_type, error=error)
