"""A model base path in TensorFlow Serving's layout, `<base>/<version>/saved_model.pb`, on a
local folder or on Cloud Storage, with versions that are published all at once or not at all.

Versions are increasing integers and a published version is never overwritten. A publisher
killed at any point (SIGKILL, a preempted node) leaves no partial version that a reader sees, and
the next publish takes a fresh number (tests/local/test_crash_safety.py kills it at random).

- Local folder: the model is copied into `<base>/.staging-<id>/`, then renamed to `<base>/<v>`.
  rename(2) is atomic and refuses a non-empty target, so a reader sees no version or all of it,
  and two pushers cannot take the same number (the loser tries `v + 1`). A killed publish leaves
  its `.staging-<id>/` folder behind: not a number, so no reader (TensorFlow Serving included)
  takes it for a version; it is not removed automatically, since another publisher may be
  copying into its own one at that moment.
- Cloud Storage has no atomic rename, so a version is claimed, written, then committed:
  1. claim: create `<base>/.conveyor/claims/<v>` with `if_generation_match=0` (create-only, which
     Cloud Storage enforces for single-request uploads); a taken number -> try `v + 1`;
  2. write every file under `<base>/<v>/`, `saved_model.pb` last;
  3. commit: create `<base>/.conveyor/committed/<v>` (create-only) holding the file manifest
     (names and SHA-256 of every file).
  conveyor's readers (`versions`, `fetch`, `conveyor serve`, evaluate's baseline) see only
  committed versions. A killed publish leaves a claim without a commit and maybe some files
  under `<v>/`; the next publish numbers past every claim, so the number is never reused.
  TensorFlow Serving lists `<base>/<v>/` itself, without the markers: a `<v>/` without
  `saved_model.pb` fails to load ("Could not find SavedModel .pb"), is retried a few times, and
  the version already served stays served; `saved_model.pb` written last means a `<v>/` that has
  it has every other file too. Abandoned claims are left in place (a cleanup could not tell an
  abandoned claim from a slow upload, nor know whether a complete uncommitted `<v>/` is being
  served); `uncommitted()` lists them for an operator.

Each Cloud Storage call retries transient errors (`conveyor.gcp.retry`): reads, listings, uploads
into the version folder this writer claimed, and the create-only markers. A marker whose creation
succeeded but whose response was lost meets a 412 on the retry; each marker holds this writer's
random token, so the 412 is resolved by reading the marker back: our token means it is ours.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from conveyor.errors import ConveyorError, InputError

MARKERS = ".conveyor"
GRAPH = "saved_model.pb"


class ConflictError(ConveyorError):
    """Another writer committed a version this writer had claimed (markers tampered with)."""


def digest(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by relative path (sorted)."""
    folder = Path(folder)
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[str(path.relative_to(folder))] = h.hexdigest()
    return out


