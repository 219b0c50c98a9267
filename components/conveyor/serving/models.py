"""Loaded model versions, polled from a model base path and swapped in without dropping requests.

`ModelManager` polls the base path (local or gs://, published versions only) in a background
thread and loads the newest version that loads, warmed up by one prediction before it takes
requests; requests already running keep the version they started with, new ones get the new one.
The previous version stays loaded so `/versions/{v}` requests to it still work.

It degrades rather than dies. A newer version that fails to load or to warm up (a truncated
`saved_model.pb`, a missing variables file, a download that failed, no serving signature) is
skipped: the version already served keeps serving, and at start (or after a restart) the next
older version is tried, down to the oldest. A skipped version is tried again with exponential
backoff (2 s, doubling, at most 5 min between attempts), so a transient store fault heals by
itself; each attempt is logged once. Folders that look like versions but are not loadable as
they stand (no `saved_model.pb`, a name such as `007`, on gs:// a folder without a commit marker)
are reported, once, and never loaded. `status()` (served on `/readyz`) says what is served and
which newer versions are skipped, and why. Every swap is logged: from, to, seconds to load and
warm up.

Version labels (docs/promotion.md). When the base path has a `labels.json` (TensorFlow
Serving's version labels, written by push in challenger mode and by promote), the `champion`
version is served by default instead of the newest, and the `challenger`, loaded beside it, is
reached by its label (`get_label`) and takes `canary_percent` of the default traffic (chosen by
the server). Labels are re-read at every poll: a promotion swaps the default to the new
champion within a poll, a rollback drops the challenger's share. A labelled version that does
not load is skipped as above (the champion that was served stays served). A labels file that
cannot be read counts as a failed poll: nothing changes. Without a labels file, the newest
version is served, as always.

One loaded version (its signature, and how a request becomes its tensors) is
`conveyor.serving.loaded`.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import one_line
from conveyor.registry import ModelBasePath
from conveyor.serving.loaded import Loaded

log = logging.getLogger("conveyor.serve")
KEEP = 2  # versions kept loaded


_VERSION_NAME = re.compile(r"[0-9]+")  # ASCII digits only, as TensorFlow Serving reads them
_POLL_ERROR_EVERY = 60.0  # seconds between repeats of the same "polling failed" line


def _reason(exc: BaseException) -> str:
    """A failure's reason as one log line."""
    return one_line(exc, 400)


@dataclass
class Skipped:
    """A folder newer than the served version that is not served, and why.

    `attempts` counts load attempts (0: not loadable as it stands, so never tried: checked again
    at every poll); `next_attempt` is the clock time of the next one, None when never tried."""

    version: str
    reason: str
    attempts: int = 0
    next_attempt: float | None = None

    def waiting(self, now: float) -> bool:
        """Whether its next load attempt is still to come at clock time `now`."""
        return self.next_attempt is not None and now < self.next_attempt

    def describe(self, now: float) -> dict[str, Any]:
        return {"version": self.version, "reason": self.reason, "attempts": self.attempts,
                "next_attempt_in_seconds": None if self.next_attempt is None
                else round(max(0.0, self.next_attempt - now), 1)}


