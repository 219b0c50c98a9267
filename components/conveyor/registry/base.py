"""A model base path in TensorFlow Serving's layout, `<base>/<version>/saved_model.pb`, on a
local folder or on Cloud Storage, with versions that are published all at once or not at all.

Versions are increasing integers and a published version is never overwritten. A publisher
killed at any point (SIGKILL, a preempted node) leaves no partial version that a reader sees, and
the next publish takes a fresh number (tests/push/test_crash_safety.py kills it at random).

The registry is split by concern: `versions` (numbers, markers, errors), `labels` (the labels
file), `local` (publishing on a local folder: staging, lock, rename) and `gcs` (publishing on
Cloud Storage: the claim/heartbeat/commit protocol); this module is the facade that readers
and publishers use.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from conveyor.errors import InputError, SourceNotFoundError
from conveyor.io.digest import digest
from conveyor.registry.gcs import GcsStore
from conveyor.registry.labels import Labelled
from conveyor.registry.local import LocalStore
from conveyor.registry.versions import (
    ASSETS_EXTRA,
    GRAPH,
    MARKERS,
    Publication,
    UntrustedVersion,
    canonical,
    not_a_version,
    trusted_manifest,
)

log = logging.getLogger(__name__)

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


class ModelBasePath(Labelled, LocalStore, GcsStore):
    """A model base path (local folder or gs://): its versions, labels, and publishing."""

    def __init__(self, uri: str):
        if not isinstance(uri, str) or not uri.strip():
            raise InputError("model_base_path: empty; expected a local folder or "
                             "gs://bucket/path")
        if any(ord(c) < 32 or ord(c) == 127 for c in uri):
            raise InputError(f"model_base_path: {uri!r} holds a control character")
        self.gcs = uri.startswith("gs://")
        if self.gcs:
            self.bucket_name, _, prefix = uri[5:].partition("/")
            if not self.bucket_name:
                raise InputError(f"model_base_path: {uri!r} names no bucket "
                                 "(expected gs://bucket/path)")
            if not _BUCKET.fullmatch(self.bucket_name) or ".." in self.bucket_name:
                raise InputError(f"model_base_path: {self.bucket_name!r} in {uri!r} is not a "
                                 "Cloud Storage bucket name (3-222 lowercase letters, digits, "
                                 "'-', '_' and '.')")
            self.prefix = prefix.rstrip("/")
            parts = self.prefix.split("/") if self.prefix else []
            if any(p in ("", ".", "..") for p in parts):
                raise InputError(f"model_base_path: {uri!r} has an empty, '.' or '..' folder "
                                 "name; expected gs://bucket/path/to/model")
            if len(self.prefix.encode()) > 900:
                raise InputError(f"model_base_path: {uri[:80]!r}... is too long for Cloud "
                                 "Storage object names")
            self.uri = f"gs://{self.bucket_name}" + (f"/{self.prefix}" if self.prefix else "")
            return
        if _SCHEME.match(uri):
            raise InputError(f"model_base_path: {uri!r}: only a local folder or a gs:// URI "
                             "(gs://bucket/path) is supported")
        path = os.path.normpath(uri)
        resolved = os.path.realpath(path)
        if resolved.strip("/") == "":
            raise InputError(f"model_base_path: {uri!r} is the filesystem root; versions would "
                             "be written into /")
        try:
            cwd = os.path.realpath(os.getcwd())
        except OSError:
            cwd = None
        if resolved == cwd:
            raise InputError(f"model_base_path: {uri!r} is the working directory; give the "
                             "model's own folder")
        self.uri = path
        self.prefix = ""
        self.bucket_name = ""

    # -- reading ---------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """Published (complete) versions, ascending."""
        if not self.gcs:
            base = Path(self.uri)
            if not base.is_dir():
                return []
            return sorted(v for p in base.iterdir()
                          if (v := canonical(p.name)) is not None and (p / GRAPH).exists())
        return self._numbers(f"{MARKERS}/committed/")

    def scan(self) -> tuple[list[int], dict[str, str]]:
        """(the published versions, ascending; {folder name: why it is not a version}) in one
        listing: the one place where a folder becomes a version or is refused, for readers
        that report what they skip (`conveyor serve`). Reported: every all-digit folder that
        is not a published version (`007`, `١`, a number past int64, a folder without its
        graph or, on gs://, without its commit marker); other names (`labels.json`, `5.tmp`)
        are not versions and not worth a word."""
        if self.gcs:
            versions = self.versions()
            published = {str(v) for v in versions}
            unusable = {name: not_a_version(name) or (
                "not published: no commit marker (a push still writing, one that died, or "
                "files copied by hand)") for name in self._folder_names()
                if name not in published}
            return versions, unusable
        base = Path(self.uri)
        found: list[int] = []
        unusable = {}
        for path in base.iterdir() if base.is_dir() else []:
            why, version = not_a_version(path.name), canonical(path.name)
            if why is None and version is not None:
                if not path.is_dir():
                    why = "not a folder"
                elif not (path / GRAPH).is_file():
                    why = "no saved_model.pb: not a SavedModel, or one still being copied"
                else:
                    found.append(version)
            if why is not None:
                unusable[path.name] = why
        return sorted(found), unusable

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_uri(self, version: int) -> str:
        return f"{self.uri}/{version}"

    def version_of(self, uri: str | None) -> int | None:
        """The version `uri` names under this base path (as `version_uri` wrote it), else None."""
        if not uri:
            return None
        head, _, tail = str(uri).rstrip("/").rpartition("/")
        version = canonical(tail)
        if version is None:
            return None
        if self.gcs:
            return version if head == self.uri else None
        if head.startswith("gs://") or not head:
            return None
        return version if os.path.abspath(head) == os.path.abspath(self.uri) else None

    def manifest(self, version: int) -> dict[str, str] | None:
        """SHA-256 of each file of a published version, by relative path; None when unknown
        (a gs:// version committed before manifests recorded hashes)."""
        if not self.gcs:
            return digest(Path(self.uri) / str(version))
        return self._read_marker(f"{MARKERS}/committed/{version}").get("sha256")

    def same_as_latest(self, model_dir: str | Path, hashes: dict | None = None) -> int | None:
        """The latest version if it holds exactly the files of `model_dir`, else None: a push
        retried after it published (its task killed before it reported) finds its own version."""
        latest = self.latest()
        if latest is None:
            return None
        return latest if self.manifest(latest) == (hashes or digest(model_dir)) else None

    def uncommitted(self) -> list[int]:
        """gs:// only: numbers claimed but never committed (a publish that died, or one running)."""
        if not self.gcs:
            return []
        return sorted(set(self._numbers(f"{MARKERS}/claims/")) - set(self.versions()))

    def fetch(self, version: int, cache: str | Path) -> Path:
        """A local folder holding `version` (the version itself, or a download of it into
        `cache`; a download that fails leaves nothing in `cache`).

        Everything read from the bucket is untrusted: the commit marker's file list must hold
        only plain relative paths (`versions.trusted_manifest`), each written inside the
        download folder, and every file must have the SHA-256 the marker records, checked
        before the folder takes the version's name: a version that fails raises
        `UntrustedVersion` (logged) and nothing of it stays in `cache`."""
        from conveyor.gcp import retry

        if not self.gcs:
            return Path(self.uri) / str(version)
        target = Path(cache) / str(version)
        if (target / GRAPH).exists():
            return target
        where = f"model_base_path: {self.uri} version {version} (commit marker)"
        marker = self._read_marker(f"{MARKERS}/committed/{version}")
        if not marker.get("files"):
            raise SourceNotFoundError(f"model_base_path: {self.uri} has no version {version}")
        try:
            files, hashes = trusted_manifest(marker, where)
            if GRAPH not in files:
                raise UntrustedVersion(f"{where}: lists no {GRAPH}; refusing the version")
        except UntrustedVersion as exc:
            log.error("%s", exc)
            raise
        partial = Path(cache) / f".{version}.{uuid.uuid4().hex[:8]}"
        try:
            inside = partial.resolve()
            for rel in files:
                dest = partial / rel
                if not dest.resolve().is_relative_to(inside):  # belt and braces
                    raise UntrustedVersion(f"{where}: file {rel!r} leaves the download folder")
                dest.parent.mkdir(parents=True, exist_ok=True)
                self._bucket().blob(self._key(f"{version}/{rel}")).download_to_filename(
                    str(dest), retry=retry.storage())
            _check_hashes(partial, hashes, where)
            partial.rename(target)
        except BaseException as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(exc, UntrustedVersion):
                log.error("%s", exc)
                raise
            if not (target / GRAPH).exists():  # else another reader of this cache got there
                raise
        return target

    def check_writable(self) -> None:
        """A cheap preflight (before training): raise if a publish here is bound to fail for a
        reason known now. gs://: the bucket exists (`SourceNotFoundError` naming it) and takes
        an object (a probe under `.conveyor/`, deleted at once). Local: the folder, or its
        nearest existing parent, is a writable folder. Writes nothing that stays."""
        if self.gcs:
            self._check_bucket(probe=True)
            return
        path = Path(os.path.abspath(self.uri))
        existing = path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise InputError(f"model_base_path: {existing} is a file, not a folder "
                             f"(in the way of {self.uri})")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InputError(f"model_base_path: {existing} is not writable "
                             f"(needed to publish under {self.uri})")

    # -- writing ---------------------------------------------------------------------------

    def publish(self, model_dir: str | Path) -> int:
        """Publish a SavedModel folder as the next version; returns its number."""
        return self.publish_model(model_dir).version

    def publish_if_changed(self, model_dir: str | Path, *,
                           baseline: int | None = None) -> tuple[int, bool]:
        """Publish `model_dir` unless the latest version already holds exactly its files (a
        retried push that had published before it was killed, or an identical push running at
        the same time): (version, whether it is new). `baseline`: see `publish_model`."""
        result = self.publish_model(model_dir, dedupe=True, baseline=baseline)
        return result.version, result.new

    def publish_model(self, model_dir: str | Path, *, dedupe: bool = False,
                      baseline: int | None = None) -> Publication:
        """Publish `model_dir` as the next version. `dedupe`: an identical model that is the
        latest version, or is being published at this moment, is returned instead
        (`new=False`). `baseline`: the version the model was evaluated against (0: none); if
        another version is published first, raise `StaleBaseline` (None: not checked)."""
        model_dir = Path(model_dir)
        if not (model_dir / GRAPH).exists():
            raise InputError(f"push: {model_dir} is not a SavedModel (no {GRAPH})")
        hashes = digest(model_dir)
        if self.gcs:
            return self._publish_gcs(model_dir, hashes, dedupe, baseline)
        return self._publish_local(model_dir, hashes, dedupe, baseline)


@dataclasses.dataclass(frozen=True)
class ServedVersion:
    """The version a base path serves (its champion, else its newest), not yet fetched: the
    one spelling of "the served version, fetched, then `assets.extra/<name>`"."""

    base: ModelBasePath
    version: int

    @property
    def uri(self) -> str:
        return self.base.version_uri(self.version)

    def folder(self, cache: str | Path) -> Path:
        """A local folder holding the version (downloaded into `cache` from gs://)."""
        return self.base.fetch(self.version, cache)

    def file(self, name: str, cache: str | Path) -> Path:
        """The local path of `assets.extra/<name>` in the version (it may not exist)."""
        return self.folder(cache) / ASSETS_EXTRA / name

    def file_uri(self, name: str) -> str:
        return f"{self.uri}/{ASSETS_EXTRA}/{name}"


def served_version(base: ModelBasePath | str) -> ServedVersion | None:
    """The version `base` serves by default (`ModelBasePath.served`), None when nothing is
    published there."""
    base = base if isinstance(base, ModelBasePath) else ModelBasePath(base)
    version = base.served()
    return ServedVersion(base, version) if version is not None else None


def _check_hashes(folder: Path, hashes: dict[str, str] | None, where: str) -> None:
    """Raise `UntrustedVersion` naming the files of `folder` whose SHA-256 is not the one
    recorded (None: a version committed before manifests recorded hashes, nothing to check)."""
    if hashes is None:
        log.warning("%s: records no SHA-256; its files are not checked", where)
        return
    found = digest(folder)
    wrong = sorted(rel for rel in hashes if found.get(rel) != hashes[rel])
    if wrong or set(found) != set(hashes):
        extra = sorted(set(found) - set(hashes))
        raise UntrustedVersion(f"{where}: SHA-256 differs from the recorded one for "
                               f"{wrong + extra}; refusing the version")
