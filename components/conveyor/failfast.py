"""Bad input fails a task once: its retries end at once instead of redoing the work.

KFP's `set_retry` (and Vertex AI's retry policy) re-runs a failed task whatever failed, and has
no way to retry on some errors only. conveyor's pipelines keep task retries for what they are
for (a preempted node, a crashed process, a cloud outage longer than the in-task retries of
`conveyor.gcp.retry`), and make a deterministic failure final: when a task body raises one of
conveyor's `InputError`s (bad table, column, parameter or value; a `TrainingError`), it records
the error in a marker file beside its first output artifact, whose path is the same on every
attempt of the task (KFP hands a retry the same executor input). A retry finds the marker and
fails at once with the same error class and message, before any work or heavy import, so the run
ends seconds after the first failure (with the pipelines' 2 s, 4 s backoff) rather than after
the full work and the backoff of every attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from conveyor import errors

MARKER_SUFFIX = ".conveyor-failed.json"


def marker(artifact_path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(artifact_path).rstrip('/')}{MARKER_SUFFIX}")


@contextlib.contextmanager
def fail_once(artifact_path: str | os.PathLike[str], task: str) -> Iterator[None]:
    """Run a task body; an InputError is recorded beside `artifact_path` and re-raised, and a
    later attempt that finds the record raises it again without running the body."""
    path = marker(artifact_path)
    if path.exists():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        cls = getattr(errors, str(record.get("type", "")), None)
        if not (isinstance(cls, type) and issubclass(cls, errors.InputError)):
            cls = errors.InputError
        raise cls(f"{record.get('message', 'failed on bad input')} [{task}: not retried; an "
                  "earlier attempt failed on this input, which a retry cannot change]")
    try:
        yield
    except errors.InputError as exc:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"type": type(exc).__name__, "message": str(exc),
                                        "task": task}))
        except OSError:
            pass  # a read-only or vanished output folder: the retry will simply redo the work
        raise
