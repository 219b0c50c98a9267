"""Shared on-disk formats and storage. `conveyor.io.dataset` is the Dataset artifact contract
(written by `conveyor.io.dataset_writer`); `conveyor.io.parquet` other Parquet files;
`conveyor.io.split` the hash split rule; `conveyor.io.location` a local-or-gs:// file;
`conveyor.io.digest` file hashes of a folder; `conveyor.io.documents` a user's YAML/JSON file
(a suite, a feature spec) and `conveyor.io.csv_file` a CSV file, both read with errors that name
what is wrong and never quote more of the file than a short excerpt.

The names below are imported on first use, not with the package: `conveyor.io.location` is
used on paths (the CLI, the local stack, the registry) that must not pay pandas' and pyarrow's
import (~1.3 s) for a file write.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "Column": "dataset", "Dataset": "dataset", "DatasetInfo": "dataset", "SplitInfo": "dataset",
    "DatasetWriter": "dataset_writer",
    "digest": "digest", "manifest_hash": "digest",
    "Location": "location", "PreconditionError": "location",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'conveyor.io' has no attribute {name!r}")
    return getattr(importlib.import_module(f"conveyor.io.{_HOME[name]}"), name)
