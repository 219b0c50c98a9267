"""Version numbers, the files and markers of a model base path, and what a publish reports.

Numbers. A version's folder name is ASCII digits in canonical form (`7`, not `07` or `²`),
at most 2^63 - 1 (TensorFlow Serving reads it as an int64). Any other all-digit name (`١`, `²`,
`007`, `99999999999999999999`) is never a version; `not_a_version` says why, for the log.
Every numeric folder counts when a number is chosen, published by conveyor or not: a publish
takes the next number above every numeric folder, never writes into an existing one, and reports
the numbers it skipped because of folders conveyor did not publish (`Publication.skipped`), such
as a version copied by hand, which TensorFlow Serving would serve (it lists folders itself).
"""

from __future__ import annotations

import dataclasses
import os
import re

from conveyor.errors import ConveyorError, InputError

MARKERS = ".conveyor"
GRAPH = "saved_model.pb"
LOCK = ".conveyor-publish.lock"
STAGING = ".staging-"
ASSETS_EXTRA = "assets.extra"  # the SavedModel's extra files: transform.json, statistics...
HEARTBEAT = 5.0  # seconds between rewrites of a live writer's claim
LEASE_ENV = "CONVEYOR_PUBLISH_LEASE"
DEFAULT_LEASE = 30.0  # seconds without a heartbeat after which a claim is abandoned

_NUMERIC = re.compile(r"[0-9]+")
INT64_MAX = 2**63 - 1  # the largest version number: TensorFlow Serving's versions are int64


class UntrustedVersion(InputError):
    """A version whose commit marker or files cannot be trusted: a file path that would land
    outside the version's folder, or a file whose SHA-256 is not the one recorded. It never
    serves; a server keeps the version it has."""


_HEX64 = re.compile(r"[0-9a-f]{64}")


def confined_path(rel: object, where: str) -> str:
    """`rel` if it is a plain relative path inside a version's folder ('/'-separated parts,
    none empty, '.' or '..'), else `UntrustedVersion`: an absolute path, a '..' part, a
    backslash, a NUL or other control character, a drive letter, an empty path."""
    problem = None
    if not isinstance(rel, str) or not rel:
        problem = "not a non-empty string"
    elif rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        problem = "an absolute path"
    elif "\\" in rel:
        problem = "holds a backslash"
    elif any(ord(c) < 32 or ord(c) == 127 for c in rel):
        problem = "holds a NUL or control character"
    elif any(part in ("", ".", "..") for part in rel.split("/")):
        problem = "has an empty, '.' or '..' part"
    if problem:
        raise UntrustedVersion(f"{where}: file {rel!r} is {problem}; refusing the version")
    assert isinstance(rel, str)  # checked first above
    return rel


def trusted_manifest(marker: dict, where: str) -> tuple[list[str], dict[str, str] | None]:
    """The files of a commit marker, each confined (`confined_path`), and their recorded
    SHA-256 (None for a version committed before manifests recorded hashes). Raises
    `UntrustedVersion` for a list or hashes that cannot be a version's."""
    files = marker.get("files")
    if not isinstance(files, list):
        raise UntrustedVersion(f"{where}: 'files' is not a list; refusing the version")
    files = [confined_path(rel, where) for rel in files]
    if len(set(files)) != len(files):
        raise UntrustedVersion(f"{where}: a file is listed twice; refusing the version")
    folders = {"/".join(rel.split("/")[:i]) for rel in files
               for i in range(1, rel.count("/") + 1)}
    if folders & set(files):
        raise UntrustedVersion(f"{where}: {sorted(folders & set(files))} listed both as a file "
                               "and as a folder; refusing the version")
    hashes = marker.get("sha256")
    if hashes is None:
        return files, None
    if (not isinstance(hashes, dict) or set(hashes) != set(files)
            or not all(isinstance(h, str) and _HEX64.fullmatch(h) for h in hashes.values())):
        raise UntrustedVersion(f"{where}: 'sha256' does not give one SHA-256 for each listed "
                               "file; refusing the version")
    return files, hashes


class ConflictError(ConveyorError):
    """Another writer committed a version this writer had claimed (markers tampered with)."""


class PublishError(ConveyorError):
    """The version could not be written (disk full, read-only folder); nothing was published."""


class StaleBaseline(ConveyorError):
    """Another run published a version after this model was evaluated against its baseline."""

    def __init__(self, published: int | None, baseline: int | None):
        self.published, self.baseline = published, baseline
        against = f"against v{baseline}" if baseline else "without a baseline"
        if published is not None and published > (baseline or 0):
            message = (f"push: another run published v{published} after this model was "
                       f"evaluated {against}; re-run evaluate")
        else:  # the baseline is gone (or was never committed)
            message = (f"push: the model was evaluated {against}, which is not the newest "
                       f"published version (newest: {f'v{published}' if published else 'none'})"
                       "; re-run evaluate")
        super().__init__(message)



@dataclasses.dataclass
class Publication:
    version: int
    new: bool = True  # False: an identical model was (or was being) published as `version`
    skipped: list[int] = dataclasses.field(default_factory=list)  # folders conveyor did not write


def number(name: str) -> int | None:
    """The number a folder name stands for in TensorFlow Serving's eyes (ASCII digits, within
    int64), else None. `²` and `٣` are not numbers here (str.isdigit says they are; int() reads
    `٣` as 3), nor is a number past int64 (TensorFlow Serving cannot parse it)."""
    if not _NUMERIC.fullmatch(name):
        return None
    value = int(name.lstrip("0") or "0") if len(name.lstrip("0")) <= 19 else None
    return value if value is not None and value <= INT64_MAX else None


def canonical(name: str) -> int | None:
    """The version a folder name is when conveyor publishes it: `7`, not `007`."""
    n = number(name)
    return n if n is not None and str(n) == name else None


def not_a_version(name: str) -> str | None:
    """Why a folder whose name is all digits (of any script) is not a version folder, for the
    log; None for a version's name (`7`) and for a name that is not all digits (`labels.json`,
    `5.tmp`: not a version, nothing worth saying)."""
    if canonical(name) is not None or not name.isdigit():
        return None
    shown = repr(name) if len(name) <= 30 else f"{name[:24]!r}... ({len(name)} digits)"
    if not name.isascii():
        return (f"folder name {shown} is not a version number: only ASCII digits are "
                "(TensorFlow Serving reads no other)")
    n = number(name)
    if n is None:
        return (f"folder name {shown} is past the largest version number, {INT64_MAX} "
                "(TensorFlow Serving reads versions as int64)")
    return (f"folder name {shown} is not a version number as conveyor and `push` write it "
            f"(version {n} is the folder '{n}')")


def check_room(version: int, uri: str) -> int:
    """`version` if it is still a version number (not past int64), else PublishError: a folder
    named 9223372036854775807 leaves no number to publish under."""
    if version > INT64_MAX:
        raise PublishError(f"model_base_path: {uri} has a folder numbered {INT64_MAX}, the "
                           "largest version number; no version can be published after it")
    return version


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease() -> float:
    try:
        return float(os.environ.get(LEASE_ENV, DEFAULT_LEASE))
    except ValueError:
        raise InputError(
            f"{LEASE_ENV}: {os.environ[LEASE_ENV]!r} is not a number of seconds") from None



def check_baseline(baseline: int | None, latest: int | None) -> None:
    """StaleBaseline unless `baseline` (None: not checked) is still the newest version."""
    if baseline is not None and (latest or 0) != baseline:
        raise StaleBaseline(latest, baseline)
