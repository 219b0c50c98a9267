"""Test data on disk, without an emulator: Dataset artifacts split as ingest splits them."""

from __future__ import annotations

from pathlib import Path

#: validate's suite for the penguins table (the validate and bad-input tests read it).
PENGUINS_SUITE = Path(__file__).resolve().parent / "penguins_suite.yaml"


def write_dataset(path, table, ratios=None, key=None, source=None):
    """A Dataset artifact of `table`'s rows, split as ingest would split them (no emulator);
    `source`: what its `dataset.json` records as the rows' origin (default a test's)."""
    import pyarrow as pa

    from conveyor.io import DatasetWriter
    from conveyor.io.split import SplitSpec

    spec = SplitSpec.parse(ratios or {"train": 0.8, "eval": 0.2}, key)
    index = spec.assign(table.combine_chunks().to_batches()[0])
    with DatasetWriter(path, table.schema, spec.names, source or {"type": "test"}) as writer:
        for i, name in enumerate(spec.names):
            writer.write(name, table.filter(pa.array(index == i)))
    return path


def key_landing_in(split, ratios=None, start=0):
    """The first integer split key >= `start` whose row lands in `split` under `ratios` (ingest's
    rule: FARM_FINGERPRINT of the key as a string, `conveyor.io.split`): to place one row in the
    split a test wants, in files and in the BigQuery emulator alike."""
    import pyarrow as pa

    from conveyor.io.split import SplitSpec

    spec = SplitSpec.parse(ratios or {"train": 0.8, "eval": 0.2}, "key")
    want = spec.names.index(split)
    for first in range(start, start + 100_000, 1000):
        keys = pa.array(range(first, first + 1000), pa.int64())
        index = spec.assign(pa.record_batch([keys], names=["key"]))
        hits = [k for k, i in zip(keys.to_pylist(), index) if i == want]
        if hits:
            return hits[0]
    raise AssertionError(f"no key from {start} lands in {split!r}")
