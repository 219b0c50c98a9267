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
they stand (no `saved_model.pb`, on gs:// no commit marker, a name such as `007`, `١` or a number
past int64: `ModelBasePath.scan`) are reported, once, and never loaded. `status()` (served on
`/readyz`) says what is served and which newer versions are skipped, and why. Every swap is
logged: from, to, seconds to load and warm up.

Version labels (docs/promotion.md). When the base path has a `labels.json` (TensorFlow
Serving's version labels, written by push in challenger mode and by promote), the `champion`
version is served by default instead of the newest, and the `challenger`, loaded beside it, is
reached by its label (`get_label`) and takes `canary_percent` of the default traffic (chosen by
the server). Labels are re-read at every poll: a promotion swaps the default to the new
champion within a poll, a rollback drops the challenger's share. A labelled version that does
not load is skipped as above. Without a labels file, the newest version is served, as always.

The labels file never takes the server down. When it is not usable as it stands (not JSON, not
{label: version}, a version that is not an integer in range, unreadable), the last good labels
read stay in force, and without any (a broken file at start) the newest version that loads is
served. When the champion cannot be served (a version no longer published, deleted by a
retention job; one that does not load), the last good champion keeps serving if it is loaded,
else the newest version that loads; a challenger that cannot be served takes no share (its
requests go to the default). Each case is logged once, shown on `/readyz` (`labels_error`,
`fallback`) and counted by the server's `conveyor_serving_labels_fallback` gauge; a fixed
file is taken within a poll.

One loaded version (its signature, and how a request becomes its tensors) is
`conveyor.serving.loaded`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import one_line
from conveyor.registry import LabelsError, ModelBasePath, number
from conveyor.serving import check_model_name
from conveyor.serving.loaded import Loaded

log = logging.getLogger("conveyor.serve")
KEEP = 2  # versions kept loaded

_POLL_ERROR_EVERY = 60.0  # seconds between repeats of the same "polling failed" line


def _reason(exc: BaseException) -> str:
    """A failure's reason as one log line."""
    return one_line(exc, 400)


def canary(request_id: str, percent: float) -> bool:
    """Whether the request with this id goes to the challenger at `percent` (deterministic,
    and independent of `log_format.sampled`: another hash)."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    digest = hashlib.sha256(b"conveyor-canary:" + request_id.encode("utf-8", "surrogatepass"))
    return int.from_bytes(digest.digest()[:8], "big") < percent / 100 * 2 ** 64


def _rank(name: str) -> float:
    """A folder name's place among versions: its number, or beyond every version for a name
    that can never be one (`١`, a number past int64), so that it is always reported."""
    n = number(name)
    return math.inf if n is None else n


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
        self.name = check_model_name(name)
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
        self._empty_logged = False  # "no version folders" said once until one appears
        self._clock = clock
        self.labels: dict[str, int] = {}  # the version labels in force: the last good ones read
        self.labels_error: str | None = None  # why the labels file is not used as it stands
        self.fallback: str | None = None  # why the default version is not the labels' champion
        self._champion_served: int | None = None  # the last version served as the champion
        self.canary_percent = 0.0  # share of default requests the challenger answers (server)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.on_load: Callable[[Loaded], None] = lambda loaded: None
        self.on_poll: Callable[[ModelManager], None] = lambda manager: None

    # -- polling -------------------------------------------------------------------------------

    def poll_once(self) -> None:
        """List the base path and read its labels; load what they call for (the champion and
        the other labelled versions, else the newest version newer than the served one that
        loads; a version that failed before only once its backoff is over)."""
        try:
            versions, unusable = self.base.scan()
            labels = self._labels_in_force()
        except Exception as exc:  # a poll failing must not stop serving
            self._polling_failed(exc)
        else:
            self._polling_works()
            self._note_empty(versions, unusable)
            if labels != self.labels:
                log.info("%s: labels %s (were %s)", self.name, labels or "none",
                         self.labels or "none")
            with self._lock:
                self.labels = labels
            fallback = self.fallback
            if "champion" in labels:
                self._consider_labels(versions, unusable, labels)
            else:
                self._consider(versions, unusable)
                if self.labels_error is None:  # no labels, as they stand: no champion to keep
                    self._champion_served = None
                self.fallback = None if self.labels_error is None else (
                    "the labels file is not usable and no labels were read before it broke: "
                    "serving the newest version that loads" + (
                        f", {self.current.version}" if self.current else " (none loads yet)"))
            if self.fallback != fallback:
                if self.fallback is not None:
                    log.warning("%s: %s", self.name, self.fallback)
                else:
                    log.info("%s: fallback over: serving version %s%s", self.name,
                             self.current.version if self.current else "none",
                             " (the champion label)" if "champion" in labels else "")
        self.polls += 1
        self.on_poll(self)

    def _note_empty(self, versions: list[int], unusable: dict[str, str]) -> None:
        """Say once (until a version folder appears) that the base path has none, so a wrong
        --model-base-path or a model not pushed yet is not a silent wait."""
        empty = not versions and not unusable
        if empty and not self._empty_logged:
            log.warning("%s: no version folders (1, 2, ...) under %s yet: nothing to serve; "
                        "push a model there or check --model-base-path%s", self.name,
                        self.base.uri, "" if self.poll_seconds else
                        " (--poll-seconds 0: this server will not look again)")
        self._empty_logged = empty

    def _labels_in_force(self) -> dict[str, int]:
        """The labels file's labels, or, when it is not usable as it stands (LabelsError: not
        JSON, not {label: version}, unreadable), the last good ones read ({} if none was),
        with why in `labels_error`, logged once. Other errors (the store unreachable) raise:
        a failed poll, which changes nothing."""
        try:
            labels = self.base.labels()
        except LabelsError as exc:
            reason = _reason(exc)
            if reason != self.labels_error:
                log.warning("%s: ignoring the labels file: %s; %s", self.name, reason,
                            f"keeping the last good labels {self.labels}" if self.labels else
                            "no labels were read before it: as without labels")
            self.labels_error = reason
            return dict(self.labels)
        if self.labels_error is not None:
            log.info("%s: the labels file %s is usable again: %s", self.name,
                     self.base.labels_uri(), labels or "no labels")
            self.labels_error = None
        return labels

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
        self._set_unusable({n: r for n, r in unusable.items() if _rank(n) > served})
        with self._lock:
            for version in [v for v in self._failed if v <= served or v not in versions]:
                del self._failed[version]
        self._load_newest(v for v in versions if v > served)

    def _load_newest(self, candidates) -> int | None:
        """Load the newest of `candidates` that loads (skipping those waiting for their next
        attempt); its number, or None."""
        for version in sorted(candidates, reverse=True):
            failed = self._failed.get(version)
            if failed is not None and failed.waiting(self._clock()):
                continue
            if self._load(version):
                return version
        return None

    def _set_unusable(self, unusable: dict[str, str]) -> None:
        """The folders to report as skipped; each logged once, not at every poll."""
        for name, reason in sorted(unusable.items(), key=lambda item: _rank(item[0])):
            if self._unusable.get(name) != reason:
                log.warning("%s: skipped folder %s of %s: %s", self.name, name, self.base.uri,
                            reason)
        with self._lock:
            self._unusable = unusable

    def _consider_labels(self, versions: list[int], unusable: dict[str, str],
                         labels: dict[str, int]) -> None:
        """Load the labelled versions not loaded yet (champion first), then serve the champion
        by default; when it cannot be served, fall back (`_fall_back`)."""
        published = set(versions)
        champion = labels["champion"]
        wanted = [champion, *(v for k, v in sorted(labels.items())
                              if k != "champion" and v != champion)]
        reported = {n: r for n, r in unusable.items()
                    if number(n) is None or number(n) in wanted}  # None: never a version
        for label, version in labels.items():
            if version not in published and str(version) not in reported:
                reported[str(version)] = f"labelled {label!r} but not a published version"
        self._set_unusable(reported)
        for version in wanted:
            if version in self.loaded or version not in published:
                continue
            failed = self._failed.get(version)
            if failed is not None and failed.waiting(self._clock()):
                continue
            self._load(version)
        if champion in self.loaded and champion in published:
            with self._lock:
                for version in [v for v in self._failed if v not in wanted]:
                    del self._failed[version]  # a fallback's candidates: not tried any more
            self._settle(champion, None)
            return
        why = (f"the champion label names version {champion}, which "
               + ("is not published (any more)" if champion not in published else
                  f"does not load ({self.errors.get(champion, 'not loaded yet')})"))
        self._fall_back(versions, why)

    def _fall_back(self, versions: list[int], why: str) -> None:
        """Serve the best version that can be justified while the champion cannot be: the
        last good champion if it is still loaded, else the newest version that loads."""
        with self._lock:
            for version in [v for v in self._failed if v not in versions]:
                del self._failed[version]
        last = self._champion_served
        if last is not None and last in self.loaded:
            self._settle(last, f"{why}: serving the last good champion, version {last}")
            return
        newest = max(self.loaded, default=None)
        loaded = self._load_newest(v for v in versions if newest is None or v > newest)
        choice = loaded if loaded is not None else newest
        self._settle(choice, f"{why}: serving the newest version that loads, {choice}"
                     if choice is not None else f"{why}, and no other version loads")

    def _settle(self, default: int | None, fallback: str | None) -> list[int]:
        """Serve `default` by default (None: keep the version served), note why it is not the
        labels' champion (`fallback`, None when it is), and evict versions beyond KEEP that no
        label names; returns the evicted."""
        with self._lock:
            previous = self.current
            if default is not None and default in self.loaded:
                self.current = self.loaded[default]
            keep = set(self.labels.values()) | set(sorted(self.loaded)[-KEEP:])
            if self.current is not None:
                keep.add(self.current.version)
            evicted = sorted(v for v in self.loaded if v not in keep)
            for old in evicted:
                del self.loaded[old]
            self.fallback = fallback
            if fallback is None and self.current is not None:
                self._champion_served = self.current.version
        for old in evicted:
            self._drop_download(old)
        if self.current is not None and previous is not self.current and previous is not None:
            log.info("%s: default version %s (was %s)%s", self.name, self.current.version,
                     previous.version, " (the champion label)" if fallback is None else "")
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
                              if _rank(n) > version or ("champion" in self.labels
                                                        and _rank(n) != version)}
            skipped = sorted([*map(str, self._failed), *self._unusable], key=_rank)
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
        entries.sort(key=lambda s: _rank(s.version), reverse=True)
        return [s.describe(now) for s in entries]

    def status(self) -> dict[str, Any]:
        """What `/readyz` says: the model, the version served and the newer ones skipped; the
        labels in force, why the labels file is not used as it stands (`labels_error`) and why
        the default version is not the labels' champion (`fallback`), None when all is well."""
        with self._lock:
            current, loaded = self.current, sorted(self.loaded, reverse=True)
            labels, challenger = dict(self.labels), self.labels.get("challenger")
        state = ("AVAILABLE" if current else "LOADING" if self.polls == 0 else "UNAVAILABLE")
        out: dict[str, Any] = {"model": self.name, "base_path": self.base.uri, "state": state,
               "version": current.version if current else None, "loaded_versions": loaded,
               "skipped": self.skipped(), "polling_error": self._poll_error,
               "labels_error": self.labels_error, "fallback": self.fallback}
        if labels:
            out["labels"] = labels  # the challenger's share: none while it is not loaded
            out["canary_percent"] = self.canary_percent if challenger in loaded else 0.0
        return out

    def fallbacks(self) -> dict[str, bool]:
        """Which fallbacks are in force (the server's `conveyor_serving_labels_fallback`):
        `labels_file`, the labels file is not used as it stands; `champion`, the default
        version is not the champion the labels name (or there are no labels to name one)."""
        return {"labels_file": self.labels_error is not None, "champion": self.fallback is not None}

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
