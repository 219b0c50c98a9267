"""The rules of batch prediction's output table: writing must never destroy data it did not create.

Checked before any prediction work (seconds, not the length of a run), each refusal an
`InputError` naming the table or the columns and what to do:

- the output may not be the input: the Dataset's source table, or a table its query reads
  (ids compared after filling in the default project and dropping backticks, in any case);
- `write_mode` says what happens when the output table exists: "create" (the default) refuses
  an existing table; "append" adds the rows to an existing table whose columns (names and types)
  are the output's (creating the table when there is none yet), and refuses one whose columns
  differ, naming them; "replace" replaces the
  table, and only when asked for by name;
- no two output columns may share a name, in BigQuery's sense (case-insensitive): a passthrough
  column named like a prediction column (`value`, `class_label`, `model_version`...) or two class
  names that map to the same `probability_<class>` column are refused, naming them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.errors import InputError
from conveyor.gcp.sql import TableRef, parse_table_id

#: What to do with an existing output table; the first is the default.
WRITE_MODES = ("create", "append", "replace")

_SQL_TYPES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "NUMERIC": "NUMERIC"}
_DOTTED = re.compile(r"[A-Za-z0-9_\-:.]+\.[A-Za-z0-9_\-]+")


def check_write_mode(value: Any) -> list[str]:
    """The problems with a `write_mode` value (for `conveyor run`'s checks before anything
    starts, and for the step itself)."""
    from conveyor.params import one_of

    problem = one_of("write_mode", value, WRITE_MODES)
    return [problem] if problem else []


def column_name(value: str) -> str:
    """A class name as a column name suffix (BigQuery: letters, digits and '_')."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(value))


def prediction_columns(task: str, classes: Sequence[str]) -> list[tuple[str, str]]:
    """The columns the model's predictions fill, in output order (after the passthrough), each
    with what it holds."""
    if task == "binary":
        names = [(n, "") for n in ("probability", "class", "class_label")]
    elif task == "multiclass":
        names = [("class_id", ""), ("class_label", "")] + [
            (f"probability_{column_name(c)}", f" (class {c!r})") for c in classes]
    else:
        names = [("value", "")]
    return names + [("model_version", "")]


def key_columns(excluded: Mapping[str, str], columns: Sequence[str], task: str,
                classes: Sequence[str]) -> list[str]:
    """The columns batch prediction carries when no passthrough is asked for: those the model's
    feature spec left out because they identify rows (ids, keys), present in `columns` and not
    named like a prediction column, so every output row joins back to its input row."""
    taken = {name.casefold() for name, _ in prediction_columns(task, classes)}
    present = set(columns)
    return [name for name, why in excluded.items()
            if "identifies rows" in str(why) and name in present and name.casefold() not in taken]


def check_columns(passthrough: Sequence[str], task: str, classes: Sequence[str]) -> None:
    """Refuse output columns that share a name (BigQuery column names ignore case): one of them
    would silently overwrite the other."""
    owners: dict[str, list[str]] = {}
    for name in passthrough:
        owners.setdefault(name.casefold(), []).append(f"passthrough column {name!r}")
    for name, holds in prediction_columns(task, classes):
        owners.setdefault(name.casefold(), []).append(f"prediction column {name!r}{holds}")
    clashes = [" and ".join(v) for v in owners.values() if len(v) > 1]
    if clashes:
        raise InputError(
            "batch_predict: output columns would share a name (BigQuery column names ignore "
            f"case): {'; '.join(clashes)}. Leave the passthrough column out or rename it in a "
            "query (SELECT value AS input_value, ...)")


def source_tables(source: Mapping[str, Any], default_project: str) -> list[TableRef]:
    """The tables a Dataset was read from: its source table, or every table id its query text
    names (a conservative lexical scan: anything dotted that parses as a table id counts)."""
    if source.get("table"):
        return [parse_table_id(str(source["table"]), default_project, "input table")]
    found = []
    for token in _DOTTED.findall(str(source.get("query") or "").replace("`", "")):
        try:
            found.append(parse_table_id(token, default_project, "query"))
        except InputError:
            continue
    return found


def check_not_input(target: TableRef, source: Mapping[str, Any], default_project: str) -> None:
    """Refuse an output table that is the input table (or a table the input query reads)."""
    def key(ref: TableRef) -> tuple[str, ...]:
        return (ref.project.casefold(), ref.dataset.casefold(), ref.table.casefold())

    if any(key(ref) == key(target) for ref in source_tables(source, default_project)):
        raise InputError(
            f"output_table: {target} is the table the rows are read from; writing the "
            "predictions there would destroy the input. Name another output_table")


def schema_differences(existing: Sequence[Any], wanted: Sequence[Any]) -> list[str]:
    """How an existing table's columns differ from the output's (BigQuery SchemaFields), one
    line per column; empty when the output can be appended."""
    def columns(fields: Sequence[Any]) -> dict[str, tuple[str, str]]:
        return {f.name.casefold(): (f.name, _SQL_TYPES.get(f.field_type.upper(),
                                                          f.field_type.upper()))
                for f in fields}

    have, want = columns(existing), columns(wanted)
    out = [f"{want[k][0]} ({want[k][1]}) is not in the table" for k in want if k not in have]
    out += [f"{have[k][0]} ({have[k][1]}) is in the table, not in the output"
            for k in have if k not in want]
    out += [f"{want[k][0]} is {have[k][1]} in the table, {want[k][1]} in the output"
            for k in want if k in have and have[k][1] != want[k][1]]
    return out


def check_existing(existing: Any, target: TableRef, write_mode: str,
                   wanted: Sequence[Any]) -> None:
    """Refuse to write over `existing` (a BigQuery Table, or None when there is none) unless
    `write_mode` allows it."""
    problems = check_write_mode(write_mode)
    if problems:
        raise InputError(problems[0])
    if existing is None or write_mode == "replace":
        return
    if write_mode == "create":
        raise InputError(
            f"output_table: {target} already exists and write_mode is 'create', which never "
            "writes over a table. Name a new table, or give write_mode='append' to add the "
            "predictions to it (same columns), or write_mode='replace' to replace it")
    differences = schema_differences(existing.schema, wanted)
    if differences:
        raise InputError(
            f"output_table: cannot append to {target}, its columns differ from the "
            f"predictions': {'; '.join(differences)}. Name another output_table, or give "
            "write_mode='replace' to replace it")
