"""Generate every compiled component and pipeline spec (`conveyor compile`, `make compile`),
and compile a user's own pipeline (`conveyor compile my_pipelines.py:score`).

Components compile to `components/conveyor/<step>/<component>.yaml`, pipelines to
`pipelines/<name>/pipeline.yaml`, both under a repository root. The output is deterministic
(same source, kfp version and registry -> same bytes); the golden tests compare it with the
checked-in files. A user's pipeline (`path/to/module.py:function`, `package.module:function` or
a compiled YAML to retarget; `conveyor.pipelines.resolve`) compiles to one file, its images
pointed at `--registry` (`conveyor.images.retarget`).
"""

from __future__ import annotations

import ast
import importlib
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from conveyor import images
from conveyor.errors import InputError
from conveyor.pipelines import PIPELINES


def spec_paths(root: Path) -> dict[str, Path]:
    """Each component and pipeline name -> where its compiled spec belongs under root."""
    from conveyor import components

    out = {}
    for name in components.__all__:
        step = getattr(components, name).python_func.__module__.split(".")[1]
        out[name] = root / "components" / "conveyor" / step / f"{name}.yaml"
    for name in PIPELINES:
        out[f"pipeline:{name}"] = root / "pipelines" / name / "pipeline.yaml"
    out["manifest:schedule"] = root / "manifests" / "pipeline-runner" / "schedule.yaml"
    return out


def _target(name: str):
    if name.startswith("pipeline:"):
        return importlib.import_module(PIPELINES[name.split(":", 1)[1]]).pipeline
    from conveyor import components

    return getattr(components, name)


def compile_one(name: str, path: Path, registry: str = images.DEFAULT_REGISTRY) -> Path:
    """Compile one component or pipeline (as named by `spec_paths`) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if name == "manifest:schedule":
        return _schedule(path, registry)
    return compile_pipeline(_target(name), path, registry)


def compile_pipeline(component, path: Path, registry: str = images.DEFAULT_REGISTRY) -> Path:
    """Compile a kfp pipeline or component (a function's or a loaded YAML's) to `path`, with
    conveyor's images pointed at `registry`; deterministic."""
    from kfp import compiler

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        compiler.Compiler().compile(component, str(path))
    except (ValueError, TypeError) as exc:  # kfp's own refusals: the user's pipeline
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"compile: kfp cannot compile {getattr(component, 'name', component)}"
                         f": {type(exc).__name__}: {first}") from None
    text = _sorted_header_defaults(path.read_text())
    if registry != images.DEFAULT_REGISTRY:
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        docs = [images.retarget(d, registry) for d in yaml.safe_load_all(text)]
        text = header + yaml.safe_dump_all(docs, sort_keys=True)
    path.write_text(text)
    return path


def compile_own(pipeline: str, output: Path | None = None,
                registry: str = images.DEFAULT_REGISTRY) -> Path:
    """A user's pipeline (`conveyor.pipelines.resolve`: MODULE.py:FUNCTION,
    package.module:FUNCTION or a compiled YAML) compiled to `output` (default
    `<function>.yaml` in the current folder; never over its own source)."""
    from conveyor.pipelines.resolve import resolve

    component, _ = resolve(pipeline)
    if output is None:
        stem = pipeline.rpartition(":")[2] if ":" in pipeline else Path(pipeline).stem
        output = Path(f"{stem}.yaml")
    if ":" not in pipeline and Path(pipeline).resolve() == Path(output).resolve():
        raise InputError(f"compile: --output {output} is the YAML being compiled; give another "
                         "path")
    return compile_pipeline(component, Path(output), registry)


#: The recurring continuous-training run (a KFP ScheduledWorkflow; see FACTS of kfp 2.17).
#: Its arguments are the demo's: the pipeline has no defaults for the table, the label and the
#: base path, so an overlay sets the real ones (manifests/README.md).
SCHEDULE: dict[str, Any] = {
            "name": "continuous-training", "cron": "0 0 2 * * *", "max_concurrency": 1,
            # model_base_path first: overlays patch /spec/workflow/parameters/0/value
            "parameters": {"model_base_path": "gs://conveyor-demo/models/penguins",
                           "table": "conveyor_demo.penguins", "label": "species"}}


def _schedule(path: Path, registry: str) -> Path:
    """manifests/pipeline-runner/schedule.yaml: the compiled continuous-training spec, run
    nightly at 02:00 UTC, one run at a time, no catch-up, as the pipeline-runner account."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = compile_one("pipeline:continuous_training", Path(tmp) / "p.yaml", registry)
        spec = next(yaml.safe_load_all(spec_file.read_text()))
    resource = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "ScheduledWorkflow",
        "metadata": {"name": SCHEDULE["name"], "labels": {"app.kubernetes.io/part-of": "conveyor"}},
        "spec": {
            "description": spec["pipelineInfo"].get("description", ""),
            "enabled": True,
            "maxConcurrency": SCHEDULE["max_concurrency"],
            "noCatchup": True,
            "serviceAccount": "pipeline-runner",
            "trigger": {"cronSchedule": {"cron": SCHEDULE["cron"]}},
            "workflow": {
                "parameters": [{"name": name, "value": value}
                               for name, value in SCHEDULE["parameters"].items()],
                "spec": spec,
            },
        },
    }
    path.write_text("# Generated by `conveyor compile` from pipelines/continuous_training: do not "
                    "edit.\n" + yaml.safe_dump(resource, sort_keys=True))
    return path


_DICT_DEFAULT = re.compile(r"^(#    \w+: dict \[Default: )(\{.*\})(\])$")


def _sorted_header_defaults(text: str) -> str:
    """kfp writes dict defaults in its header comment in protobuf map order, which varies
    between processes; sort their keys so that compiling is deterministic."""
    def fix(line: str) -> str:
        match = _DICT_DEFAULT.match(line)
        if not match:
            return line
        value = ast.literal_eval(match.group(2))
        return match.group(1) + str(dict(sorted(value.items()))) + match.group(3)

    return "\n".join(fix(line) for line in text.split("\n"))


def is_own(name: str) -> bool:
    """Whether `name` names a user's pipeline rather than one of conveyor's specs."""
    prefix = name.partition(":")[0]
    return name.endswith((".yaml", ".yml")) or (":" in name and prefix not in
                                                ("pipeline", "manifest"))


def compile_all(root: Path, registry: str = images.DEFAULT_REGISTRY,
                only: list[str] | None = None) -> list[Path]:
    """Compile the named specs (default: all) under `root`; returns the files written."""
    from conveyor.params import did_you_mean

    paths = spec_paths(root)
    unknown = sorted(set(only or []) - set(paths))
    if unknown:
        raise InputError(f"compile: no conveyor spec named {unknown}{did_you_mean(unknown, paths)}"
                         f" (known: {', '.join(sorted(paths))}); your own pipeline is "
                         "path/to/module.py:function, package.module:function or a .yaml file")
    return [compile_one(name, paths[name], registry) for name in (only or paths)]


def stale(root: Path) -> list[str]:
    """The specs under root that differ from a fresh compile (ignoring the kfp version line)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = compile_all(Path(tmp))
        for (name, want), got in zip(spec_paths(root).items(), fresh):
            if not want.exists() or normalize(want.read_text()) != normalize(got.read_text()):
                out.append(name)
    return out


def normalize(text: str) -> str:
    """A spec without what only the kfp version changes (the `sdkVersion` line)."""
    return "\n".join(line for line in text.splitlines()
                     if not line.lstrip().startswith("sdkVersion:"))
