"""Scratch folders claimed by a process (`conveyor.serving.leftovers`): a process killed with
SIGKILL leaves its folder; the next claim in the same place removes it, and never a live
process's. Real child processes, really killed."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor.serving.leftovers import claim, sweep
from conveyor.serving.prediction_log import PredictionLog

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from conveyor.serving.leftovers import claim
    c = claim(Path(sys.argv[1]), sys.argv[2], "test folder")
    (c.path / "half-written.tmp").write_bytes(b"x" * 1000)
    print(c.path, flush=True)
    time.sleep(600)
""")


@pytest.fixture()
def children():
    """start(parent, stem) -> (process, its claimed folder); all killed at the end."""
    started: list[subprocess.Popen] = []

    def start(parent: Path, stem: str) -> tuple[subprocess.Popen, Path]:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(parent), stem],
                                stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        started.append(proc)
        line = proc.stdout.readline().strip()
        assert line, "the child did not claim a folder"
        return proc, Path(line)

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def test_a_killed_owners_folder_is_swept_and_a_live_ones_is_kept(tmp_path, children, caplog):
    dead, dead_folder = children(tmp_path, "conveyor-serve-")
    live, live_folder = children(tmp_path, "conveyor-serve-")
    kill9(dead)
    assert (dead_folder / "half-written.tmp").exists()  # what SIGKILL leaves behind
    foreign = tmp_path / "conveyor-serve-made-by-someone-else"  # no lock file: never ours
    foreign.mkdir()
    with caplog.at_level(logging.INFO, logger="conveyor.serve"):
        mine = claim(tmp_path, "conveyor-serve-", "download cache")
    assert not dead_folder.exists() and not Path(f"{dead_folder}.lock").exists()
    assert f"removed {dead_folder}: the download cache of a process that died" in caplog.text
    assert "(1 files)" in caplog.text
    assert (live_folder / "half-written.tmp").exists() and live.poll() is None
    assert foreign.is_dir() and mine.path.is_dir()
    assert sweep(tmp_path, "conveyor-serve-", "download cache") == []  # both owners alive
    mine.release()
    mine.release()  # twice is harmless
    assert not mine.path.exists() and not Path(f"{mine.path}.lock").exists()
    kill9(live)
    assert sweep(tmp_path, "conveyor-serve-", "download cache") == [live_folder]
    assert sorted(p.name for p in tmp_path.iterdir()) == [foreign.name]


def test_a_new_process_with_the_dead_ones_pid_still_sweeps_it(tmp_path):
    """Containers restart with the same pid (1): the lock, not the number, tells them apart."""
    folder = tmp_path / f"conveyor-serve-{os.getpid()}-0123456789ab"
    folder.mkdir()
    (folder / "1").mkdir()
    Path(f"{folder}.lock").write_bytes(b"")  # its owner's lock went with the owner
    assert sweep(tmp_path, "conveyor-serve-", "download cache") == [folder]
    assert not any(tmp_path.iterdir())


def test_the_prediction_log_sweeps_a_killed_writers_temporary_file(tmp_path, children):
    prefix = tmp_path / "log"
    dead, dead_folder = children(prefix / ".conveyor-tmp", "writer-")
    live, live_folder = children(prefix / ".conveyor-tmp", "writer-")
    kill9(dead)
    plog = PredictionLog(str(prefix))
    plog.check()
    assert not dead_folder.exists()
    assert (live_folder / "half-written.tmp").exists()
    plog.close()
    kill9(live)
    plog = PredictionLog(str(prefix))
    plog.check()
    plog.close()
    assert not (prefix / ".conveyor-tmp").exists()  # emptied by the last user, then removed
