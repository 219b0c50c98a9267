"""Test data on disk, without an emulator: Dataset artifacts split as ingest splits them."""

from __future__ import annotations

from pathlib import Path

#: validate's suite for the penguins table (the validate and bad-input tests read it).
PENGUINS_SUITE = Path(__file__).resolve().parent / "penguins_suite.yaml"


def write_dataset(path, table, ratios=None, key=None):
    """A Dataset artifact of `table`'s rows, split as ingest would split them (no emulator)."""
    import pyarrow as pa

    from conveyor.io import DatasetWriter
    from conveyor.io.split import SplitSpec

    spec = SplitSpec.parse(ratios or {"train": 0.8, "eval": 0.2}, key)
    index = spec.assign(table.combine_chunks().to_batches()[0])
    with DatasetWriter(path, table.schema, spec.names, {"type": "test"}) as writer:
        for i, name in enumerate(spec.names):
            writer.write(name, table.filter(pa.array(index == i)))
    return path
