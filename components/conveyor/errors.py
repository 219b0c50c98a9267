"""conveyor's exceptions.

Every error raised because of what a user gave (a table, a query, a file, a parameter) is an
`InputError`: its message names the culprit and what was expected, and the component that raised
it has written nothing. Components catch nothing else, so unexpected failures keep their traceback.
"""


class ConveyorError(Exception):
    """Base class of conveyor's own errors."""


class InputError(ConveyorError, ValueError):
    """Bad input: a parameter, table, query, file or column is not what was expected."""


class SourceNotFoundError(InputError):
    """A table, dataset, bucket or set of files that was named does not exist."""


class QueryError(InputError):
    """BigQuery rejected a query; the message includes BigQuery's own."""


class EmptyDataError(InputError):
    """A source, query result or split holds no rows."""


class SchemaError(InputError):
    """A column's type cannot be held by the Dataset contract, or files disagree on a schema."""


class TrainingError(InputError):
    """Training diverged (a NaN or infinite loss) on this data with these settings: the
    message names the likely cause. Deterministic: a retry would diverge again."""


class StackError(ConveyorError):
    """The local emulator stack could not be started, found or stopped."""


def one_line(exc: BaseException | None, limit: int = 300) -> str:
    """An exception as one log or message line: `Type: first line of its text`, whitespace
    collapsed and cut at `limit` characters. An OSError with a reason is `[Errno N] reason`
    alone, since the message that quotes it already names the path. The one spelling of "an
    exception as one line" in conveyor, so every message that quotes a cause reads the same."""
    if exc is None:
        return "none recorded"
    if isinstance(exc, OSError) and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(first) > limit:
        first = first[:max(limit - 3, 0)] + "..."
    return f"{type(exc).__name__}: {first}"


#: The most characters of a user's file or value that a message quotes (`excerpt`).
EXCERPT_CHARS = 40


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` quoted for a message, cut to `limit` characters ('...' marks a cut), control
    characters escaped. The one way a message quotes a user's value or a line of a user's file:
    a path or a value can name anything the task can read, so a message shows a short excerpt,
    never a whole line, value or file (RELIABILITY.md, "Nothing lost, nothing trusted")."""
    text = str(text)
    cut = len(text) > limit
    shown = repr(text[:max(limit - 3, 0)] if cut else text)
    return shown[:-1] + "..." + shown[-1] if cut else shown
