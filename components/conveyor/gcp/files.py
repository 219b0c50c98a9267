"""Local access to a file named by a local path or a gs:// URI (user-supplied suites, modules)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from conveyor.errors import InputError, SourceNotFoundError


def local_copy(uri: str, parameter: str) -> Path:
    """A local path holding `uri`'s content: the path itself, or a download of a gs:// object."""
    if not uri.startswith("gs://"):
        path = Path(uri)
        if not path.exists():
            raise SourceNotFoundError(f"{parameter}: {uri} does not exist")
        return path
    from google.api_core.exceptions import NotFound

    from conveyor.gcp import retry
    from conveyor.gcp.clients import storage_client

    bucket, _, name = uri[5:].partition("/")
    if not bucket or not name:
        raise InputError(f"{parameter}: {uri!r} names no object (expected gs://bucket/path)")
    target = Path(tempfile.mkdtemp(prefix="conveyor-")) / Path(name).name
    try:
        with retry.giving_up(f"{parameter}: download {uri}"):
            storage_client().bucket(bucket).blob(name).download_to_filename(
                str(target), retry=retry.storage())
    except NotFound:
        raise SourceNotFoundError(f"{parameter}: {uri} not found") from None
    return target
