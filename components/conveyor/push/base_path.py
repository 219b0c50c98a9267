"""A model base path in TensorFlow Serving's layout, `<base>/<version>/saved_model.pb`, on a
local folder or on Cloud Storage, with versions that are published all at once or not at all.

Versions are increasing integers and a published version is never overwritten.

- Local folder: the model is copied into `<base>/.staging-<id>/`, then renamed to `<base>/<v>`.
  rename(2) is atomic and refuses a non-empty target, so a reader sees no version or all of it,
  and two pushers cannot take the same number (the loser tries `v + 1`).
- Cloud Storage has no atomic rename, so a version is claimed, written, then committed:
  1. claim: create `<base>/.conveyor/claims/<v>` with `if_generation_match=0` (create-only, which
     Cloud Storage enforces for single-request uploads); a taken number -> try `v + 1`;
  2. write every file under `<base>/<v>/`, `saved_model.pb` last;
  3. commit: create `<base>/.conveyor/committed/<v>` (create-only) holding the file manifest.
  conveyor's readers (`versions`, `conveyor serve`) see only committed versions. TensorFlow
  Serving itself lists `<base>/<v>/` and may try a version before its `saved_model.pb` exists;
  it then retries the load, and `saved_model.pb` written last means no load sees a half version.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from conveyor.errors import InputError

MARKERS = ".conveyor"


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
                          if p.name.isdigit() and (p / "saved_model.pb").exists())
        names = self._list(f"{MARKERS}/committed/")
        return sorted(int(n.rsplit("/", 1)[1]) for n in names if n.rsplit("/", 1)[1].isdigit())

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_uri(self, version: int) -> str:
        return f"{self.uri}/{version}"

    def fetch(self, version: int, cache: str | Path) -> Path:
        """A local folder holding `version` (the version itself, or a download of it)."""
        if not self.gcs:
            return Path(self.uri) / str(version)
        target = Path(cache) / str(version)
        if (target / "saved_model.pb").exists():
            return target
        manifest = json.loads(self._bucket().blob(self._key(f"{MARKERS}/committed/{version}"))
                              .download_as_bytes())
        partial = Path(cache) / f".{version}.{uuid.uuid4().hex[:8]}"
        for rel in manifest["files"]:
            dest = partial / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._bucket().blob(self._key(f"{version}/{rel}")).download_to_filename(str(dest))
        partial.rename(target)
        return target

    # -- writing ---------------------------------------------------------------------------

    def publish(self, model_dir: str | Path) -> int:
        """Publish a SavedModel folder as the next version; returns its number."""
        model_dir = Path(model_dir)
        if not (model_dir / "saved_model.pb").exists():
            raise InputError(f"push: {model_dir} is not a SavedModel (no saved_model.pb)")
        return self._publish_gcs(model_dir) if self.gcs else self._publish_local(model_dir)

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
        from google.api_core.exceptions import PreconditionFailed

        bucket = self._bucket()
        claimed = [int(n.rsplit("/", 1)[1]) for n in self._list(f"{MARKERS}/claims/")
                   if n.rsplit("/", 1)[1].isdigit()]
        version = max([*claimed, *self.versions()], default=0) + 1
        while True:
            try:
                bucket.blob(self._key(f"{MARKERS}/claims/{version}")).upload_from_string(
                    b"", if_generation_match=0)
                break
            except PreconditionFailed:
                version += 1
        files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
        files.sort(key=lambda rel: rel == "saved_model.pb")  # the graph last
        for rel in files:
            bucket.blob(self._key(f"{version}/{rel}")).upload_from_filename(str(model_dir / rel))
        manifest = json.dumps({"version": version, "files": files}).encode()
        bucket.blob(self._key(f"{MARKERS}/committed/{version}")).upload_from_string(
            manifest, if_generation_match=0)
        return version

    # -- Cloud Storage helpers -------------------------------------------------------------

    def _bucket(self):
        from conveyor import gcp

        return gcp.storage_client().bucket(self.bucket_name)

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _list(self, rel_prefix: str) -> list[str]:
        from google.api_core.exceptions import NotFound

        from conveyor import gcp

        try:
            return [b.name for b in gcp.storage_client().list_blobs(
                self.bucket_name, prefix=self._key(rel_prefix))]
        except NotFound:
            raise InputError(f"model_base_path: bucket gs://{self.bucket_name} not found") from None
