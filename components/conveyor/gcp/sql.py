"""BigQuery SQL that conveyor writes, safe by construction: table ids, column names between
backticks, query parameters and the one-statement rule for a user's query.

No parameter can smuggle SQL in: values travel as query parameters, names (project, dataset,
table, column, parameter names) are validated before they are put between backticks, and a
`query` must be one statement (a lexical scan, before anything is sent). Shared by ingest,
statistics, preflight, batch prediction and monitor, so each reads a source the same way.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from conveyor.errors import InputError, excerpt

#: A valid project id and dataset name (callers check staging datasets and projects too).
PROJECT_ID = re.compile(r"^[a-z][a-z0-9.:-]{0,127}$")
DATASET_NAME = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_TABLE = re.compile(r"^[\w\- ]{1,1024}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
_UNQUOTABLE = re.compile(r"[`\\\x00-\x1f\x7f]")


def check_identifier(name: str, parameter: str) -> str:
    """A column name safe to put in SQL between backticks, or an InputError."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise InputError(
            f"{parameter}: {name!r} is not a valid column name (letters, digits and '_', "
            "not starting with a digit)"
        )
    return name


def quote_column(name: str, where: str) -> str:
    """A column name of a source between backticks. BigQuery's flexible column names may hold
    spaces, quotes and other symbols, all inert between backticks; a backtick, a backslash or a
    control character (which could end or escape the quoting) is refused."""
    if not isinstance(name, str) or not name or _UNQUOTABLE.search(name):
        raise InputError(
            f"{where}: column {name!r} holds a backtick, backslash or control character, which "
            "conveyor does not put in SQL; rename it in a query, or give a split_key"
        )
    return f"`{name}`"


@dataclasses.dataclass(frozen=True)
class TableRef:
    project: str
    dataset: str
    table: str

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def sql(self) -> str:
        return f"`{self.project}.{self.dataset}.{self.table}`"


def parse_table_id(table_id: str, default_project: str, parameter: str = "table") -> TableRef:
    """`project.dataset.table` or `dataset.table`, each part validated (no SQL can hide in it)."""
    parts = table_id.strip().strip("`").split(".")
    if len(parts) < 2:
        raise InputError(f"{parameter}: {table_id!r} is not a table id "
                         "(expected project.dataset.table or dataset.table)")
    table, dataset = parts[-1], parts[-2]
    project = ".".join(parts[:-2]) or default_project
    if not PROJECT_ID.match(project):
        raise InputError(f"{parameter}: {project!r} in {table_id!r} is not a valid project id")
    if not DATASET_NAME.match(dataset):
        raise InputError(f"{parameter}: {dataset!r} in {table_id!r} is not a valid dataset name "
                         "(letters, digits and '_')")
    if not _TABLE.match(table):
        raise InputError(f"{parameter}: {table!r} in {table_id!r} is not a valid table name")
    return TableRef(project, dataset, table)


def single_statement(query: str) -> str:
    """`query` without its final ';', or an InputError when a second statement follows.

    A lexical scan of GoogleSQL: a ';' inside a string, a quoted identifier or a comment does not
    end the statement; comments and whitespace may follow the final one."""
    i, n, end = 0, len(query), None
    while i < n:
        c = query[i]
        if c == "#" or query.startswith("--", i):
            newline = query.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif query.startswith("/*", i):
            close = query.find("*/", i + 2)
            i = n if close < 0 else close + 2
        elif c in "'\"`":
            quote = c * 3 if c != "`" and query.startswith(c * 3, i) else c
            i += len(quote)
            while i < n and not query.startswith(quote, i):
                i += 2 if query[i] == "\\" else 1
            i += len(quote)
        else:
            if c == ";" and end is None:
                end = i
            elif end is not None and not c.isspace() and c != ";":
                raise InputError(
                    f"query: a second statement follows the ';' at character {end} "
                    f"({query[end:end + 40]!r}...); give a single SELECT query: conveyor reads "
                    "its result and runs nothing else")
            i += 1
    return (query if end is None else query[:end]).strip()


def bigquery_parameters(params: Mapping[str, Any] | None) -> list:
    """BigQuery query parameters from a mapping of name to value.

    Types follow the value: bool -> BOOL, int -> INT64, float -> FLOAT64 (a float with an integral
    value becomes INT64, because KFP's local runner turns ints inside dict parameters into
    floats), str -> STRING. For another type, give `{"type": "DATE", "value": "2024-01-01"}`.
    """
    from google.cloud import bigquery

    out = []
    for name, value in (params or {}).items():
        check_identifier(name, "query_parameters")
        if isinstance(value, Mapping):
            if set(value) != {"type", "value"}:
                raise InputError(f"query_parameters: {name!r} must be a plain value or "
                                 f"{{'type': ..., 'value': ...}}, got keys {sorted(value)}")
            out.append(bigquery.ScalarQueryParameter(name, str(value["type"]).upper(),
                                                     value["value"]))
        elif isinstance(value, bool):
            out.append(bigquery.ScalarQueryParameter(name, "BOOL", value))
        elif isinstance(value, int):
            out.append(bigquery.ScalarQueryParameter(name, "INT64", value))
        elif isinstance(value, float):
            kind = "INT64" if value.is_integer() else "FLOAT64"
            out.append(bigquery.ScalarQueryParameter(name, kind, int(value) if kind == "INT64"
                                                     else value))
        elif isinstance(value, str):
            out.append(bigquery.ScalarQueryParameter(name, "STRING", value))
        else:
            raise InputError(f"query_parameters: {name!r} has a value of type "
                             f"{type(value).__name__}; use bool, int, float, str or "
                             "{'type': ..., 'value': ...}")
    return out


