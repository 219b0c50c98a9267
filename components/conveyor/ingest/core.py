"""What both ingest paths share: their result, and routing rows to their split."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc

from conveyor.ingest.split import SPLIT_COLUMN, SplitSpec
from conveyor.io.dataset import DatasetInfo, DatasetWriter


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


def route(batch: pa.RecordBatch, spec: SplitSpec, writer: DatasetWriter) -> None:
    """Write each row of `batch` to the split its `SPLIT_COLUMN` names, without that column."""
    split = batch.column(SPLIT_COLUMN)
    data = batch.drop_columns([SPLIT_COLUMN])
    if len(spec.names) == 1:
        writer.write(spec.names[0], data)
        return
    for name in spec.names:
        part = data.filter(pc.equal(split, name))
        if part.num_rows:
            writer.write(name, part)