class ModelBasePath:
    def __init__(self, uri: str):
        if not uri:
            raise InputError("model_base_path: empty")
        self.uri = uri.rstrip("/")
        self.gcs = self.uri.startswith("gs://")
        if self.gcs:
            self.bucket_name, _, self.prefix = self.uri[5:].partition("/")
            if not self.bucket_name:
                raise InputError(f"model_base_path: {uri!r} names no bucket")

    # -- reading ---------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """Published (complete) versions, ascending."""
        if not self.gcs:
            base = Path(self.uri)
            if not base.is_dir():
                return []
            return sorted(int(p.name) for p in base.iterdir()
                          if p.name.isdigit() and (p / GRAPH).exists())
        return self._numbers(f"{MARKERS}/committed/")

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_uri(self, version: int) -> str:
        return f"{self.uri}/{version}"

    def manifest(self, version: int) -> dict[str, str] | None:
        """SHA-256 of each file of a published version, by relative path; None when unknown
        (a gs:// version committed before manifests recorded hashes)."""
        if not self.gcs:
            return digest(Path(self.uri) / str(version))
        return self._read_marker(f"{MARKERS}/committed/{version}").get("sha256")

    def same_as_latest(self, model_dir: str | Path) -> int | None:
        """The latest version if it holds exactly the files of `model_dir`, else None: a push
        retried after it published (its task killed before it reported) finds its own version."""
        latest = self.latest()
        if latest is None:
            return None
        return latest if self.manifest(latest) == digest(model_dir) else None

    def uncommitted(self) -> list[int]:
        """gs:// only: numbers claimed but never committed (a publish that died, or one running)."""
        if not self.gcs:
            return []
        return sorted(set(self._numbers(f"{MARKERS}/claims/")) - set(self.versions()))

    def fetch(self, version: int, cache: str | Path) -> Path:
        """A local folder holding `version` (the version itself, or a download of it)."""
        from conveyor.gcp import retry

        if not self.gcs:
            return Path(self.uri) / str(version)
        target = Path(cache) / str(version)
        if (target / GRAPH).exists():
            return target
        manifest = self._read_marker(f"{MARKERS}/committed/{version}")
        partial = Path(cache) / f".{version}.{uuid.uuid4().hex[:8]}"
        for rel in manifest["files"]:
            dest = partial / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._bucket().blob(self._key(f"{version}/{rel}")).download_to_filename(
                str(dest), retry=retry.storage())
        try:
            partial.rename(target)
        except OSError:  # another reader of this cache got there first
            shutil.rmtree(partial, ignore_errors=True)
            if not (target / GRAPH).exists():
                raise
        return target

    # -- writing ---------------------------------------------------------------------------

    def publish(self, model_dir: str | Path) -> int:
        """Publish a SavedModel folder as the next version; returns its number."""
        model_dir = Path(model_dir)
        if not (model_dir / GRAPH).exists():
            raise InputError(f"push: {model_dir} is not a SavedModel (no {GRAPH})")
        return self._publish_gcs(model_dir) if self.gcs else self._publish_local(model_dir)

    def publish_if_changed(self, model_dir: str | Path) -> tuple[int, bool]:
        """Publish `model_dir` unless the latest version already holds exactly its files (a
        retried push that had published before it was killed): (version, whether it is new)."""
        same = self.same_as_latest(model_dir)
        return (same, False) if same is not None else (self.publish(model_dir), True)

    def _publish_local(self, model_dir: Path) -> int:
        base = Path(self.uri)
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f".staging-{uuid.uuid4().hex}"
        shutil.copytree(model_dir, staging)
        try:
            version = self._next_local(base)
            while True:
                try:
                    os.rename(staging, base / str(version))  # atomic; refuses a non-empty target
                    return version
                except OSError:
                    if (base / str(version)).exists() and any((base / str(version)).iterdir()):
                        version += 1
                        continue
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _next_local(base: Path) -> int:
        taken = [int(p.name) for p in base.iterdir() if p.name.isdigit()]
        return max(taken, default=0) + 1

    def _publish_gcs(self, model_dir: Path) -> int:
        from conveyor.gcp import retry

        token = uuid.uuid4().hex
        hashes = digest(model_dir)
        files = sorted(hashes, key=lambda rel: (rel == GRAPH, rel))  # the graph last
        version = self._claim(token)
        bucket = self._bucket()
        for rel in files:  # this writer alone writes under <v>/, so a retried upload is safe
            bucket.blob(self._key(f"{version}/{rel}")).upload_from_filename(
                str(model_dir / rel), retry=retry.storage())
        committed = self._create_marker(f"{MARKERS}/committed/{version}", {
            "version": version, "token": token, "files": files, "sha256": hashes})
        if not committed:
            raise ConflictError(f"model_base_path: {self.uri} version {version} was committed by "
                                "another writer although this one claimed it")
        return version

    def _claim(self, token: str) -> int:
        """Claim the next free version number for this writer (`token`); returns it."""
        version = max([*self._numbers(f"{MARKERS}/claims/"), *self.versions()], default=0) + 1
        while not self._create_marker(f"{MARKERS}/claims/{version}", {
                "token": token, "claimed_at": time.time(), "host": socket.gethostname(),
                "pid": os.getpid()}):
            version += 1
        return version

    # -- Cloud Storage helpers -------------------------------------------------------------

    def _create_marker(self, rel: str, payload: dict) -> bool:
        """Create the marker `rel` holding `payload` (with its "token") unless it exists.
        True if the marker is this writer's: created now, or by an attempt whose response was
        lost (a retry then meets 412 and finds our token); False if another writer's."""
        from google.api_core.exceptions import PreconditionFailed

        from conveyor.gcp import retry

        blob = self._bucket().blob(self._key(rel))
        try:
            blob.upload_from_string(json.dumps(payload).encode(), content_type="application/json",
                                    if_generation_match=0, retry=retry.storage())
            return True
        except PreconditionFailed:
            return self._read_marker(rel).get("token") == payload["token"]

    def _read_marker(self, rel: str) -> dict:
        """A marker's JSON content; {} for an empty or unreadable one (older claims were empty)."""
        from conveyor.gcp import retry

        data = self._bucket().blob(self._key(rel)).download_as_bytes(retry=retry.storage())
        try:
            content = json.loads(data) if data else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return content if isinstance(content, dict) else {}

    def _bucket(self):
        from conveyor import gcp

        return gcp.storage_client().bucket(self.bucket_name)

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _numbers(self, rel_prefix: str) -> list[int]:
        """The integer names of the markers under `rel_prefix`, ascending."""
        names = (n.rsplit("/", 1)[1] for n in self._list(rel_prefix))
        return sorted(int(n) for n in names if n.isdigit())

    def _list(self, rel_prefix: str) -> list[str]:
        from google.api_core.exceptions import NotFound

        from conveyor import gcp
        from conveyor.gcp import retry

        try:
            return [b.name for b in gcp.storage_client().list_blobs(
                self.bucket_name, prefix=self._key(rel_prefix), retry=retry.storage())]
        except NotFound:
            raise InputError(f"model_base_path: bucket gs://{self.bucket_name} not found") from None
