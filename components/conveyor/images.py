"""conveyor's container images, named from the one version string.

The registry is a parameter (of the image build and of compilation), never read from the
environment: `image()` with no argument gives the default registry that checked-in specs use,
and `conveyor compile --registry R` / `make images REGISTRY=R` retarget both consistently.

The base images are named here and nowhere else, pinned by digest so that a rebuild gets the same
bytes: images/pin.sh records the digests, images/build.sh reads them
(`python -m conveyor.images`) and refuses to build from a base without one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

from conveyor.version import __version__

DEFAULT_REGISTRY = "ghcr.io/conveyor-ml"
IMAGE_NAME = "conveyor"
DOCKERFILE = "images/conveyor/Dockerfile"
#: Image variants and the tag suffix of each (images/build.sh builds both from DOCKERFILE).
VARIANTS: dict[str, str] = {"cpu": "", "gpu": "-gpu"}
#: The base image of both variants (the Dockerfile's BASE_IMAGE build argument), as
#: `name:tag@sha256:<digest>`: images/pin.sh resolves the tag and writes the digest here;
#: images/build.sh refuses a base without one. Where Docker Hub is out of reach, `make image`
#: (images/local.sh) builds a stand-in from Debian's packages (docs/images.md).
BASE_IMAGE = "python:3.11-slim-bookworm"
BASE_IMAGES: dict[str, str] = {variant: BASE_IMAGE for variant in VARIANTS}
#: The setup.py extra each variant installs (the Dockerfile's EXTRA build argument): the same
#: runtime with TensorFlow's CPU-only wheel, or with its CUDA wheels from PyPI.
EXTRAS: dict[str, str] = {"cpu": "runtime-cpu", "gpu": "runtime-gpu"}
#: `name:tag@sha256:<64 hex digits>`: a tag for people, a digest for the build.
PINNED = re.compile(r"^(?P<name>[^@\s]+):(?P<tag>\w[\w.-]{0,127})@sha256:[0-9a-f]{64}$")


def image(registry: str = DEFAULT_REGISTRY, variant: str = "cpu") -> str:
    """`<registry>/conveyor:<version>[-gpu]`."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: {variant!r} is not one of {sorted(VARIANTS)}")
    return f"{registry.rstrip('/')}/{IMAGE_NAME}:{__version__}{VARIANTS[variant]}"


def image_map(registry: str = DEFAULT_REGISTRY) -> dict[str, str]:
    """Every variant's image URI."""
    return {variant: image(registry, variant) for variant in VARIANTS}


def retarget(spec: Mapping[str, Any], registry: str) -> dict[str, Any]:
    """A compiled component or pipeline spec with conveyor's images moved to `registry`: every
    `image` value, and the image references inside other strings (a custom job's `--payload`
    JSON names the image its worker pools run)."""
    moves = {image(DEFAULT_REGISTRY, v): image(registry, v) for v in VARIANTS}
    inside = re.compile("|".join(re.escape(ref) for ref in sorted(moves, key=len, reverse=True)))

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: (moves.get(v, v) if k == "image" and isinstance(v, str) else walk(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return inside.sub(lambda m: moves[m.group(0)], node)
        return node

    return walk(spec)


#: The repository `make image` (images/local.sh) tags the images it builds on this machine
#: with: `conveyor:<version>[-gpu]`, no registry (`conveyor run --local --docker` runs it).
LOCAL_REPOSITORY = IMAGE_NAME


def local_image(variant: str = "cpu") -> str:
    """`conveyor:<version>[-gpu]`: the image `make image` builds on this machine."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: {variant!r} is not one of {sorted(VARIANTS)}")
    return f"{LOCAL_REPOSITORY}:{__version__}{VARIANTS[variant]}"


def _any_registry() -> re.Pattern[str]:
    """conveyor's image at this version, in any registry (or none), any variant."""
    suffixes = "|".join(re.escape(s) for s in sorted(VARIANTS.values(), key=len, reverse=True) if s)
    return re.compile(rf"^(?:[^\s/]+(?:/[^\s/]+)*/)?{re.escape(IMAGE_NAME)}:"
                      rf"{re.escape(__version__)}(?:{suffixes})?$")


def replace_image(spec: Mapping[str, Any], new: str) -> dict[str, Any]:
    """A compiled pipeline spec whose tasks run `new` wherever they ran conveyor's image (this
    version, any registry, any variant): `conveyor run --local --docker` runs a spec compiled for
    a registry with the image built here. Other images (a user's own component) are kept."""
    ours = _any_registry()

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: (new if k == "image" and isinstance(v, str) and ours.match(v) else walk(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(spec)


def unpinned(bases: Mapping[str, str] = BASE_IMAGES) -> list[str]:
    """The base images not pinned as `name:tag@sha256:<digest>`."""
    return [ref for ref in bases.values() if not PINNED.match(ref)]


def main() -> int:
    """`python -m conveyor.images`: one `variant tag-suffix base extra` line per variant, for
    images/build.sh; exit status 1 (and nothing on stdout) when a base is not pinned."""
    missing = unpinned()
    if missing:
        print(f"base images not pinned by digest in conveyor.images.BASE_IMAGES: "
              f"{', '.join(missing)}; run images/pin.sh where the registry is reachable",
              file=sys.stderr)
        return 1
    for variant, suffix in VARIANTS.items():
        print(variant, suffix or "-", BASE_IMAGES[variant], EXTRAS[variant])
    return 0


if __name__ == "__main__":
    sys.exit(main())