class ModelManager:
    """The versions of one model base path that `conveyor serve` holds, kept up to date by polls.

    `retry_first` and `retry_max` bound the backoff between load attempts of a version that
    failed (seconds; doubling from the first, at most the max)."""

    def __init__(self, base_path: str, name: str, poll_seconds: float = 2.0,
                 cache_dir: str | None = None, retry_first: float = 2.0,
                 retry_max: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.base = ModelBasePath(base_path)
        self.name = name
        self.poll_seconds = poll_seconds
        self.retry_first, self.retry_max = retry_first, retry_max
        self.cache = cache_dir or tempfile.mkdtemp(prefix="conveyor-serve-")
        self.loaded: dict[int, Loaded] = {}
        self.current: Loaded | None = None
        self.errors: dict[int, str] = {}  # versions that failed to load: the last reason
        self.polls = 0  # polls completed (whether or not they listed the base path)
        self.load_failures = 0  # load attempts that failed, in all
        self._failed: dict[int, Skipped] = {}  # load failures newer than the served version
        self._unusable: dict[str, str] = {}  # folders not loadable as they stand: why
        self._poll_error: str | None = None
        self._poll_error_logged = -math.inf
        self._poll_failures = 0
        self._clock = clock
        self.labels: dict[str, int] = {}  # the base path's version labels, as last read
        self.canary_percent = 0.0  # share of default requests the challenger answers (server)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.on_load: Callable[[Loaded], None] = lambda loaded: None
        self.on_poll: Callable[[ModelManager], None] = lambda manager: None

    # -- listing -------------------------------------------------------------------------------

    def _scan(self) -> tuple[list[int], dict[str, str]]:
        """(the versions to consider loading, ascending; {folder name: why it is not one})."""
        if self.base.gcs:
            versions = self.base.versions()
            published = {str(v) for v in versions}
            unusable = {name: "not published: no commit marker (a push still writing, one that "
                              "died, or files copied by hand)"
                        for name in self._gcs_folders() if name not in published}
            return versions, unusable
        base = Path(self.base.uri)
        versions, unusable = [], {}
        if not base.is_dir():
            return versions, unusable
        names = {p.name: p for p in base.iterdir() if _VERSION_NAME.fullmatch(p.name)}
        for name, path in names.items():
            number = int(name)
            if name != str(number):
                unusable[name] = (f"folder name {name!r} is not a version number as conveyor "
                                  f"and `push` write it (version {number} is the folder "
                                  f"'{number}')")
            elif not path.is_dir():
                unusable[name] = "not a folder"
            elif not (path / "saved_model.pb").is_file():
                unusable[name] = ("no saved_model.pb: not a SavedModel, or one still being "
                                  "copied")
            else:
                versions.append(number)
        return sorted(versions), unusable

    def _gcs_folders(self) -> list[str]:
        """The version-like folder names right under a gs:// base path (one listing call)."""
        from conveyor import gcp
        from conveyor.gcp import retry

        prefix = f"{self.base.prefix}/" if self.base.prefix else ""
        pages = gcp.storage_client().list_blobs(self.base.bucket_name, prefix=prefix,
                                                delimiter="/", retry=retry.storage())
        for _ in pages:  # the folders ("prefixes") are known once the pages are read
            pass
        names = (p[len(prefix):].rstrip("/") for p in pages.prefixes)
        return [n for n in names if _VERSION_NAME.fullmatch(n)]

    # -- polling -------------------------------------------------------------------------------

    def poll_once(self) -> None:
        """List the base path; load the newest version newer than the served one that loads
        (a version that failed before only once its backoff is over)."""
        try:
            versions, unusable = self._scan()
            labels = self.base.labels()
        except Exception as exc:  # a poll failing must not stop serving
            self._polling_failed(exc)
        else:
            self._polling_works()
            if labels != self.labels:
                log.info("%s: labels %s (were %s)", self.name, labels or "none",
                         self.labels or "none")
            with self._lock:
                self.labels = labels
            if "champion" in labels:
                self._consider_labels(versions, unusable, labels)
            else:
                self._consider(versions, unusable)
        self.polls += 1
        self.on_poll(self)

    def _polling_failed(self, exc: Exception) -> None:
        self._poll_failures += 1
        self._poll_error = _reason(exc)
        now = self._clock()
        if now - self._poll_error_logged >= _POLL_ERROR_EVERY:
            self._poll_error_logged = now
            serving = self.current.version if self.current else "none"
            log.warning("%s: polling %s failed (%d in a row): %s; still serving version %s",
                        self.name, self.base.uri, self._poll_failures, self._poll_error, serving)

    def _polling_works(self) -> None:
        if self._poll_failures:
            log.info("%s: polling %s works again after %d failed polls", self.name,
                     self.base.uri, self._poll_failures)
        self._poll_failures, self._poll_error = 0, None
        self._poll_error_logged = -math.inf

    def _consider(self, versions: list[int], unusable: dict[str, str]) -> None:
        served = self.current.version if self.current else -1
        unusable = {n: r for n, r in unusable.items() if int(n) > served}
        for name, reason in sorted(unusable.items(), key=lambda item: int(item[0])):
            if self._unusable.get(name) != reason:  # once, not at every poll
                log.warning("%s: skipped folder %s of %s: %s", self.name, name, self.base.uri,
                            reason)
        with self._lock:
            self._unusable = unusable
            for version in [v for v in self._failed if v <= served or v not in versions]:
                del self._failed[version]
        for version in sorted((v for v in versions if v > served), reverse=True):
            failed = self._failed.get(version)
            if failed is not None and failed.waiting(self._clock()):
                continue
            if self._load(version):
                return

    def _consider_labels(self, versions: list[int], unusable: dict[str, str],
                         labels: dict[str, int]) -> None:
        """Load the labelled versions not loaded yet (champion first), then serve the champion
        by default if it is loaded."""
        published = set(versions)
        wanted = [labels["champion"], *(v for k, v in sorted(labels.items())
                                        if k != "champion" and v != labels["champion"])]
        with self._lock:
            self._unusable = {n: r for n, r in unusable.items() if int(n) in wanted}
            for version in [v for v in self._failed if v not in wanted]:
                del self._failed[version]
            for label, version in labels.items():
                if version not in published and str(version) not in self._unusable:
                    self._unusable[str(version)] = (f"labelled {label!r} but not a published "
                                                    "version")
        for version in wanted:
            if version in self.loaded or version not in published:
                continue
            failed = self._failed.get(version)
            if failed is not None and failed.waiting(self._clock()):
                continue
            self._load(version)
        self._settle()

    def _settle(self) -> list[int]:
        """Choose the default version (the champion when labelled and loaded, else the newest
        loaded) and evict versions beyond KEEP that no label names; returns the evicted."""
        with self._lock:
            labelled = set(self.labels.values())
            champion = self.labels.get("champion")
            keep = labelled | set(sorted(self.loaded)[-KEEP:])
            if self.current is not None:
                keep.add(self.current.version)
            if champion in self.loaded:
                keep.add(champion)
            evicted = sorted(v for v in self.loaded if v not in keep)
            for old in evicted:
                del self.loaded[old]
            previous = self.current
            if champion in self.loaded:
                self.current = self.loaded[champion]
            elif self.loaded and not champion:
                self.current = self.loaded[max(self.loaded)]
        for old in evicted:
            self._drop_download(old)
        if self.current is not None and previous is not self.current and previous is not None:
            log.info("%s: default version %s (was %s)%s", self.name, self.current.version,
                     previous.version, " (the champion label)" if champion else "")
        return evicted

    def get_label(self, label: str) -> Loaded | None:
        with self._lock:
            version = self.labels.get(label)
            return self.loaded.get(version) if version is not None else None

    def _load(self, version: int) -> bool:
        """Fetch, load and warm up `version`, then serve it; False (recorded, logged) if any of
        that fails."""
        import tensorflow  # noqa: F401  (its import is not part of the load seconds)

        started = time.perf_counter()
        try:
            loaded = Loaded(version, str(self.base.fetch(version, self.cache)))
            loaded.warm_up()
        except Exception as exc:  # whatever the files hold, keep serving
            self._drop_download(version)
            self._record_failure(version, _reason(exc))
            return False
        seconds = time.perf_counter() - started
        with self._lock:
            previous = self.current
            self.loaded[version] = loaded
            if "champion" in self.labels:
                evicted = []  # _settle chooses the default and evicts
                if self.current is None and self.labels["champion"] == version:
                    self.current = loaded
            else:
                evicted = sorted(self.loaded)[:-KEEP]
                for old in evicted:
                    del self.loaded[old]
                self.current = self.loaded[max(self.loaded)]
            self.errors.pop(version, None)
            for v in [v for v in self._failed if v <= version or v == version]:
                if "champion" not in self.labels or v == version:
                    del self._failed[v]
            self._unusable = {n: r for n, r in self._unusable.items()
                              if int(n) > version or ("champion" in self.labels
                                                      and int(n) != version)}
            skipped = sorted([*map(str, self._failed), *self._unusable], key=int)
        for old in evicted:
            self._drop_download(old)
        role = next((k for k, v in self.labels.items() if v == version), "")
        log.info("%s: %s version %s%s (was %s); loaded and warmed up in %.2f s%s", self.name,
                 "loaded" if role and role != "champion" else "serving", version,
                 f" ({role})" if role else "", previous.version if previous else "none", seconds,
                 f"; skipping newer: {', '.join(skipped)} (see /readyz)" if skipped else "")
        self.on_load(loaded)
        return True

    def _record_failure(self, version: int, reason: str) -> None:
        before = self._failed.get(version)
        attempts = before.attempts + 1 if before else 1
        delay = min(self.retry_first * 2 ** (attempts - 1), self.retry_max)
        with self._lock:
            self._failed[version] = Skipped(str(version), reason, attempts,
                                            self._clock() + delay)
            self.errors[version] = reason
            self.load_failures += 1
        serving = f"version {self.current.version}" if self.current else "no version yet"
        log.warning("%s: skipped version %s (load attempt %d failed, next in %.3g s; serving "
                    "%s): %s", self.name, version, attempts, delay, serving, reason)

    def _drop_download(self, version: int) -> None:
        """Remove what was downloaded of a gs:// version (a failed or evicted one): a retry
        downloads it afresh, and the cache does not grow with every version published. A local
        base path is read in place and never touched."""
        if not self.base.gcs:
            return
        cache = Path(self.cache)
        for path in [cache / str(version), *cache.glob(f".{version}.*")]:
            shutil.rmtree(path, ignore_errors=True)

    # -- what the server asks ------------------------------------------------------------------

    def get(self, version: int | None) -> Loaded | None:
        with self._lock:
            return self.current if version is None else self.loaded.get(version)

    def skipped(self) -> list[dict[str, Any]]:
        """Folders newer than the served version that are not served, newest first."""
        now = self._clock()
        with self._lock:
            entries = [*self._failed.values(),
                       *(Skipped(n, r) for n, r in self._unusable.items())]
        entries.sort(key=lambda s: int(s.version), reverse=True)
        return [s.describe(now) for s in entries]

    def status(self) -> dict[str, Any]:
        """What `/readyz` says: the model, the version served and the newer ones skipped."""
        with self._lock:
            current, loaded = self.current, sorted(self.loaded, reverse=True)
        state = ("AVAILABLE" if current else "LOADING" if self.polls == 0 else "UNAVAILABLE")
        with self._lock:
            labels = dict(self.labels)
        out: dict[str, Any] = {"model": self.name, "base_path": self.base.uri, "state": state,
               "version": current.version if current else None, "loaded_versions": loaded,
               "skipped": self.skipped(), "polling_error": self._poll_error}
        if labels:
            out["labels"] = labels
            out["canary_percent"] = self.canary_percent if "challenger" in labels else 0.0
        return out

    # -- the polling thread --------------------------------------------------------------------

    def run(self) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:  # a bug here must not end the polling for good
                log.exception("%s: polling %s raised; polling goes on", self.name, self.base.uri)
            if self.poll_seconds == 0 and self.current is not None:
                return  # 0: load once, then never poll (TF Serving's poll_wait_seconds=0)
            if self._stop.wait(self.poll_seconds or self.retry_first):  # 0: until one loads
                return

    def start(self) -> threading.Thread:
        """Poll in a background thread, the first time at once: the server answers (`/healthz`,
        `/readyz` 503) while the first version loads."""
        thread = threading.Thread(target=self.run, name="conveyor-serve-poll", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.current is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.current is not None
