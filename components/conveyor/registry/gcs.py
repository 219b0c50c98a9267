"""Publishing on Cloud Storage: the claim, heartbeat and commit protocol.

Cloud Storage has no atomic rename, so a version is claimed, written, then committed:
1. claim: create `<base>/.conveyor/claims/<v>` with `if_generation_match=0` (create-only, which
   Cloud Storage enforces for single-request uploads); a taken number, or a `<v>/` that already
   holds objects, -> try `v + 1`. The claim records the writer (token, host, pid), the SHA-256
   of its file manifest and the baseline it was evaluated against; while the writer works, a
   heartbeat rewrites it every `HEARTBEAT` s;
2. settle with the claims below this one (see "Concurrent publishes");
3. write every file under `<base>/<v>/`, `saved_model.pb` last;
4. commit: create `<base>/.conveyor/committed/<v>` (create-only) holding the file manifest
   (names and SHA-256 of every file).
conveyor's readers (`versions`, `fetch`, `conveyor serve`, evaluate's baseline) see only
committed versions. A killed publish leaves a claim without a commit and maybe some files
under `<v>/`; the next publish numbers past every claim and folder, so the number is never
reused. TensorFlow Serving lists `<base>/<v>/` itself, without the markers: a `<v>/` without
`saved_model.pb` fails to load ("Could not find SavedModel .pb"), is retried a few times, and
the version already served stays served; `saved_model.pb` written last means a `<v>/` that has
it has every other file too. Abandoned claims are left in place (a cleanup could not know
whether a complete uncommitted `<v>/` is being served); `uncommitted()` lists them.

Concurrent publishes (`publish_if_changed`, what push calls):
- the same model (the same SHA-256 manifest) pushed twice at once publishes one version: the
  other returns it (`new=False`). Locally the second finds it under the lock; on Cloud Storage
  the writer with the higher claim waits for each lower claim of the same manifest to commit
  (then returns that version) or to be abandoned;
- `baseline=M` (the version the model was evaluated against; 0: evaluated without one) refuses
  with `StaleBaseline` unless M is still the newest version when this one is published: locally
  checked under the lock; on Cloud Storage the writer waits for every claim between M and its
  own to commit (-> refused) or be abandoned. Claim numbers grow with the time they were made
  (claims are never deleted), so of two runs evaluated against the same M, the first to claim
  publishes and the other is refused.
  A lower claim is abandoned when its writer said so, when it is of this host and its process is
  gone, or when its heartbeat stopped for `CONVEYOR_PUBLISH_LEASE` seconds (default 30).

Each Cloud Storage call retries transient errors (`conveyor.gcp.retry`): reads, listings, uploads
into the version folder this writer claimed, and the create-only markers. A marker whose creation
succeeded but whose response was lost meets a 412 on the retry; each marker holds this writer's
random token, so the 412 is resolved by reading the marker back: our token means it is ours.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from conveyor.errors import InputError, SourceNotFoundError, one_line
from conveyor.io.digest import manifest_hash
from conveyor.registry import versions
from conveyor.registry.store import Store
from conveyor.registry.versions import (
    GRAPH,
    MARKERS,
    ConflictError,
    Publication,
    PublishError,
    StaleBaseline,
    alive,
    canonical,
    check_baseline,
    check_room,
    number,
)


class GcsStore(Store):
    """ModelBasePath's Cloud Storage half (`bucket_name`, `prefix`): claims, markers, uploads."""

    def _publish_gcs(self, model_dir: Path, hashes: dict, dedupe: bool,
                     baseline: int | None) -> Publication:
        from conveyor.gcp import retry

        latest = self.latest()
        if dedupe and latest is not None and self.manifest(latest) == hashes:
            return Publication(latest, new=False)
        check_baseline(baseline, latest)
        token = uuid.uuid4().hex
        sha = manifest_hash(hashes)
        files = sorted(hashes, key=lambda rel: (rel == GRAPH, rel))  # the graph last
        claim = {"token": token, "sha": sha, "baseline": baseline, "claimed_at": time.time(),
                 "host": socket.gethostname(), "pid": os.getpid(), "beat": 0}
        version, skipped = self._claim(claim)
        heart = _Heartbeat(self, version, claim)
        heart.start()
        try:
            settled = self._settle(version, latest or 0, sha, dedupe, baseline, heart)
            if settled is not None:
                heart.release()
                return Publication(settled, new=False)
            bucket = self._bucket()
            for rel in files:  # this writer alone writes under <v>/, so a retried upload is safe
                with retry.giving_up(f"push: upload {self.version_uri(version)}/{rel}"):
                    bucket.blob(self._key(f"{version}/{rel}")).upload_from_filename(
                        str(model_dir / rel), retry=retry.storage())
            committed = self._create_marker(f"{MARKERS}/committed/{version}", {
                "version": version, "token": token, "files": files, "sha256": hashes})
        except BaseException:
            heart.release()
            raise
        finally:
            heart.stop()
        if not committed:
            raise ConflictError(f"model_base_path: {self.uri} version {version} was committed by "
                                "another writer although this one claimed it")
        return Publication(version, skipped=skipped)

    def _claim(self, claim: dict) -> tuple[int, list[int]]:
        """Claim the next free version number for this writer: above every claim, committed
        version and numeric `<v>/` folder; a number whose folder holds objects although nobody
        claimed it is skipped. Returns it and the numbers skipped for folders not conveyor's."""
        claims = set(self._numbers(f"{MARKERS}/claims/"))
        ours = claims | set(self.versions())
        folders = set(self._folders())
        top = max(ours, default=0)
        skipped = sorted(n for n in folders - ours if n > top)
        version = check_room(max(ours | folders, default=0) + 1, self.uri)
        while True:
            if self._create_marker(f"{MARKERS}/claims/{version}", claim):
                if not self._list(f"{version}/", max_results=1):
                    return version, skipped
                # the folder filled after the listing (a copy by hand): leave it, and this claim
                self._release(version, claim)
                skipped.append(version)
            version += 1

    def _settle(self, version: int, floor: int, sha: str, dedupe: bool,
                baseline: int | None, heart: _Heartbeat) -> int | None:
        """Deal with the claims below `version` and above `floor` (the latest version when this
        publish started): wait for those that matter to commit or be abandoned. Returns the
        version of an identical model committed meanwhile (dedupe), raises `StaleBaseline` if
        another model was committed after `baseline`, else None (go ahead)."""
        if not dedupe and baseline is None:
            return None
        for lower in self._numbers(f"{MARKERS}/claims/"):
            if not floor < lower < version:
                continue
            other = self._read_marker(f"{MARKERS}/claims/{lower}")
            same = dedupe and other.get("sha") == sha
            if not same and baseline is None:
                continue  # an unchecked publish of another model does not wait for it
            if self._wait_for(lower, heart):
                if same:
                    return lower
                raise StaleBaseline(lower, baseline)
        return None

    def _wait_for(self, version: int, heart: _Heartbeat) -> bool:
        """Wait until the claim of `version` is committed (True) or abandoned (False)."""
        lease = versions.lease()
        bucket = self._bucket()
        seen, since, pause = None, time.monotonic(), 0.05
        give_up = time.monotonic() + max(10 * lease, 300.0)  # never wait unboundedly
        while True:
            if time.monotonic() > give_up:
                raise PublishError(f"push: the claim of version {version} under {self.uri} is "
                                   f"still held by a live writer after {max(10 * lease, 300.0):.0f}"
                                   " s; nothing published (retry, or remove a stuck claim)")
            if self._exists(f"{MARKERS}/committed/{version}"):
                return True
            blob = bucket.get_blob(self._key(f"{MARKERS}/claims/{version}"))
            if blob is None:
                return False
            try:
                claim = json.loads(blob.download_as_bytes() or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError):
                claim = {}
            if not isinstance(claim, dict) or claim.get("released"):
                return False
            if claim.get("host") == socket.gethostname() and isinstance(claim.get("pid"), int):
                if not alive(claim["pid"]) and not self._exists(
                        f"{MARKERS}/committed/{version}"):
                    return False
            elif heart.server_now() - blob.updated > datetime.timedelta(seconds=lease):
                return False  # no heartbeat for a lease, by the server's clock
            if blob.generation != seen:
                seen, since = blob.generation, time.monotonic()
            elif time.monotonic() - since > lease:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _release(self, version: int, claim: dict) -> None:
        """Mark this writer's claim abandoned at once (others stop waiting for it)."""
        from google.api_core.exceptions import GoogleAPIError

        try:
            self._bucket().blob(self._key(f"{MARKERS}/claims/{version}")).upload_from_string(
                json.dumps({**claim, "released": True}).encode(),
                content_type="application/json")
        except GoogleAPIError:
            pass  # a lease later, others take it for abandoned anyway

    def _check_bucket(self, probe: bool) -> None:
        from google.api_core.exceptions import Forbidden, NotFound, PreconditionFailed

        from conveyor import gcp
        from conveyor.gcp import retry

        client = gcp.storage_client()
        with retry.giving_up(f"model_base_path: check gs://{self.bucket_name}"):
            try:
                client.get_bucket(self.bucket_name, retry=retry.storage())
            except NotFound:
                raise SourceNotFoundError(
                    f"model_base_path: bucket gs://{self.bucket_name} not found") from None
            except Forbidden as exc:
                raise InputError(f"model_base_path: bucket gs://{self.bucket_name} is not "
                                 f"accessible: {one_line(exc)}") from None
            if not probe:
                return
            blob = client.bucket(self.bucket_name).blob(
                self._key(f"{MARKERS}/probe-{uuid.uuid4().hex}"))
            try:
                blob.upload_from_string(b"", if_generation_match=0, retry=retry.storage())
            except Forbidden as exc:
                raise InputError(f"model_base_path: {self.uri} is not writable: "
                                 f"{one_line(exc)}") from None
            except PreconditionFailed:
                pass  # a retry after a lost response: the probe's unique name was ours
            try:
                blob.delete(retry=retry.storage())
            except NotFound:
                pass  # a retry after a lost response: already deleted

    # -- Cloud Storage helpers -------------------------------------------------------------

    def _create_marker(self, rel: str, payload: dict) -> bool:
        """Create the marker `rel` holding `payload` (with its "token") unless it exists.
        True if the marker is this writer's: created now, or by an attempt whose response was
        lost (a retry then meets 412 and finds our token); False if another writer's."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        from conveyor.gcp import retry

        blob = self._bucket().blob(self._key(rel))
        try:
            with retry.giving_up(f"push: write {self.uri}/{rel}"):
                blob.upload_from_string(json.dumps(payload).encode(),
                                        content_type="application/json",
                                        if_generation_match=0, retry=retry.storage())
            return True
        except PreconditionFailed:
            return self._read_marker(rel).get("token") == payload["token"]
        except NotFound:
            raise SourceNotFoundError(
                f"model_base_path: bucket gs://{self.bucket_name} not found") from None

    def _read_marker(self, rel: str) -> dict:
        """A marker's JSON content; {} for an empty, unreadable or missing one."""
        from google.api_core.exceptions import NotFound

        from conveyor.gcp import retry

        try:
            data = self._bucket().blob(self._key(rel)).download_as_bytes(retry=retry.storage())
        except NotFound:
            return {}
        try:
            content = json.loads(data) if data else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return content if isinstance(content, dict) else {}

    def _exists(self, rel: str) -> bool:
        from conveyor.gcp import retry

        return self._bucket().blob(self._key(rel)).exists(retry=retry.storage())

    def _bucket(self):
        from conveyor import gcp

        return gcp.storage_client().bucket(self.bucket_name)

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _numbers(self, rel_prefix: str) -> list[int]:
        """The integer names of the markers under `rel_prefix`, ascending."""
        names = (n.rsplit("/", 1)[1] for n in self._list(rel_prefix))
        return sorted(v for n in names if (v := canonical(n)) is not None)

    def _folders(self) -> list[int]:
        """The numbers of the numeric `<n>/` folders directly under the base path."""
        return sorted(n for name in self._folder_names() if (n := number(name)) is not None)

    def _folder_names(self) -> list[str]:
        """The names of the `<name>/` folders directly under the base path that are all digits,
        of any script (`7`, `007`, `١`): the version-like ones (one listing call)."""
        from conveyor import gcp
        from conveyor.gcp import retry

        top = self._key("")
        pages = gcp.storage_client().list_blobs(self.bucket_name, prefix=top, delimiter="/",
                                                retry=retry.storage())
        with self._bucket_errors():
            for _ in pages:  # prefixes are filled as the pages are read
                pass
        names = (p[len(top):].rstrip("/") for p in pages.prefixes)
        return sorted(name for name in names if name.isdigit())

    def _list(self, rel_prefix: str, max_results: int | None = None) -> list[str]:
        from conveyor import gcp
        from conveyor.gcp import retry

        with self._bucket_errors():
            return [b.name for b in gcp.storage_client().list_blobs(
                self.bucket_name, prefix=self._key(rel_prefix), max_results=max_results,
                retry=retry.storage())]

    @contextlib.contextmanager
    def _bucket_errors(self):
        from google.api_core.exceptions import NotFound

        from conveyor.gcp import retry

        try:
            with retry.giving_up(f"model_base_path: list {self.uri}"):
                yield
        except NotFound:
            raise SourceNotFoundError(
                f"model_base_path: bucket gs://{self.bucket_name} not found") from None


