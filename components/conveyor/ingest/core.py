"""What both ingest paths share: their result, and routing rows to their split."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from conveyor.errors import SchemaError, excerpt
from conveyor.io.dataset import DatasetInfo
from conveyor.io.dataset_writer import DatasetWriter
from conveyor.io.split import RESERVED_COLUMNS, SPLIT_COLUMN, SplitSpec


@dataclasses.dataclass(frozen=True)
class IngestResult:
    """What an ingest wrote and read."""

    info: DatasetInfo
    bytes_read: int
    seconds: float
    #: Wall seconds of each phase, e.g. {"materialize": 1.2, "read": 3.4}.
    phases: dict[str, float] = dataclasses.field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {f"rows_{name}": s.rows for name, s in self.info.splits.items()}
        out["rows_total"] = self.info.rows
        out["bytes_read"] = self.bytes_read
        out["seconds"] = round(self.seconds, 3)
        out.update({f"seconds_{phase}": round(s, 3) for phase, s in self.phases.items()})
        return out


def route(batch: pa.RecordBatch, spec: SplitSpec, writer: DatasetWriter, part: int = 0) -> None:
    """Write each row of `batch` to the split its `SPLIT_COLUMN` names, without that column
    (into the writer's `part`)."""
    split = batch.column(SPLIT_COLUMN)
    data = batch.drop_columns([SPLIT_COLUMN])
    if len(spec.names) == 1:
        writer.write(spec.names[0], data, part)
        return
    for name in spec.names:
        rows = data.filter(pc.equal(split, name))
        if rows.num_rows:
            writer.write(name, rows, part)


def check_column_names(names: Sequence[str], where: str) -> None:
    """Refuse column names a Dataset cannot take, naming the column: an empty (or blank) name,
    a name conveyor reserves (in any case), a name given twice, or two names that differ only in
    case. The last is BigQuery's rule (its column names are case-insensitive): a Dataset's columns
    must be able to go back into BigQuery (batch_predict's passthrough columns, a table loaded
    from its files), and BigQuery ingest matches the columns it reads back ignoring case. Names
    are quoted short (`excerpt`): a CSV's header is its first line, whatever the file is."""
    reserved = {r.casefold(): r for r in RESERVED_COLUMNS}
    seen: dict[str, tuple[int, str]] = {}
    for number, name in enumerate(names, start=1):
        if not isinstance(name, str) or not name.strip():
            raise SchemaError(
                f"{where}: column {number} has an empty name {name!r}; every column of a Dataset "
                "needs a name (give it one in the query or the file's header)")
        key = name.casefold()
        if key in reserved:
            raise SchemaError(f"{where}: column name {excerpt(name)} is reserved by conveyor "
                              f"({reserved[key]!r}, in any case); rename the column")
        if key in seen:
            first, other = seen[key]
            if other == name:
                raise SchemaError(f"{where}: column name {excerpt(name)} is given twice (columns "
                                  f"{first} and {number}); column names must be unique")
            raise SchemaError(
                f"{where}: columns {excerpt(other)} (column {first}) and {excerpt(name)} "
                f"(column {number}) differ only in case; BigQuery column names are "
                "case-insensitive and a Dataset's columns must be able to go back to BigQuery: "
                "rename one of them")
        seen[key] = (number, name)


def restore_names(found: Sequence[str], expected: Sequence[str], where: str) -> list[str]:
    """`found` (the columns a read returned) renamed to the `expected` names they stand for.

    BigQuery column names are case-insensitive, and unique ignoring case: a read may return them
    in another case than the source's schema (the BigQuery emulator lower-cases the columns of a
    query that computes an expression over them; real BigQuery keeps them). Each found name is
    matched exactly, else ignoring case; anything else (a column that matches none, two that
    match one, an expected column missing) raises a SchemaError naming the columns."""
    exact = set(expected)
    folded: dict[str, str] = {}
    for name in expected:
        folded.setdefault(name.casefold(), name)
    out, taken = [], set()
    for name in found:
        want = name if name in exact else folded.get(name.casefold())
        if want is None:
            raise SchemaError(
                f"{where}: BigQuery returned a column {name!r} that the source's schema does not "
                f"have, even ignoring case (columns: {', '.join(expected)})")
        if want in taken:
            raise SchemaError(f"{where}: BigQuery returned two columns for {want!r} "
                              f"(found: {', '.join(found)})")
        taken.add(want)
        out.append(want)
    missing = [n for n in expected if n not in taken]
    if missing:
        raise SchemaError(f"{where}: BigQuery returned no column for {missing} "
                          f"(found: {', '.join(found)})")
    return out
