"""conveyor's floors: which package may import which (checked by tests/architecture).

A module may import its own package and any package on a lower floor, never one on its own floor
or above, counting imports inside functions too. So every import points down and no two packages
can form a cycle. Steps sit in pipeline order: a step may use an earlier step's code, never a
later one's. A new package must be given a floor here before anything imports it.
"""

from __future__ import annotations

FLOORS: tuple[tuple[str, ...], ...] = (
    # the foundation: what everything may use
    ("version", "errors", "layers"),
    ("images", "failfast", "gcp", "params"),  # image map; fail-fast marker; every Google client;
                                         # the shared pipeline parameters, each defined once
    ("io",),                             # local-or-gs:// locations, the Dataset contract
    # shared concepts, below every step
    ("stats", "reports"),                # column statistics; HTML pages and charts
    ("model",),                          # the exported model: file layout, inputs, records,
                                         # infra check
    ("registry",),                       # the model base path: versions, labels, served, fetch,
                                         # publish
    ("tracking",),                       # MLflow run tracking and model registry mirror
    # the steps, in pipeline order
    ("ingest",),
    ("preflight",),                      # checks ingest's inputs with ingest's own code
    ("validate",),
    ("transform",),
    ("train",),
    ("evaluate",),
    ("push",),
    ("promote",),
    ("predict",),
    ("serving",),
    ("monitor",),
    # composition and entry points
    ("pipelines",),
    ("components",),
    ("compile",),
    ("submit",),
    ("local",),
    ("demo",),
    ("cli",),
    ("__main__",),
)

ROOT = "__init__"  # conveyor/__init__.py: the public API, may import anything below it


def floor_of(package: str) -> int:
    """The floor of a package (a folder or a top-level module under conveyor/)."""
    for number, packages in enumerate(FLOORS):
        if package in packages:
            return number
    raise KeyError(package)
