"""Every task of a local run in conveyor's image: `conveyor run PIPELINE --local --docker`.

On Vertex AI Pipelines and Kubeflow each task is a container of conveyor's image running the
command line of the compiled spec, as the unprivileged user 10001. `--docker` does the same here
with kfp.local's `DockerRunner` and the image `make image` builds (`conveyor:<version>`), so what
the subprocess runner hides is exercised:

- the image: the spec's tasks name conveyor's image in its registry (`ghcr.io/...`); they run
  the local one instead (`conveyor.images.replace_image`), or the one `--image` names;
- the network: containers share the host's network (`--network host`), so the emulators on
  127.0.0.1 answer; their endpoints reach the tasks as environment variables, as the subprocess
  runner's children inherit them (a container inherits nothing);
- the files: kfp mounts the pipeline root at its own path. A string parameter that is a local
  path (a `model_base_path` folder, a suite or feature-spec file, an output prefix) is mounted
  at its own path too (made absolute; a missing one is created as a folder first), since the
  container sees nothing else of the host;
- the user: as root here (CI), tasks run as the image's user 10001:10001, as on GCP, and the
  folders they write to (the pipeline root and the path parameters) are given to its group
  (group-writable, set-gid). As anyone else, tasks run as that user's uid:gid with the root
  group added (the image's HOME is group-0 writable, as OpenShift runs images), so that the
  files they write stay the user's to remove.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.errors import ConveyorError, InputError

#: The image's user (images/conveyor/Dockerfile: USER 10001:10001).
IMAGE_UID = IMAGE_GID = 10001
#: Host variables handed to every task besides the stack's endpoints: conveyor's own settings
#: and the Google clients' emulator and project switches.
PASSED_ENV = re.compile(r"^(CONVEYOR_|STORAGE_EMULATOR_HOST$|GOOGLE_CLOUD_PROJECT$|GCSFS_)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
#: A missing path with one of these suffixes names a file (its folder is created), else a folder.
_FILE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")


@dataclasses.dataclass
class DockerPlan:
    """What `runner()` needs: the image, the arguments with local paths made absolute, the
    folders and files to mount, the user to run as."""

    image: str
    arguments: dict[str, Any]
    mounts: list[Path]
    user: str | None  # None: the image's own (10001:10001)
    group_add: list[str]


def check_engine(image: str) -> None:
    """Fail early, in one line, without an engine or without the image."""
    try:
        import docker
    except ImportError:
        raise ConveyorError("--docker needs the Python package `docker` (pip install docker)") \
            from None
    try:
        client = docker.from_env()
    except docker.errors.DockerException as exc:
        raise ConveyorError(f"--docker: no Docker engine answers ({exc}); start one (make image "
                            "starts dockerd)") from None
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ConveyorError(f"--docker: no image {image} here; build it with `make image` (or "
                            "give --image)") from None
    finally:
        client.close()


def local_paths(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], list[Path]]:
    """The arguments with every local-path string made absolute, and the paths to mount: a
    string with a '/' and no URI scheme is a local path. A missing one is created: as a folder,
    or, when its name has a suffix (`report.html`), its parent folder."""
    out: dict[str, Any] = {}
    mounts: list[Path] = []
    for name, value in arguments.items():
        if not _is_local_path(value):
            out[name] = value
            continue
        path = Path(value).expanduser().absolute()
        if not path.exists():
            folder = path.parent if _FILE_SUFFIX.search(path.name) else path
            folder.mkdir(parents=True, exist_ok=True)
            mounts.append(folder)
        else:
            mounts.append(path)
        out[name] = str(path) + ("/" if value.endswith("/") and str(path) != "/" else "")
    return out, _outermost(mounts)


def _is_local_path(value: Any) -> bool:
    """An absolute, ./, ../ or ~ path, or a relative one with a '/' that exists (a query with a
    division in it is not a path)."""
    if not isinstance(value, str) or not value or _SCHEME.match(value) or "\n" in value:
        return False
    if value.startswith(("/", "./", "../", "~/")):
        return True
    return "/" in value and not any(c.isspace() for c in value) and Path(value).exists()


def _outermost(paths: list[Path]) -> list[Path]:
    """The paths without those inside another one (one mount covers them)."""
    unique = sorted(set(paths), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


def share_with_image_user(folder: Path, recursive: bool = True) -> None:
    """Let the image's user write into `folder` (and, if `recursive`, what is in it): group
    10001, group read-write, set-gid folders, so what it creates keeps the group. Only as root
    (CI here)."""
    inside = folder.rglob("*") if recursive and folder.is_dir() else ()
    for path in [folder, *inside]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        os.chown(path, -1, IMAGE_GID)
        extra = stat.S_IRGRP | stat.S_IWGRP
        if path.is_dir():
            extra |= stat.S_IXGRP | stat.S_ISGID
        os.chmod(path, stat.S_IMODE(mode) | extra)


def plan(image: str, arguments: Mapping[str, Any], pipeline_root: Path) -> DockerPlan:
    """Mounts, user and arguments for running every task in `image` (see the module doc)."""
    absolute, mounts = local_paths(arguments)
    root = pipeline_root.resolve()
    mounts = [m for m in mounts if m != root and root not in m.parents]
    if os.getuid() == 0:
        share_with_image_user(root, recursive=False)  # each run's folder is the tasks' own
        for folder in [m for m in mounts if m.is_dir()]:
            share_with_image_user(folder)
        return DockerPlan(image, absolute, mounts, user=None, group_add=[])
    return DockerPlan(image, absolute, mounts, user=f"{os.getuid()}:{os.getgid()}",
                      group_add=["0"])


def environment() -> dict[str, str]:
    """The variables every task gets: the stack's endpoints (set in this process by
    `conveyor.local.run.use_stack`) and the host's other conveyor and Google emulator settings
    (a container inherits none of the host's environment)."""
    env = {k: v for k, v in os.environ.items() if PASSED_ENV.match(k)}
    env.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    return env


def runner(docker_plan: DockerPlan, env: Mapping[str, str]):
    """kfp.local's DockerRunner for the plan: host network, the environment, the path mounts."""
    from docker.types import Mount
    from kfp import local

    args: dict[str, Any] = {
        "network_mode": "host",
        "environment": dict(env),
        "mounts": [Mount(target=str(p), source=str(p), type="bind", read_only=False)
                   for p in docker_plan.mounts],
    }
    if docker_plan.user is not None:
        args["user"] = docker_plan.user
        args["group_add"] = docker_plan.group_add
    return local.DockerRunner(**args)


def retarget(component, image: str):
    """`component` (a pipeline) with conveyor's image replaced by `image` in every task: the
    spec is compiled, rewritten (`conveyor.images.replace_image`) and loaded back."""
    import yaml
    from kfp import compiler, components

    from conveyor import images

    with tempfile.TemporaryDirectory(prefix="conveyor-docker-") as folder:
        source = Path(folder) / "pipeline.yaml"
        compiler.Compiler().compile(component, str(source))
        docs = list(yaml.safe_load_all(source.read_text()))
        if not docs or not isinstance(docs[0], dict):
            raise InputError(f"--docker: {component.name} did not compile to a pipeline spec")
        docs[0] = images.replace_image(docs[0], image)
        target = Path(folder) / "retargeted.yaml"
        target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return components.load_component_from_file(str(target))


def prepare(component, image: str, arguments: Mapping[str, Any], pipeline_root: Path):
    """(the pipeline running `image`, its arguments, the DockerRunner) for a `--docker` run,
    after checking that the engine answers and has the image."""
    check_engine(image)
    docker_plan = plan(image, arguments, pipeline_root)
    return retarget(component, image), docker_plan.arguments, runner(docker_plan, environment())
