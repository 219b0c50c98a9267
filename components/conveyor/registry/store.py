"""What the three halves of `ModelBasePath` (labels, local folder, Cloud Storage) share: the
parsed base path, and the methods each half calls on the others. `ModelBasePath` sets the
attributes and defines the facade's methods; this class only declares them, so each half
type-checks on its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any


class Store:
    uri: str  # the base path as given, a local folder or gs://bucket[/prefix]
    gcs: bool  # a gs:// base path
    bucket_name: str  # gs:// only, else ""
    prefix: str  # gs:// only: the object prefix of the base path, without a trailing "/"

    if TYPE_CHECKING:  # defined by ModelBasePath (registry.base) and the other halves
        def versions(self) -> list[int]: ...
        def latest(self) -> int | None: ...
        def version_uri(self, version: int) -> str: ...
        def manifest(self, version: int) -> dict[str, str] | None: ...
        @staticmethod
        def _locked(base: Path) -> AbstractContextManager[Any]: ...
        @staticmethod
        def _write_local_labels(base: Path, labels: dict[str, int]) -> None: ...
        def _bucket(self) -> Any: ...
        def _key(self, rel: str) -> str: ...
        def _bucket_errors(self) -> AbstractContextManager[Iterator[None]]: ...
