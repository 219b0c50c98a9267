"""The model base path as a registry: versions, labels, the served version, fetch, publish.

`ModelBasePath(uri)` is the facade (`conveyor.registry.base`); `served_version` is the version
it serves, whose `assets.extra/` files the steps read. See `base`, `versions`, `labels`,
`local` and `gcs`.
"""

from conveyor.registry.base import ModelBasePath, ServedVersion, served_version
from conveyor.registry.labels import LABEL_NAME, LABELS, LabelsError, check_labels
from conveyor.registry.versions import (
                                        ASSETS_EXTRA,
                                        GRAPH,
                                        LOCK,
                                        MARKERS,
                                        ConflictError,
                                        Publication,
                                        PublishError,
                                        StaleBaseline,
                                        UntrustedVersion,
                                        canonical,
                                        number,
)

__all__ = ["ASSETS_EXTRA", "GRAPH", "LABELS", "LABEL_NAME", "LOCK", "MARKERS", "ConflictError",
           "LabelsError", "ModelBasePath", "Publication", "PublishError", "ServedVersion",
           "StaleBaseline", "UntrustedVersion", "canonical", "check_labels", "number",
           "served_version"]
