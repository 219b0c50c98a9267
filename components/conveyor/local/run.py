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
(`conveyor.local.docker`). The console shows one line per task (see `conveyor.local.progress`); every
task's log is a file under `<run folder>/logs/`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from conveyor.errors import ConveyorError, InputError
from conveyor.local import progress
from conveyor.params import did_you_mean

_TYPES = {"String": (str,), "Integer": (int,), "Float": (int, float), "Boolean": (bool,),
          "List": (list,), "Dict": (dict,), "Struct": (dict,)}
_TYPE_WORDS = {"String": "a string", "Integer": "an integer", "Float": "a number",
               "Boolean": "true or false", "List": "a JSON list", "Dict": "a JSON object",
               "Struct": "a JSON object"}


class PipelineFailed(ConveyorError):
    """A local run ended with a failed task; `result` says which, why and where its log is."""

    def __init__(self, result: "RunResult"):
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

    @property
    def input_error(self) -> bool:
        """The task failed on bad input (one of conveyor's InputErrors)."""
        return self.status == "FAILURE" and progress.is_input_error(self.error_type)


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
        return failed.input_error if failed else progress.is_input_error(self.error_type)

    def task(self, name: str) -> TaskResult:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r} ran (tasks: {', '.join(t.name for t in self.tasks)})")

    def error_line(self) -> str:
        failed = self.failed
        if failed is not None:
            kind = failed.error_type.rpartition(".")[2]
            first = (failed.error.splitlines() or ["failed"])[0]
            return f"task {failed.name} failed: {kind + ': ' if kind else ''}{first}"
        if self.error:
            return self.error
        return f"pipeline {self.name} finished with status {self.status}"

    def summary(self) -> str:
        """The lines printed after the task lines: where the artifacts and logs are."""
        lines = []
        if self.ok:
            lines.append(f"{self.name}: SUCCESS in {self.seconds:.1f} s, {len(self.tasks)} tasks")
        else:
            lines.append(f"{self.name}: FAILED after {self.seconds:.1f} s")
            failed = self.failed
            if failed is not None:
                kind = failed.error_type.rpartition(".")[2]
                message = failed.error or "no traceback in its log"
                lines.append(f"error in {failed.name}: {kind + ': ' if kind else ''}"
                             + "\n  ".join(message.splitlines()[:8]))
                lines.append(f"its log: {failed.log}")
            elif self.error:
                lines.append(f"error: {self.error}")
        if self.run_dir is not None:
            lines.append(f"run folder: {self.run_dir}")
            for task in self.tasks:
                inside, outside = [], []
                for name, uri in sorted(task.artifacts.items()):
                    if uri == str(self.run_dir / task.name / name):
                        inside.append(f"{name}/")
                    else:
                        outside.append(f"{name} {uri}")
                if inside or outside:
                    lines.append(f"  {task.name + '/':<24} " + "  ".join(inside + outside))
        lines.append(f"logs: {self.logs}/  (run.log: the whole stream; one <task>.log per task)")
        return "\n".join(lines)


# -- the pipeline -----------------------------------------------------------------------------

def resolve(pipeline: Any) -> tuple[Any, str]:
    """The runnable kfp component for `pipeline` and how to name it in messages."""
    from kfp.dsl import base_component

    from conveyor.pipelines import PIPELINES

    if isinstance(pipeline, base_component.BaseComponent):
        return pipeline, pipeline.name
    if isinstance(pipeline, os.PathLike):
        pipeline = os.fspath(pipeline)
    if not isinstance(pipeline, str) or not pipeline:
        raise InputError(f"pipeline: expected a reference name ({', '.join(sorted(PIPELINES))}), "
                         "a @dsl.pipeline function, MODULE:FUNCTION or a compiled YAML file, "
                         f"got {pipeline!r}")
    if pipeline in PIPELINES:
        return importlib.import_module(PIPELINES[pipeline]).pipeline, pipeline
    if pipeline.endswith((".yaml", ".yml")) and ":" not in pipeline:
        return _load_yaml(Path(pipeline)), pipeline
    module_ref, sep, attr = pipeline.rpartition(":")
    if not sep or not module_ref or not attr:
        raise InputError(f"pipeline: {pipeline!r} is not a reference pipeline "
                         f"({', '.join(sorted(PIPELINES))}), a compiled .yaml file, "
                         "path/to/module.py:function or package.module:function")
    module = _import(module_ref, pipeline)
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise InputError(f"pipeline: {module_ref} has no {attr!r}") from None
    if not isinstance(found, base_component.BaseComponent):
        raise InputError(f"pipeline: {pipeline} is a {type(found).__name__}, not a kfp pipeline "
                         "(decorate it with @dsl.pipeline)")
    return found, pipeline


