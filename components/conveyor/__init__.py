"""conveyor: reusable Kubeflow Pipelines v2 components for TensorFlow models on Google Cloud.

The components are importable from here (`from conveyor import bigquery_ingest`); they are loaded
on first use, so `import conveyor` stays cheap inside a running component.
"""

from __future__ import annotations

import importlib
from typing import Any

from conveyor.version import __version__

#: Public component name -> module that defines it.
_COMPONENTS = {
    "bigquery_ingest": "conveyor.ingest.component",
    "gcs_ingest": "conveyor.ingest.component",
}

__all__ = ["__version__", *_COMPONENTS]


def __getattr__(name: str) -> Any:
    module = _COMPONENTS.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
