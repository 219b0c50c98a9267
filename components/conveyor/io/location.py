"""A storage location: a local path or a gs:// object name, read and written the same way.

conveyor keeps files in a local folder or under a Cloud Storage prefix (model base paths,
prediction logs, a TFJob's staging folder). `Location.parse(uri)` gives one object for both, so
the local/gs:// pair of every file operation is written once, here:

- `read_bytes`/`read_text`: the whole file; a missing one raises FileNotFoundError naming it;
- `write_bytes`/`write_text`: a whole write that readers see entirely or not at all. Locally a
  temporary file in the same folder, fsynced, then `os.replace`; on Cloud Storage one upload
  (uploads are atomic), optionally with a generation precondition (0: create-only);
- `list(prefix)`: the names of the files under this location (relative, `/`-separated, sorted);
- `exists`, `download(path)`, `delete`, and `child(name)` (or `/`) to join a name.

Cloud Storage goes through `conveyor.gcp.storage_client()` (which honours the emulator's
`STORAGE_EMULATOR_HOST`) and retries transient errors (`conveyor.gcp.retry`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from conveyor.errors import ConveyorError, InputError, SourceNotFoundError


class PreconditionError(ConveyorError):
    """A conditional write met another generation (create-only: the file exists)."""


class Location:
    """A file or folder, local or gs://; see the module docstring."""

    uri: str

    @staticmethod
    def parse(uri: str | Path) -> Location:
        """A `GcsLocation` for `gs://bucket/name`, else a `LocalLocation` (a local path)."""
        text = str(uri)
        if text.startswith("gs://"):
            bucket, _, name = text[len("gs://"):].partition("/")
            if not bucket:
                raise InputError(f"{text!r} names no bucket (expected gs://bucket/path)")
            return GcsLocation(bucket, name.strip("/"))
        if not text:
            raise InputError("an empty path names no location")
        return LocalLocation(Path(text))

    @property
    def is_local(self) -> bool:
        return isinstance(self, LocalLocation)

    @property
    def name(self) -> str:
        """The last component of the location's name."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def child(self, name: str) -> Location:
        raise NotImplementedError

    def __truediv__(self, name: str) -> Location:
        return self.child(name)

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and self.uri == other.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def read_bytes(self) -> bytes:
        raise NotImplementedError

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes, *, content_type: str | None = None,
                    if_generation_match: int | None = None) -> None:
        raise NotImplementedError

    def write_text(self, text: str, *, content_type: str | None = "text/plain",
                   if_generation_match: int | None = None) -> None:
        self.write_bytes(text.encode("utf-8"), content_type=content_type,
                         if_generation_match=if_generation_match)

    def list(self, prefix: str = "") -> list[str]:
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def download(self, path: str | Path) -> Path:
        raise NotImplementedError

    def delete(self, missing_ok: bool = True) -> None:
        raise NotImplementedError


class LocalLocation(Location):
    """A local file or folder."""

    def __init__(self, path: Path):
        self.path = Path(os.path.normpath(path))
        self.uri = str(self.path)

    def child(self, name: str) -> LocalLocation:
        return LocalLocation(self.path / name)

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def write_bytes(self, data: bytes, *, content_type: str | None = None,
                    if_generation_match: int | None = None) -> None:
        """Readers see the old file or the new one, never part of it. `if_generation_match=0`
        (create-only) raises PreconditionError if the file exists; other generations are a
        Cloud Storage notion and refused."""
        if if_generation_match not in (None, 0):
            raise ValueError("a local file has no generations (only 0, create-only, is allowed)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(temp, "xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if if_generation_match == 0:
                try:
                    os.link(temp, self.path)  # fails if the target exists: create-only
                except FileExistsError:
                    raise PreconditionError(f"{self.uri} exists (create-only write)") from None
            else:
                os.replace(temp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def list(self, prefix: str = "") -> list[str]:
        if not self.path.is_dir():
            return []
        names = (p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())
        return sorted(n for n in names if n.startswith(prefix))

    def exists(self) -> bool:
        return self.path.exists()

    def download(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path, target)
        return target

    def delete(self, missing_ok: bool = True) -> None:
        """Remove the file, or the folder and everything in it."""
        if self.path.is_dir() and not self.path.is_symlink():
            shutil.rmtree(self.path)
        else:
            self.path.unlink(missing_ok=missing_ok)


class GcsLocation(Location):
    """An object (or a prefix, for `list` and `delete`) in a Cloud Storage bucket."""

    def __init__(self, bucket: str, name: str):
        self.bucket_name, self.key = bucket, name
        self.uri = f"gs://{bucket}" + (f"/{name}" if name else "")

    def child(self, name: str) -> GcsLocation:
        name = name.strip("/")
        return GcsLocation(self.bucket_name, f"{self.key}/{name}" if self.key else name)

    def _bucket(self):
        from conveyor import gcp

        return gcp.storage_client().bucket(self.bucket_name)

    def _folder(self) -> str:
        return f"{self.key}/" if self.key else ""

    @contextlib.contextmanager
    def _errors(self, what: str):
        """Transient errors retried; a missing object -> FileNotFoundError, a missing bucket
        -> SourceNotFoundError, a failed precondition -> PreconditionError."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        from conveyor.gcp import retry

        try:
            with retry.giving_up(f"{what} {self.uri}"):
                yield
        except PreconditionFailed:
            raise PreconditionError(f"{self.uri}: another generation exists") from None
        except NotFound:
            if not self._bucket_exists():
                raise SourceNotFoundError(f"bucket gs://{self.bucket_name} not found") from None
            raise FileNotFoundError(f"{self.uri} not found") from None

    def _bucket_exists(self) -> bool:
        from conveyor import gcp
        from conveyor.gcp import retry

        return gcp.storage_client().lookup_bucket(self.bucket_name,
                                                  retry=retry.storage()) is not None

    def read_bytes(self) -> bytes:
        from conveyor.gcp import retry

        with self._errors("read"):
            return self._bucket().blob(self.key).download_as_bytes(retry=retry.storage())

    def generation(self) -> int | None:
        """The object's generation (for a conditional write), None if it does not exist."""
        from conveyor.gcp import retry

        with self._errors("stat"):
            blob = self._bucket().get_blob(self.key, retry=retry.storage())
        return blob.generation if blob is not None else None

    def write_bytes(self, data: bytes, *, content_type: str | None = None,
                    if_generation_match: int | None = None) -> None:
        """One upload: readers see the old object or the new one. With `if_generation_match`
        (0: create-only) it is retried safely; PreconditionError if the generation differs."""
        from conveyor.gcp import retry

        kwargs = {"if_generation_match": if_generation_match} \
            if if_generation_match is not None else {}
        with self._errors("write"):
            self._bucket().blob(self.key).upload_from_string(
                data, content_type=content_type or "application/octet-stream",
                retry=retry.storage(), **kwargs)  # a whole upload repeated writes the same

    def list(self, prefix: str = "") -> list[str]:
        from conveyor import gcp
        from conveyor.gcp import retry

        folder = self._folder()
        with self._errors("list"):
            names = [b.name[len(folder):] for b in gcp.storage_client().list_blobs(
                self.bucket_name, prefix=folder + prefix, retry=retry.storage())]
        return sorted(n for n in names if n and not n.endswith("/"))  # no folder placeholders

    def exists(self) -> bool:
        from conveyor.gcp import retry

        with self._errors("stat"):
            return self._bucket().blob(self.key).exists(retry=retry.storage())

    def download(self, path: str | Path) -> Path:
        from conveyor.gcp import retry

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._errors("download"):
                self._bucket().blob(self.key).download_to_filename(str(target),
                                                                  retry=retry.storage())
        except BaseException:
            target.unlink(missing_ok=True)  # the client leaves an empty file behind
            raise
        return target

    def delete(self, missing_ok: bool = True) -> None:
        """Remove the object, or else every object under it as a prefix (`<name>/...`)."""
        from google.api_core.exceptions import NotFound

        from conveyor.gcp import retry

        bucket = self._bucket()
        names = [self.key] if self.key and self.exists() else []
        names += [self._folder() + n for n in self.list()]
        if not names and not missing_ok:
            raise FileNotFoundError(f"{self.uri} not found")
        for name in names:
            with contextlib.suppress(NotFound), \
                    retry.giving_up(f"delete gs://{self.bucket_name}/{name}"):
                bucket.blob(name).delete(retry=retry.storage())
