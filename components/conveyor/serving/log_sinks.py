"""Where the prediction log's files go: a local folder or a gs:// prefix (over
`conveyor.io.location`).

Files are written whole or not at all: locally to a temporary file in this process's own
scratch folder, `PREFIX/.conveyor-tmp/writer-<pid>-<hex>/`, fsynced and renamed into place
(readers such as pyarrow's datasets skip dot folders); on Cloud Storage as one create-only
upload (an object is visible only once complete). A process killed mid-write leaves its
temporary file in its scratch folder; the next process to open the same local prefix removes
it (`conveyor.serving.leftovers`: only folders whose owner is dead, with a log line).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path

from conveyor.errors import InputError, SourceNotFoundError, one_line
from conveyor.io.location import Location, PreconditionError
from conveyor.serving.leftovers import Claim, claim

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
SCRATCH = ".conveyor-tmp"  # under a local prefix: the writers' scratch folders


# -- where files go ------------------------------------------------------------------------------

class Sink:
    """A place files are written to whole: a local folder or a gs:// prefix."""

    uri: str

    def write(self, relative: str, data: bytes) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """Raise an InputError now if files cannot be written (fail fast)."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of what the sink holds between writes (nothing, unless local)."""


class LocalSink(Sink):
    def __init__(self, folder: str):
        self.uri = os.path.normpath(folder)
        self.root = Path(self.uri)
        self._scratch: Claim | None = None

    def _scratch_folder(self) -> Path:
        """This process's scratch folder, claimed (and dead writers' swept) at first use, and
        claimed again if it went away (the prefix was moved or removed)."""
        if self._scratch is not None and not self._scratch.path.is_dir():
            self._scratch.abandon()
            self._scratch = None
        if self._scratch is None:
            self._scratch = claim(self.root / SCRATCH, "writer-",
                                  "prediction log scratch folder")
        return self._scratch.path

    def write(self, relative: str, data: bytes) -> None:
        target = self.root / relative
        temp = self._scratch_folder() / f"{uuid.uuid4().hex}.tmp"
        try:
            with open(temp, "xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)  # readers see the whole file or none
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def check(self) -> None:
        try:
            probe = self._scratch_folder() / "probe"
            probe.write_bytes(b"")
            probe.unlink()
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(f"no permission to write into {self.uri}")
        except OSError as exc:
            raise InputError(f"--log-predictions: {self.uri} is not a writable folder: "
                             f"{exc.strerror or exc}") from None

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.release()
            self._scratch = None
            with contextlib.suppress(OSError):  # left if another writer still uses it
                (self.root / SCRATCH).rmdir()


class GcsSink(Sink):
    def __init__(self, uri: str):
        bucket, _, prefix = uri[5:].partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise InputError(f"--log-predictions: {bucket!r} in {uri!r} is not a Cloud Storage "
                             "bucket name (expected gs://bucket/path)")
        prefix = prefix.strip("/")
        if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
            raise InputError(f"--log-predictions: {uri!r} has an empty, '.' or '..' folder name")
        self.bucket_name, self.prefix = bucket, prefix
        self.uri = f"gs://{bucket}" + (f"/{prefix}" if prefix else "")
        self.location = Location.parse(self.uri)

    def write(self, relative: str, data: bytes) -> None:
        try:  # create-only, so a retry after a lost response cannot write the file twice
            self.location.child(relative).write_bytes(
                data, content_type="application/vnd.apache.parquet", if_generation_match=0)
        except PreconditionError:
            pass  # the unique name exists: an earlier attempt of this very upload succeeded

    def check(self) -> None:
        from google.api_core.exceptions import Forbidden, GoogleAPIError, NotFound

        from conveyor import gcp
        from conveyor.gcp import retry

        try:
            with retry.giving_up(f"--log-predictions: check {self.uri}"):
                gcp.storage_client().get_bucket(self.bucket_name, retry=retry.storage())
                probe = self.location.child(f".conveyor-probe-{uuid.uuid4().hex}")
                probe.write_bytes(b"", if_generation_match=0)
                probe.delete()
        except NotFound:
            raise SourceNotFoundError(f"--log-predictions: bucket gs://{self.bucket_name} "
                                      "not found") from None
        except (Forbidden, GoogleAPIError) as exc:
            raise InputError(f"--log-predictions: {self.uri} is not writable: "
                             f"{one_line(exc)}") from None


def sink_for(prefix: str) -> Sink:
    if not isinstance(prefix, str) or not prefix.strip():
        raise InputError("--log-predictions: empty; expected a local folder or gs://bucket/path")
    if any(ord(c) < 32 or ord(c) == 127 for c in prefix):
        raise InputError(f"--log-predictions: {prefix!r} holds a control character")
    if prefix.startswith("gs://"):
        return GcsSink(prefix)
    if _SCHEME.match(prefix):
        raise InputError(f"--log-predictions: {prefix!r}: only a local folder or gs://bucket/path")
    return LocalSink(prefix)

