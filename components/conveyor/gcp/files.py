"""Local access to a file named by a local path or a gs:// URI (user-supplied suites, modules).

`local_file` is a context manager: a gs:// object is downloaded into a temporary folder that is
removed when the block ends, so nothing stays in TMPDIR. `local_copy` returns a path that must
outlive the call; its downloads are removed when the process exits (a task's process is the task).
`uri_of(path)` is the gs:// URI a download was made from, so messages name the user's URI, not
a temporary path.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from conveyor.errors import InputError, SourceNotFoundError

_downloads: list[Path] = []  # local_copy's temporary folders, removed at exit
_origins: dict[Path, str] = {}  # a download -> the gs:// URI it was made from


@contextlib.contextmanager
def local_file(uri: str, parameter: str) -> Iterator[Path]:
    """A local path holding `uri`'s content for the duration of the block: the path itself, or
    a download of a gs:// object that is removed afterwards."""
    if not uri.startswith("gs://"):
        yield _existing(uri, parameter)
        return
    folder = Path(tempfile.mkdtemp(prefix="conveyor-"))
    target = None
    try:
        target = _download(uri, parameter, folder)
        yield target
    finally:
        if target is not None:
            _origins.pop(target, None)
        shutil.rmtree(folder, ignore_errors=True)


def local_copy(uri: str, parameter: str) -> Path:
    """A local path holding `uri`'s content: the path itself, or a download of a gs:// object
    (removed when the process exits; prefer `local_file`, which removes it sooner)."""
    if not uri.startswith("gs://"):
        return _existing(uri, parameter)
    folder = Path(tempfile.mkdtemp(prefix="conveyor-"))
    try:
        target = _download(uri, parameter, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not _downloads:
        atexit.register(_remove_downloads)
    _downloads.append(folder)
    return target


def uri_of(path: str | Path) -> str:
    """The gs:// URI `path` was downloaded from by `local_file` or `local_copy`, else the path
    itself: what a message about the file should name."""
    return _origins.get(Path(path), str(path))


def _remove_downloads() -> None:
    while _downloads:
        shutil.rmtree(_downloads.pop(), ignore_errors=True)


def _existing(uri: str, parameter: str) -> Path:
    path = Path(uri)
    if not path.exists():
        raise SourceNotFoundError(f"{parameter}: {uri} does not exist")
    return path


def _download(uri: str, parameter: str, folder: Path) -> Path:
    from google.api_core.exceptions import NotFound

    from conveyor.gcp import retry
    from conveyor.gcp.clients import storage_client

    bucket, _, name = uri[5:].partition("/")
    if not bucket or not name or name.endswith("/"):
        raise InputError(f"{parameter}: {uri!r} names no object (expected gs://bucket/path)")
    target = folder / Path(name).name
    try:
        with retry.giving_up(f"{parameter}: download {uri}"):
            storage_client().bucket(bucket).blob(name).download_to_filename(
                str(target), retry=retry.storage())
    except NotFound:
        raise SourceNotFoundError(f"{parameter}: {uri} not found (no such object or bucket)") \
            from None
    _origins[target] = uri
    return target
