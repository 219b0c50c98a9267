"""Which pipeline, and with what arguments: both settled before anything starts or is sent.

`resolve` turns what the caller names (a reference pipeline's name, a `@dsl.pipeline` function,
`path/to/module.py:function`, `package.module:function` or a compiled YAML) into a kfp component;
`parse_params` / `parse_cli_params` read `--param NAME=VALUE`; `check_arguments` checks the
arguments against the pipeline's inputs (names, types, the required ones; a reference pipeline's
values against `conveyor.pipelines.checks`), every problem named at once, so a bad argument never
costs a stack start, a task or a submission. `conveyor run`, `compile`, `submit` and `schedule`
all resolve and check through here.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.errors import InputError
from conveyor.params import did_you_mean

_TYPES = {"String": (str,), "Integer": (int,), "Float": (int, float), "Boolean": (bool,),
          "List": (list,), "Dict": (dict,), "Struct": (dict,)}
_TYPE_WORDS = {"String": "a string", "Integer": "an integer", "Float": "a number",
               "Boolean": "true or false", "List": "a JSON list", "Dict": "a JSON object",
               "Struct": "a JSON object"}


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
    except Exception as exc:  # kfp raises several kinds for a bad file
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
        if spec is None or spec.loader is None:  # not a suffix Python imports (.py, .so, ...)
            raise InputError(f"pipeline: {path} is not a Python module (in {pipeline})")
        loader = spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))  # its own sibling imports
        try:
            sys.modules[name] = module
            loader.exec_module(module)
        except Exception as exc:  # the user's module: where and what, in one line
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


def inputs(component) -> dict:
    """name -> kfp InputSpec of the pipeline's inputs."""
    return dict(component.component_spec.inputs or {})


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`name=value` pairs; a value that parses as JSON is taken as JSON (numbers, lists, dicts).
    A name given twice is an InputError (naming it), not the last one silently winning."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--param: {pair!r} is not name=value")
        if name in out:  # the last one would silently win
            raise InputError(f"--param: {name} is given twice; give each parameter once")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def check_names(pipeline: str, arguments: Mapping[str, Any], *, values: bool = True) -> None:
    """Every argument names a parameter of the reference pipeline `pipeline` (a close match
    named for a misspelt one) and, with `values`, every value passes the checks of the
    parameters' definitions (`conveyor.pipelines.checks`); one InputError names every problem."""
    from conveyor.pipelines import PIPELINES

    if pipeline not in PIPELINES:
        raise InputError(f"pipeline: {pipeline!r} is not one of {sorted(PIPELINES)}")
    known = importlib.import_module(PIPELINES[pipeline]).pipeline.component_spec.inputs or {}
    problems = []
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        problems.append(f"{pipeline} has no parameter(s) {unknown}{did_you_mean(unknown, known)} "
                        f"(parameters: {', '.join(sorted(known))})")
    if values:
        from conveyor.pipelines.checks import problems as value_problems

        problems += value_problems({k: v for k, v in arguments.items() if k in known})
    if problems:
        raise InputError("--param: " + "; ".join(problems))


def parse_cli_params(pairs: list[str], component) -> dict[str, Any]:
    """`--param name=value` as `parse_params` reads them (JSON values), except that a
    string input keeps the text as given (`--param label=2024` is the column "2024")."""
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
        try:
            check_names(label, arguments, values=False)  # the values: below
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
        fits = isinstance(value, _TYPES[spec.type]) \
            and not (isinstance(value, bool) and spec.type != "Boolean")  # True is no integer
        if not fits:
            problems.append(f"{name} must be {_TYPE_WORDS[spec.type]}, got {value!r}")
            continue
        out[name] = float(value) if spec.type == "Float" else value
    if reference:  # the values inside: hyper-parameter names, threshold metrics, policies...
        from conveyor.pipelines.checks import problems as value_problems

        problems += value_problems(out)
    if problems:
        raise InputError(f"{label}: " + "; ".join(problems))
    return out
