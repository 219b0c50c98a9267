"""Publishing on a local folder.

The model is copied into `<base>/.staging-<pid>-<id>-<host>/`, then, holding an
exclusive `flock` on `<base>/.conveyor-publish.lock` (released by the kernel when its holder
dies), renamed to `<base>/<v>`. rename(2) is atomic, so a reader sees no version or all of it.
A conveyor version is a canonical numeric folder holding `saved_model.pb`. Under the lock, the
checks below (same model, baseline) and the rename are one atomic step. A staging copy that
fails (disk full, a read-only folder) is removed and raises one `PublishError` line naming the
path and the cause; a killed publish's staging folder (not a number: no reader takes it for a
version) is removed by the next publish on the same host once its process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import uuid
from pathlib import Path

from conveyor.errors import one_line
from conveyor.io.location import Location
from conveyor.registry.labels import LABELS
from conveyor.registry.store import Store
from conveyor.registry.versions import (
    LOCK,
    STAGING,
    Publication,
    PublishError,
    alive,
    check_baseline,
    check_room,
    number,
)

# Copies one file into the staging folder; a module attribute so a test can make it fail.
_copy_file = shutil.copy2


class LocalStore(Store):
    """ModelBasePath's local-folder half: staging, the publish lock, the rename."""

    def _publish_local(self, model_dir: Path, hashes: dict, dedupe: bool,
                       baseline: int | None) -> Publication:
        base = Path(self.uri)
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishError(f"model_base_path: cannot create the folder {base}: "
                               f"{one_line(exc)}") from None
        staging = base / f"{STAGING}{os.getpid()}-{uuid.uuid4().hex[:12]}-{socket.gethostname()}"
        try:
            self._stage(model_dir, staging)
            with self._locked(base):
                self._remove_dead_staging(base)
                latest = self.latest()
                if dedupe and latest is not None and self.manifest(latest) == hashes:
                    return Publication(latest, new=False)
                check_baseline(baseline, latest)
                version, skipped = self._next_local(base)
                check_room(version, self.uri)
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
                                           f": {one_line(exc)}") from None
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
            raise PublishError(f"model_base_path: cannot write {current}: {one_line(exc)}; "
                               "nothing was published") from None

    @staticmethod
    @contextlib.contextmanager
    def _locked(base: Path):
        try:
            fd = os.open(base / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PublishError(f"model_base_path: cannot open the lock {base / LOCK}: "
                               f"{one_line(exc)}") from None
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
                    and not alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)

    def _next_local(self, base: Path) -> tuple[int, list[int]]:
        """The number above every numeric folder, and the numeric folders above the latest
        version that are not versions (no saved_model.pb, or a non-canonical name)."""
        numbers = {n for p in base.iterdir() if (n := number(p.name)) is not None}
        published = set(self.versions())
        top = max(published, default=0)
        return max(numbers, default=0) + 1, sorted(n for n in numbers - published if n > top)


    @staticmethod
    def _write_local_labels(base: Path, labels: dict[str, int]) -> None:
        """Write (or, empty, remove) the labels file whole: readers see the old or the new."""
        target = base / LABELS
        if not labels:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return
        try:
            Location.parse(target).write_text(json.dumps(labels, sort_keys=True),
                                              content_type="application/json")
        except OSError as exc:
            raise PublishError(f"labels: cannot write {target}: {one_line(exc)}") from None
