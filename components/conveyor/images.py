"""conveyor's container images, named from the one version string.

The registry is a parameter (of the image build and of compilation), never read from the
environment: `image()` with no argument gives the default registry that checked-in specs use,
and `conveyor compile --registry R` / `make images REGISTRY=R` retarget both consistently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.version import __version__

DEFAULT_REGISTRY = "ghcr.io/conveyor-ml"
IMAGE_NAME = "conveyor"
DOCKERFILE = "images/conveyor/Dockerfile"
#: Image variants and the tag suffix of each (images/build.sh builds both from DOCKERFILE).
VARIANTS: dict[str, str] = {"cpu": "", "gpu": "-gpu"}
#: The base image of each variant (the Dockerfile's BASE_IMAGE build argument).
BASE_IMAGES: dict[str, str] = {"cpu": "python:3.11-slim-bookworm",
                               "gpu": "tensorflow/tensorflow:2.21.0-gpu"}


def image(registry: str = DEFAULT_REGISTRY, variant: str = "cpu") -> str:
    """`<registry>/conveyor:<version>[-gpu]`."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: {variant!r} is not one of {sorted(VARIANTS)}")
    return f"{registry.rstrip('/')}/{IMAGE_NAME}:{__version__}{VARIANTS[variant]}"


def image_map(registry: str = DEFAULT_REGISTRY) -> dict[str, str]:
    """Every variant's image URI."""
    return {variant: image(registry, variant) for variant in VARIANTS}


def retarget(spec: Mapping[str, Any], registry: str) -> dict[str, Any]:
    """A compiled component or pipeline spec with conveyor's images moved to `registry`."""
    moves = {image(DEFAULT_REGISTRY, v): image(registry, v) for v in VARIANTS}

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: (moves.get(v, v) if k == "image" and isinstance(v, str) else walk(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(spec)
