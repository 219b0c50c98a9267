"""Generate every compiled component and pipeline spec (`conveyor compile`, `make compile`).

Components compile to `components/conveyor/<step>/<component>.yaml`, pipelines to
`pipelines/<name>/pipeline.yaml`, both under a repository root. The output is deterministic
(same source, kfp version and registry -> same bytes); the golden tests compare it with the
checked-in files.
"""

from __future__ import annotations

import ast
import importlib
import re
import tempfile
from pathlib import Path

import yaml

from conveyor import images
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
    return out


def _target(name: str):
    if name.startswith("pipeline:"):
        return importlib.import_module(PIPELINES[name.split(":", 1)[1]]).pipeline
    from conveyor import components

    return getattr(components, name)


def compile_one(name: str, path: Path, registry: str = images.DEFAULT_REGISTRY) -> Path:
    """Compile one component or pipeline (as named by `spec_paths`) to `path`."""
    from kfp import compiler

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(_target(name), str(path))
    text = _sorted_header_defaults(path.read_text())
    if registry != images.DEFAULT_REGISTRY:
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        docs = [images.retarget(d, registry) for d in yaml.safe_load_all(text)]
        text = header + yaml.safe_dump_all(docs, sort_keys=True)
    path.write_text(text)
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


def compile_all(root: Path, registry: str = images.DEFAULT_REGISTRY,
                only: list[str] | None = None) -> list[Path]:
    """Compile the named specs (default: all) under `root`; returns the files written."""
    paths = spec_paths(root)
    unknown = sorted(set(only or []) - set(paths))
    if unknown:
        raise ValueError(f"unknown spec(s) {unknown}; known: {sorted(paths)}")
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