class _Heartbeat(threading.Thread):
    """Rewrites a writer's claim every HEARTBEAT seconds while it publishes, so that writers
    waiting for it can tell it from an abandoned one; knows the server's clock from it."""

    def __init__(self, base: GcsStore, version: int, claim: dict):
        super().__init__(daemon=True)
        self.base, self.version, self.claim = base, version, dict(claim)
        self.done = threading.Event()
        self.blob = base._bucket().get_blob(base._key(f"{MARKERS}/claims/{version}"))
        self.clock = (self.blob.updated if self.blob is not None else
                      datetime.datetime.now(datetime.UTC), time.monotonic())

    def server_now(self) -> datetime.datetime:
        updated, at = self.clock
        return updated + datetime.timedelta(seconds=time.monotonic() - at)

    def run(self):
        from google.api_core.exceptions import GoogleAPIError

        while not self.done.wait(versions.HEARTBEAT):
            if self.blob is None:
                return
            self.claim["beat"] += 1
            try:
                at = time.monotonic()
                self.blob.upload_from_string(json.dumps(self.claim).encode(),
                                             content_type="application/json",
                                             if_generation_match=self.blob.generation)
                self.clock = (self.blob.updated, at)
            except GoogleAPIError:
                pass  # the next beat tries again

    def stop(self):
        self.done.set()
        if self.is_alive():
            self.join()

    def release(self):
        self.stop()
        self.base._release(self.version, self.claim)