#: A position in BigQuery's messages: `at [3:14]` (real BigQuery and the emulator), and the
#: emulator's `Line 3, Col: 14`.
_POSITION = re.compile(r"\[(\d+):(\d+)\]|Line (\d+), Col: (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclasses.dataclass(frozen=True)
class WrappedQuery:
    """A user's query inside SQL conveyor wrote around it (`SELECT * FROM (\\n<query>\\n)`), and
    where it sits there, so that the position of an error BigQuery reports in the whole SQL is
    reported in the user's own text: `at [2:13]` of the wrapper is line 1, column 13 of the
    query as the user wrote it (leading blank lines and a final ';' included)."""

    sql: str
    given: str      # the query as the user gave it
    start: int      # where the statement starts in `sql`
    lead: int       # where the statement starts in `given` (after leading whitespace)
    length: int     # the statement's length

    def explain(self, message: str) -> str:
        """BigQuery's `message` about `sql`, its positions moved into the user's text, the
        emulator's echo of the wrapper SQL left out, and the user's line quoted (short):
        `Syntax error: ... at [1:13]; at line 1, column 13 of the query: 'SELEC id FROM t'`."""
        text = _first_lines(message)
        found: list[tuple[int, int] | None] = []

        def move(match: re.Match) -> str:
            line, column = (int(g) for g in match.groups() if g is not None)
            here = self.position(line, column)
            found.append(here)
            if here is None:
                return match.group(0) + " (of the SQL conveyor wraps around the query)"
            if match.group(1) is not None:
                return f"[{here[0]}:{here[1]}]"
            return f"Line {here[0]}, Col: {here[1]}"

        text = _POSITION.sub(move, text)
        first = next((p for p in found if p is not None), None)
        if first is None:
            return text
        line, column = first
        shown = self.given.split("\n")[line - 1]
        start = max(0, column - 1 - 20)
        quoted = ("..." if start else "") + excerpt(shown[start:])
        return f"{text.rstrip('. ')}; at line {line}, column {column} of the query: {quoted}"

    def position(self, line: int, column: int) -> tuple[int, int] | None:
        """(line, column) in `given` of (line, column) in `sql`, both 1-based; a position past
        the statement's end is its end (the query stopped early); None if before its start."""
        lines = self.sql.split("\n")
        if not 1 <= line <= len(lines):
            return None
        offset = sum(len(x) + 1 for x in lines[:line - 1]) + max(column, 1) - 1
        inside = offset - self.start
        if inside < 0:
            return None
        at = self.lead + min(inside, self.length)
        before = self.given.rfind("\n", 0, at)
        return self.given.count("\n", 0, at) + 1, at - before


def wrap_query(before: str, statement: str, after: str, given: str | None = None) -> WrappedQuery:
    """`before + statement + after`, remembering where `statement` (`single_statement(given)`)
    sits in it and in `given` (default: the statement itself)."""
    given = statement if given is None else given
    lead = given.find(statement) if statement else 0
    return WrappedQuery(before + statement + after, given, len(before), max(lead, 0),
                        len(statement))


def error_message(exc: BaseException, wrapped: WrappedQuery | None = None) -> str:
    """BigQuery's own message in a google-api-core error (its first error's, without the
    request's URL); with `wrapped`, its positions moved into the user's query
    (`WrappedQuery.explain`)."""
    errors = getattr(exc, "errors", None) or []
    if errors and isinstance(errors[0], dict) and errors[0].get("message"):
        text = str(errors[0]["message"])
    else:
        text = (str(getattr(exc, "message", exc)).splitlines() or [""])[0]
    return wrapped.explain(text) if wrapped is not None else text


def _first_lines(message: str) -> str:
    """BigQuery's message on one line, without the emulator's echo of the SQL it ran: its
    message goes on with the SQL after `Line L, Col: C.` (a parse error) or from `LINE 1:`
    (DuckDB's), which is conveyor's wrapper, not the user's text."""
    kept = []
    for line in _ANSI.sub("", message).splitlines():
        if re.match(r"\s*LINE \d+:", line):
            break
        kept.append(line.strip())
        if re.search(r"Line \d+, Col: \d+\.?\s*$", line):
            break
    return " ".join(k for k in kept if k)