def _load_yaml(path: Path):
    from kfp import components

    if not path.is_file():
        raise InputError(f"pipeline: no such file {path}")
    try:
        loaded = components.load_component_from_file(str(path))
    except Exception as exc:  # noqa: BLE001  (kfp raises several kinds for a bad file)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"pipeline: {path} is not a compiled KFP pipeline or component "
                         f"({type(exc).__name__}: {first})") from None
    return loaded


def _import(module_ref: str, pipeline: str):
    if module_ref.endswith(".py") or os.sep in module_ref or "/" in module_ref:
        path = Path(module_ref)
        if not path.is_file():
            raise InputError(f"pipeline: no such file {path} (in {pipeline})")
        name = f"conveyor_user_pipeline_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))  # its own sibling imports
        try:
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001  (the user's module: where and what, in one line)
            sys.modules.pop(name, None)
            raise InputError(f"pipeline: importing {path} failed{_where(exc, path)}: "
                             f"{type(exc).__name__}: {exc} (--debug shows the traceback)") from exc
        finally:
            sys.path.remove(str(path.resolve().parent))
        return module
    try:
        return importlib.import_module(module_ref)
    except ModuleNotFoundError as exc:
        if exc.name and module_ref.startswith(exc.name):
            raise InputError(f"pipeline: no module named {module_ref!r} (in {pipeline}); give "
                             "path/to/module.py:function for a file") from None
        raise


def _where(exc: BaseException, path: Path) -> str:
    """' at <path>:<line>' of the innermost frame of `exc` in the file `path`, else ''."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if Path(f.filename).resolve() == path.resolve()]
    return f" at {path}:{frames[-1].lineno}" if frames else ""


def branches(pipeline_spec) -> dict[str, str]:
    """DAG task name of each branch (dsl.If/Elif/Else, sub-pipeline) -> '<its name>: <the
    tasks in it>', e.g. 'condition-2' -> 'blessed: push', for the skip lines."""
    components = pipeline_spec.components

    def leaves(component_name: str) -> list[str]:
        comp = components[component_name]
        if comp.WhichOneof("implementation") != "dag":
            return []
        out = []
        for task_name, task in comp.dag.tasks.items():
            inner = components[task.component_ref.name]
            out += leaves(task.component_ref.name) if inner.WhichOneof("implementation") == "dag" \
                else [task_name]
        return out

    out = {}
    dags = [pipeline_spec.root.dag] + [c.dag for c in components.values()
                                       if c.WhichOneof("implementation") == "dag"]
    for dag in dags:
        for task_name, task in dag.tasks.items():
            if components[task.component_ref.name].WhichOneof("implementation") == "dag":
                inside = sorted(leaves(task.component_ref.name))
                label = task.task_info.name or task_name
                out[task_name] = f"{label}: {', '.join(inside)}" if inside else label
    return out


def inputs(component) -> dict:
    """name -> kfp InputSpec of the pipeline's inputs."""
    return dict(component.component_spec.inputs or {})


def parse_cli_params(pairs: list[str], component) -> dict[str, Any]:
    """`--param name=value` as `conveyor submit` parses them (JSON values), except that a
    string input keeps the text as given (`--param label=2024` is the column "2024")."""
    from conveyor.submit import parse_params

    params = parse_params(pairs)
    specs = inputs(component)
    for pair in pairs:
        name, _, raw = pair.partition("=")
        spec = specs.get(name)
        if spec is not None and spec.type == "String" and not isinstance(params[name], str):
            params[name] = raw
    return params


def check_arguments(component, arguments: Mapping[str, Any], label: str) -> dict[str, Any]:
    """The arguments, checked against the pipeline's inputs (every problem named at once);
    an integer given for a float input becomes a float. A reference pipeline's values are
    checked too (`conveyor.pipelines.checks`: hyper-parameter names and types, threshold
    metrics, policies, split ratios), so none of them fails a task minutes into the run."""
    from conveyor.pipelines import PIPELINES

    specs = inputs(component)
    problems = []
    reference = label in PIPELINES and \
        component is importlib.import_module(PIPELINES[label]).pipeline
    if reference:
        from conveyor.submit import check_params  # the names check of `conveyor submit`

        try:
            check_params(label, arguments, values=False)  # the values: below
        except InputError as exc:
            problems.append(str(exc).removeprefix("--param: ").removeprefix(f"{label} "))
    elif set(arguments) - set(specs):
        strangers = sorted(set(arguments) - set(specs))
        problems.append(f"has no parameter(s) {strangers}{did_you_mean(strangers, specs)} "
                        f"(parameters: {', '.join(sorted(specs))})")
    out = {}
    for name, spec in specs.items():
        given = name in arguments
        if not given:
            if not spec.optional and spec.default is None:
                what = "an artifact input" if spec.type not in _TYPES else _TYPE_WORDS[spec.type]
                problems.append(f"{name} is required ({what})")
            continue
        value = arguments[name]
        if spec.type not in _TYPES:
            problems.append(f"{name} is an artifact input ({spec.type}): a local run cannot "
                            "give it from a parameter")
            continue
        if isinstance(value, bool) and spec.type != "Boolean" or \
                not isinstance(value, _TYPES[spec.type]):
            problems.append(f"{name} must be {_TYPE_WORDS[spec.type]}, got {value!r}")
            continue
        out[name] = float(value) if spec.type == "Float" else value
    if reference:  # the values inside: hyper-parameter names, threshold metrics, policies...
        from conveyor.pipelines.checks import problems as value_problems

        problems += value_problems(out)
    if problems:
        raise InputError(f"{label}: " + "; ".join(problems))
    return out


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
    from conveyor import gcp
    from conveyor.local import LocalStack

    if not stack_root and os.environ.get(gcp.BIGQUERY_ENDPOINT_ENV) \
            and os.environ.get(gcp.STORAGE_EMULATOR_ENV):
        yield StackUse(None, started=False, stops=False)
        return
    stack = LocalStack(stack_root)
    info = stack.status()
    started = info is None
    if started:
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
    if own_console:
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
        task_runner = local.SubprocessRunner(use_venv=False)
        if image:
            from conveyor.local import docker

            component, arguments, task_runner = docker.prepare(component, image, arguments, root)
        local.init(runner=task_runner, pipeline_root=str(root), raise_on_error=False)
        before = {p.name for p in root.iterdir()}
        logs = root / f".conveyor-logs-{os.getpid()}-{time.time_ns()}"
        found: dict[str, Path] = {}

        def locate(task: str, log_text: str) -> Path | None:
            if "run_dir" not in found:
                exact = progress.task_folder(log_text)
                if exact is not None and exact.parent.parent == root and exact.is_dir():
                    found["run_dir"] = exact.parent
                else:  # no executor input in the log: the new folder that has this task
                    candidates = [p for p in root.iterdir() if p.name not in before
                                  and p.is_dir() and (p / task).is_dir()
                                  and not p.name.startswith(".")]
                    if not candidates:
                        return None
                    mine = [p for p in candidates if p.name.startswith(f"{name}-")] or candidates
                    found["run_dir"] = max(mine, key=lambda p: (p / task).stat().st_mtime)
                target = found["run_dir"] / "logs"
                if not target.exists():
                    os.rename(capture.logs, target)
                    capture.moved(target)
            folder = found["run_dir"] / task
            return folder if folder.is_dir() else None

        started = time.monotonic()
        error_type = error = ""
        capture = progress.Capture(logs, verbose=verbose, console=console, locate=locate,
                                   branches=branches(component.pipeline_spec))
        console.line(f"{label}: running {name} through kfp.local"
                     + (f", every task in {image}" if image else ""))
        with capture, _scratch(root):
            try:
                component(**arguments)
            except Exception as exc:  # noqa: BLE001  (kfp's own failures: reported, not raised)
                import traceback

                traceback.print_exc()  # into run.log
                error_type = f"{type(exc).__module__}.{type(exc).__name__}"
                text = progress.strip_ansi(str(exc)).strip()
                error = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
                running = capture.current
                if running is not None and not running.error:  # kfp refused the task itself
                    running.error_type, running.error = error_type, text
        seconds = time.monotonic() - started
        if "run_dir" not in found:  # no task wrote anything: a run folder for the logs alone
            stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
            found["run_dir"] = root / f"{name}-{stamp}-{os.getpid()}"
            found["run_dir"].mkdir()
            os.rename(capture.logs, found["run_dir"] / "logs")
            capture.moved(found["run_dir"] / "logs")
        tasks = [TaskResult(name=t.name, status=t.status, seconds=round(t.seconds, 2),
                            attempts=t.attempts, figures=t.figures, log=t.log, folder=t.folder,
                            artifacts=progress.artifact_paths(t.outputs),
                            error_type=t.error_type, error=t.error) for t in capture.tasks]
        failed = any(t.status != "SUCCESS" for t in tasks) or bool(error) \
            or capture.pipeline_status not in ("", "SUCCESS") or not tasks
        if not tasks and not error:
            error = "no task ran"
        return RunResult(pipeline=label, name=name, status="FAILURE" if failed else "SUCCESS",
                         seconds=round(seconds, 2), run_dir=found.get("run_dir"),
                         logs=capture.logs, tasks=tasks, error_type=error_type, error=error)
