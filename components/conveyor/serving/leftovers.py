"""Scratch folders a process owns while it lives, and the sweep that removes a dead one's.

`conveyor serve` keeps two kinds of scratch files: the versions it downloads from a gs:// base
path (a folder in TMPDIR) and the prediction log's files while they are written (locally: a
folder under the log's prefix, renamed into place when whole). A clean stop removes them; a
process killed with `kill -9` (or by the OOM killer) cannot, and a folder of model copies left
in TMPDIR by every crash fills the disk.

So each such folder is *claimed*: beside `<parent>/<stem><pid>-<hex>/` lies
`<parent>/<stem><pid>-<hex>.lock`, held with `fcntl.flock` for as long as the owner lives. The
kernel drops that lock when the process dies, however it dies, and only then, so at start a
process removes every folder of the same stem whose lock it can take (`sweep`, logged), and
never a live process's: another `conveyor serve` on the same TMPDIR or log folder keeps its
files. The pid in the name is for people reading a listing; a new process with the same pid
(pid 1 in every container) is told apart by the lock, not by the number. A folder without its
lock file (made by another program, or by a version of conveyor from before the locks) is never
touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from pathlib import Path

log = logging.getLogger("conveyor.serve")

LOCK = ".lock"


class Claim:
    """A folder owned by this process while its lock file is held (see the module)."""

    def __init__(self, folder: Path, lock_fd: int):
        self.path = folder
        self.lock_path = folder.with_name(folder.name + LOCK)
        self._fd: int | None = lock_fd

    def release(self) -> None:
        """Remove the folder and its lock file (a clean stop); safe to call twice."""
        if self._fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        self.abandon()

    def abandon(self) -> None:
        """Let go of the lock and leave the files: the folder is no longer where it was (moved
        with its parent); a sweep where it now lies removes it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def claim(parent: Path, stem: str, what: str) -> Claim:
    """Sweep `parent` of dead owners' `stem` folders, then make and claim a new one.

    `what` names the folders in the sweep's log line ("download cache", ...)."""
    parent.mkdir(parents=True, exist_ok=True)
    sweep(parent, stem, what)
    while True:
        folder = parent / f"{stem}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        lock_path = folder.with_name(folder.name + LOCK)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # the parent was removed meanwhile (emptied by its last user)
            parent.mkdir(parents=True, exist_ok=True)
            continue
        # A sweep may take the lock between the create and the flock (the file is unlocked for
        # that moment) and unlink it: then this name is lost; take another.
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _same_file(lock_path, fd):
            folder.mkdir(mode=0o700)
            return Claim(folder, fd)
        os.close(fd)


def sweep(parent: Path, stem: str, what: str) -> list[Path]:
    """Remove the `stem` folders (and lock files) under `parent` whose owner is dead; the
    folders removed. Folders of live owners, and of other users, are left alone."""
    removed = []
    for lock_path in sorted(parent.glob(f"{stem}*{LOCK}")):
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, or not ours to open
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: its owner is alive
                continue
            if not _same_file(lock_path, fd):  # another sweep removed it meanwhile
                continue
            folder = lock_path.with_name(lock_path.name[:-len(LOCK)])
            files = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                log.warning("could not remove %s (the %s of a process that died); remove it "
                            "by hand", folder, what)
                continue
            lock_path.unlink()
            removed.append(folder)
            log.info("removed %s: the %s of a process that died without cleaning up (%d "
                     "files)", folder, what, files)
        finally:
            os.close(fd)
    return removed


def _same_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd` (not unlinked, not replaced)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
