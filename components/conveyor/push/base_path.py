"""A model base path in TensorFlow Serving's layout, `<base>/<version>/saved_model.pb`, on a
local folder or on Cloud Storage, with versions that are published all at once or not at all.

Versions are increasing integers and a published version is never overwritten. A publisher
killed at any point (SIGKILL, a preempted node) leaves no partial version that a reader sees, and
the next publish takes a fresh number (tests/local/test_crash_safety.py kills it at random).

Numbers. A version's folder name is ASCII digits in canonical form (`7`, not `07` or `²`).
Every numeric folder counts when a number is chosen, published by conveyor or not: a publish
takes the next number above every numeric folder, never writes into an existing one, and reports
the numbers it skipped because of folders conveyor did not publish (`Publication.skipped`), such
as a version copied by hand, which TensorFlow Serving would serve (it lists folders itself).

- Local folder: the model is copied into `<base>/.staging-<pid>-<id>-<host>/`, then, holding an
  exclusive `flock` on `<base>/.conveyor-publish.lock` (released by the kernel when its holder
  dies), renamed to `<base>/<v>`. rename(2) is atomic, so a reader sees no version or all of it.
  A conveyor version is a canonical numeric folder holding `saved_model.pb`. Under the lock, the
  checks below (same model, baseline) and the rename are one atomic step. A staging copy that
  fails (disk full, a read-only folder) is removed and raises one `PublishError` line naming the
  path and the cause; a killed publish's staging folder (not a number: no reader takes it for a
  version) is removed by the next publish on the same host once its process is gone.
- Cloud Storage has no atomic rename, so a version is claimed, written, then committed:
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
import dataclasses
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from conveyor.errors import ConveyorError, InputError, SourceNotFoundError

MARKERS = ".conveyor"
GRAPH = "saved_model.pb"
LOCK = ".conveyor-publish.lock"
STAGING = ".staging-"
LABELS = "labels.json"  # version labels at the base path: {"champion": 1, "challenger": 2}
LABEL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
HEARTBEAT = 5.0  # seconds between rewrites of a live writer's claim
LEASE_ENV = "CONVEYOR_PUBLISH_LEASE"
DEFAULT_LEASE = 30.0  # seconds without a heartbeat after which a claim is abandoned

_NUMERIC = re.compile(r"[0-9]+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")

# Copies one file into the staging folder; a module attribute so a test can make it fail.
_copy_file = shutil.copy2


class ConflictError(ConveyorError):
    """Another writer committed a version this writer had claimed (markers tampered with)."""


class PublishError(ConveyorError):
    """The version could not be written (disk full, read-only folder); nothing was published."""


class StaleBaseline(ConveyorError):
    """Another run published a version after this model was evaluated against its baseline."""

    def __init__(self, published: int | None, baseline: int):
        self.published, self.baseline = published, baseline
        against = f"against v{baseline}" if baseline else "without a baseline"
        if published is not None and published > baseline:
            message = (f"push: another run published v{published} after this model was "
                       f"evaluated {against}; re-run evaluate")
        else:  # the baseline is gone (or was never committed)
            message = (f"push: the model was evaluated {against}, which is not the newest "
                       f"published version (newest: {f'v{published}' if published else 'none'})"
                       "; re-run evaluate")
        super().__init__(message)


class LabelsError(InputError):
    """The labels file at a base path is not {label: published version}."""


def check_labels(labels, where: str) -> dict[str, int]:
    """`labels` as {label: version}, or LabelsError naming `where` and what is wrong."""
    if not isinstance(labels, dict):
        raise LabelsError(f"{where}: expected a JSON object {{label: version}}, got "
                          f"{type(labels).__name__}")
    out = {}
    for label, version in labels.items():
        if not isinstance(label, str) or not LABEL_NAME.fullmatch(label):
            raise LabelsError(f"{where}: label {label!r} is not a label name (lowercase letter, "
                              "then up to 62 lowercase letters, digits, '_' or '-')")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise LabelsError(f"{where}: label {label!r} names {version!r}; expected a version "
                              "number (an integer >= 1)")
        out[label] = version
    return out


@dataclasses.dataclass
class Publication:
    version: int
    new: bool = True  # False: an identical model was (or was being) published as `version`
    skipped: list[int] = dataclasses.field(default_factory=list)  # folders conveyor did not write


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


def manifest_hash(hashes: dict[str, str]) -> str:
    """One SHA-256 for a whole file manifest (`digest`)."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def number(name: str) -> int | None:
    """The number a folder name stands for in TensorFlow Serving's eyes (ASCII digits), else
    None. `²` and `٣` are not numbers here (str.isdigit says they are; int() refuses `²`)."""
    return int(name) if _NUMERIC.fullmatch(name) else None


def canonical(name: str) -> int | None:
    """The version a folder name is when conveyor publishes it: `7`, not `007`."""
    n = number(name)
    return n if n is not None and str(n) == name else None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lease() -> float:
    try:
        return float(os.environ.get(LEASE_ENV, DEFAULT_LEASE))
    except ValueError:
        raise InputError(f"{LEASE_ENV}: {os.environ[LEASE_ENV]!r} is not a number of seconds")


