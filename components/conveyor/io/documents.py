"""YAML or JSON documents read from a path a user gave: a validation suite, a feature spec.

`read_mapping(path, kind, keys)` is the one reader of such files. Every failure is an
`InputError` naming the file and what was wrong (cannot be read, not a regular file, too big,
not text, not YAML or JSON at line L column C, not a mapping, not a `kind` at all), and
never quotes more of the file than a short excerpt (`conveyor.errors.excerpt`), and that only for
a file that looks like a `kind`.

Why so careful: a path can name any file the task can read, a system file only root may read
included. yaml's exceptions quote the lines around an error, and a file that happens to parse
(`/etc/shadow` is a YAML mapping: each line is a key) would have its lines listed by a
validation message ("unknown key(s) [...]"). An error is printed to the console, written to the
task's log and kept in the fail-fast marker, so quoting the file would copy its content to
wherever those go. Hence:
- a file that is not text (a NUL byte, not UTF-8) is refused before any parsing;
- a parse error gives the line, the column and yaml's description of the problem; the line is
  quoted (at most `EXCERPT_CHARS` around the column) only when some line of the file starts
  with one of the `kind`'s keys (`label:`, `"columns":`, ...), i.e. the file looks like one;
- a document that is not a mapping, or a mapping none of whose top-level keys is one of `keys`,
  is "not a `kind`", its content not shown. Only a mapping holding at least one of them reaches
  the caller's own validation, whose messages may then name its keys and values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from conveyor.errors import EXCERPT_CHARS, InputError, excerpt, one_line
from conveyor.gcp.files import uri_of

#: Larger files are refused unread: a suite or a spec is a few kB, a wide one a few MB.
MAX_BYTES = 32 << 20


def read_mapping(path: str | Path, kind: str, keys: Sequence[str], *,
                 name: str | None = None) -> dict[str, Any]:
    """The mapping a YAML or JSON file holds, or an InputError (module docstring).

    `kind` names the document in messages ("suite", "feature spec"); `keys` are the top-level
    keys a `kind` may have, at least one of which it must have; `name` is how messages name the
    file (default: the gs:// URI a local copy was downloaded from, else the path)."""
    shown = name or uri_of(path)
    text = _read_text(Path(path), kind, shown)
    try:
        loaded = yaml.safe_load(text)  # YAML is a superset of JSON
    except RecursionError:
        raise InputError(f"{kind}: {shown} nests too deeply to be a {kind}") from None
    except Exception as exc:  # yaml.YAMLError and its kinds; the message is built here
        raise InputError(_parse_error(exc, text, kind, shown, keys)) from None
    if not isinstance(loaded, dict):
        raise InputError(f"{kind}: {shown} holds {_what(loaded)}, not a mapping; a {kind} is a "
                         f"YAML or JSON mapping with keys such as {', '.join(keys[:3])}")
    if not any(isinstance(key, str) and key in keys for key in loaded):
        raise InputError(
            f"{kind}: {shown} is not a {kind}: none of its {len(loaded)} top-level key(s) is one "
            f"of {', '.join(keys)} (its content is not shown)")
    return loaded


def _read_text(path: Path, kind: str, shown: str) -> str:
    """The file's text: refused when it cannot be read, is not a regular file (a folder, a
    device, a pipe: reading /dev/zero would never end), is too big, or is not UTF-8 text."""
    try:
        if path.exists() and not path.is_file():
            raise InputError(f"{kind}: {shown} is not a regular file; a {kind} is a YAML or "
                             "JSON file")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{kind}: cannot read {shown}: {one_line(exc)}") from None
    if len(data) > MAX_BYTES:
        raise InputError(f"{kind}: {shown} is over {MAX_BYTES >> 20} MiB; a {kind} is a small "
                         "YAML or JSON file")
    if b"\x00" in data:
        raise InputError(f"{kind}: {shown} is not a text file (it holds NUL bytes); a {kind} is "
                         "a YAML or JSON file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{kind}: {shown} is not UTF-8 text (byte {exc.start} is not); a {kind} "
                         "is a YAML or JSON file in UTF-8") from None


def _looks_like(text: str, keys: Sequence[str]) -> bool:
    """Whether a line starts with one of `keys` as a mapping key: `label:`, `"label": `,
    `{"label":`."""
    names = "|".join(re.escape(k) for k in keys)
    return re.search(rf"^[ \t]*[{{,]?[ \t]*[\"']?(?:{names})[\"']?[ \t]*:", text, re.M) is not None


def _parse_error(exc: Exception, text: str, kind: str, shown: str, keys: Sequence[str]) -> str:
    """A parse error: the line and column, and (for a file that looks like a `kind`) yaml's
    words for the problem and its context with an excerpt of the line concerned; never yaml's
    own message, which quotes the lines around the error."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    head = f"{kind}: {shown} is neither YAML nor JSON{where}"
    if not _looks_like(text, keys):
        return (f"{head}, and no line starts with a {kind} key ({', '.join(keys[:3])}...): "
                "its content is not shown")
    lines = text.splitlines()
    problem = _words(getattr(exc, "problem", None)) or type(exc).__name__
    out = f"{head}: {problem}"
    quoted = _line_at(lines, mark)
    context, opened = _words(getattr(exc, "context", None)), getattr(exc, "context_mark", None)
    if context and opened is not None and opened is not mark:
        out += f" ({context} at line {opened.line + 1}, column {opened.column + 1}"
        out += f": {_line_at(lines, opened)})" if _line_at(lines, opened) else ")"
    if quoted:
        out += f": {quoted}"
    return out


def _words(text: str | None) -> str:
    """yaml's description of a problem, on one line and short."""
    return " ".join(str(text or "").split())[:80]


def _line_at(lines: list[str], mark: Any) -> str:
    """An excerpt of the line a yaml mark points at, around its column; '' for none."""
    if mark is None or mark.line >= len(lines) or not lines[mark.line].strip():
        return ""
    start = max(0, mark.column - EXCERPT_CHARS // 2)
    return ("..." if start else "") + excerpt(lines[mark.line][start:])


def _what(value: Any) -> str:
    """What a parsed document is, in words, without its content."""
    if value is None:
        return "nothing (it is empty)"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, str):
        return f"a single text of {len(value)} character(s)"
    return f"a single {type(value).__name__} value"