class ModelBasePath:
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
        `cache`; a download that fails leaves nothing in `cache`)."""
        from conveyor.gcp import retry

        if not self.gcs:
            return Path(self.uri) / str(version)
        target = Path(cache) / str(version)
        if (target / GRAPH).exists():
            return target
        manifest = self._read_marker(f"{MARKERS}/committed/{version}")
        if not manifest.get("files"):
            raise SourceNotFoundError(f"model_base_path: {self.uri} has no version {version}")
        partial = Path(cache) / f".{version}.{uuid.uuid4().hex[:8]}"
        try:
            for rel in manifest["files"]:
                dest = partial / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                self._bucket().blob(self._key(f"{version}/{rel}")).download_to_filename(
                    str(dest), retry=retry.storage())
            partial.rename(target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
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

    # -- version labels --------------------------------------------------------------------

    def labels_uri(self) -> str:
        return f"{self.uri}/{LABELS}"

    def labels(self) -> dict[str, int]:
        """The version labels (`labels.json` at the base path), {} when there is no such file.
        A file that is not {label: version} raises LabelsError naming it."""
        return self._read_labels()[0]

    def served(self) -> int | None:
        """The version readers serve by default: the `champion` label when the base path has
        labels, else the newest published version (TensorFlow Serving's own choice)."""
        labels = self.labels()
        return labels["champion"] if "champion" in labels else self.latest()

    def update_labels(self, change) -> dict[str, int]:
        """Apply `change(labels) -> labels` atomically (read, change and write as one step
        against concurrent updates: a lock locally, a generation precondition on Cloud
        Storage, retried) and return the labels written. Every labelled version must be a
        published one (LabelsError naming it otherwise; nothing written). An empty result
        removes the file, so readers serve the newest version again."""
        from conveyor.gcp import retry

        for _ in range(20):
            current, generation = self._read_labels()
            new = check_labels(change(dict(current)), f"labels of {self.uri}")
            if new:
                published = set(self.versions())
                for label, version in sorted(new.items()):
                    if version not in published:
                        raise LabelsError(f"labels of {self.uri}: {label!r} -> version "
                                          f"{version}, which is not a published version "
                                          f"(published: {sorted(published) or 'none'})")
            if new == current:
                return new
            if not self.gcs:
                base = Path(self.uri)
                base.mkdir(parents=True, exist_ok=True)
                with self._locked(base):
                    if self._read_labels()[0] != current:
                        continue  # changed meanwhile: read again
                    self._write_local_labels(base, new)
                return new
            from google.api_core.exceptions import NotFound, PreconditionFailed

            blob = self._bucket().blob(self._key(LABELS))
            try:
                with retry.giving_up(f"labels: write {self.labels_uri()}"):
                    if new:
                        blob.upload_from_string(json.dumps(new, sort_keys=True).encode(),
                                                content_type="application/json",
                                                if_generation_match=generation or 0)
                    elif generation:
                        blob.delete(if_generation_match=generation)
                return new
            except (PreconditionFailed, NotFound):
                continue  # another writer was first: read again
        raise PublishError(f"labels of {self.uri}: changed by other writers 20 times in a row "
                           "while this one tried to update them; nothing written")

    def _read_labels(self) -> tuple[dict[str, int], int | None]:
        """(labels, the gs:// object's generation or None)."""
        where = self.labels_uri()
        if not self.gcs:
            try:
                raw = (Path(self.uri) / LABELS).read_bytes()
            except FileNotFoundError:
                return {}, None
            except OSError as exc:
                raise LabelsError(f"{where}: cannot read it: {_one_line(exc)}") from None
            generation = None
        else:
            from conveyor.gcp import retry

            with self._bucket_errors():
                blob = self._bucket().get_blob(self._key(LABELS), retry=retry.storage())
                if blob is None:
                    return {}, None
                raw = blob.download_as_bytes(retry=retry.storage())
                generation = blob.generation
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LabelsError(f"{where}: not JSON ({exc})") from None
        return check_labels(data, where), generation

    @staticmethod
    def _write_local_labels(base: Path, labels: dict[str, int]) -> None:
        target = base / LABELS
        if not labels:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return
        temporary = base / f".{LABELS}.{uuid.uuid4().hex[:12]}"
        try:
            with temporary.open("w") as f:
                json.dump(labels, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, target)  # readers see the old file or the new one
        except OSError as exc:
            raise PublishError(f"labels: cannot write {target}: {_one_line(exc)}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

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

    # -- local -----------------------------------------------------------------------------

    def _publish_local(self, model_dir: Path, hashes: dict, dedupe: bool,
                       baseline: int | None) -> Publication:
        base = Path(self.uri)
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishError(f"model_base_path: cannot create the folder {base}: "
                               f"{_one_line(exc)}") from None
        staging = base / f"{STAGING}{os.getpid()}-{uuid.uuid4().hex[:12]}-{socket.gethostname()}"
        try:
            self._stage(model_dir, staging)
            with self._locked(base):
                self._remove_dead_staging(base)
                latest = self.latest()
                if dedupe and latest is not None and self.manifest(latest) == hashes:
                    return Publication(latest, new=False)
                self._check_baseline(baseline, latest)
                version, skipped = self._next_local(base)
                while True:
                    try:
                        os.rename(staging, base / str(version))
                        return Publication(version, skipped=skipped)
                    except OSError as exc:  # a folder appeared there (by hand, or NFS)
                        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                            skipped.append(version)
                            version += 1
                            continue
                        raise PublishError(f"model_base_path: cannot publish {base / str(version)}"
                                           f": {_one_line(exc)}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _stage(model_dir: Path, staging: Path) -> None:
        """Copy `model_dir` into `staging`; one line naming the file and the cause if it fails
        (shutil.copytree would list every file, and leave the copy)."""
        current = staging
        try:
            staging.mkdir()
            for root, dirs, names in os.walk(model_dir, followlinks=True):
                rel = Path(root).relative_to(model_dir)
                for d in dirs:
                    current = staging / rel / d
                    current.mkdir()
                for name in names:
                    current = staging / rel / name
                    _copy_file(Path(root) / name, current)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise PublishError(f"model_base_path: cannot write {current}: {_one_line(exc)}; "
                               "nothing was published") from None

    @staticmethod
    @contextlib.contextmanager
    def _locked(base: Path):
        try:
            fd = os.open(base / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PublishError(f"model_base_path: cannot open the lock {base / LOCK}: "
                               f"{_one_line(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _remove_dead_staging(base: Path) -> None:
        """Staging folders of killed publishers of this host (their process is gone)."""
        host = socket.gethostname()
        for p in base.iterdir():
            if not p.name.startswith(STAGING):
                continue
            pid, _, rest = p.name[len(STAGING):].partition("-")
            if pid.isascii() and pid.isdigit() and rest.partition("-")[2] == host \
                    and not _alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)

    def _next_local(self, base: Path) -> tuple[int, list[int]]:
        """The number above every numeric folder, and the numeric folders above the latest
        version that are not versions (no saved_model.pb, or a non-canonical name)."""
        numbers = {n for p in base.iterdir() if (n := number(p.name)) is not None}
        published = set(self.versions())
        top = max(published, default=0)
        return max(numbers, default=0) + 1, sorted(n for n in numbers - published if n > top)

    @staticmethod
    def _check_baseline(baseline: int | None, latest: int | None) -> None:
        if baseline is not None and (latest or 0) != baseline:
            raise StaleBaseline(latest, baseline)

    # -- Cloud Storage ---------------------------------------------------------------------

    def _publish_gcs(self, model_dir: Path, hashes: dict, dedupe: bool,
                     baseline: int | None) -> Publication:
        from conveyor.gcp import retry

        latest = self.latest()
        if dedupe and latest is not None and self.manifest(latest) == hashes:
            return Publication(latest, new=False)
        self._check_baseline(baseline, latest)
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
        version = max(ours | folders, default=0) + 1
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
        lease = _lease()
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
                if not _alive(claim["pid"]) and not self._exists(
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
                                 f"accessible: {_one_line(exc)}") from None
            if not probe:
                return
            blob = client.bucket(self.bucket_name).blob(
                self._key(f"{MARKERS}/probe-{uuid.uuid4().hex}"))
            try:
                blob.upload_from_string(b"", if_generation_match=0, retry=retry.storage())
            except Forbidden as exc:
                raise InputError(f"model_base_path: {self.uri} is not writable: "
                                 f"{_one_line(exc)}") from None
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
        from conveyor import gcp
        from conveyor.gcp import retry

        top = self._key("")
        pages = gcp.storage_client().list_blobs(self.bucket_name, prefix=top, delimiter="/",
                                                retry=retry.storage())
        with self._bucket_errors():
            for _ in pages:  # prefixes are filled as the pages are read
                pass
        names = (p[len(top):].rstrip("/") for p in pages.prefixes)
        return sorted(n for name in names if (n := number(name)) is not None)

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

    def __init__(self, base: ModelBasePath, version: int, claim: dict):
        super().__init__(daemon=True)
        self.base, self.version, self.claim = base, version, dict(claim)
        self.done = threading.Event()
        self.blob = base._bucket().get_blob(base._key(f"{MARKERS}/claims/{version}"))
        self.clock = (self.blob.updated if self.blob is not None else
                      datetime.datetime.now(datetime.timezone.utc), time.monotonic())

    def server_now(self) -> datetime.datetime:
        updated, at = self.clock
        return updated + datetime.timedelta(seconds=time.monotonic() - at)

    def run(self):
        from google.api_core.exceptions import GoogleAPIError

        while not self.done.wait(HEARTBEAT):
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
