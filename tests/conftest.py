"""Shared fixtures. The emulator stack starts once per test session, only if a test asks for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """A running local stack (real BigQuery and GCS emulators); its environment is set here."""
    from conveyor.local import LocalStack

    saved = dict(os.environ)
    local = LocalStack(tmp_path_factory.mktemp("stack"), project="conveyor-test")
    info = local.up()
    info.activate()
    yield info
    local.down()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def penguins(stack):
    """The demo table, seeded once: its table id."""
    from conveyor.local import seed

    seed.seed_penguins()
    return seed.DEMO_TABLE


@pytest.fixture()
def kfp_local(tmp_path):
    """kfp.local's subprocess runner in this interpreter; returns the pipeline root."""
    from kfp import local

    root = tmp_path / "kfp_outputs"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    return root


def write_dataset(path, table, ratios=None, key=None):
    """A Dataset artifact of `table`'s rows, split as ingest would split them (no emulator)."""
    import pyarrow as pa

    from conveyor.ingest.split import SplitSpec
    from conveyor.io import DatasetWriter

    spec = SplitSpec.parse(ratios or {"train": 0.8, "eval": 0.2}, key)
    index = spec.assign(table.combine_chunks().to_batches()[0])
    with DatasetWriter(path, table.schema, spec.names, {"type": "test"}) as writer:
        for i, name in enumerate(spec.names):
            writer.write(name, table.filter(pa.array(index == i)))
    return path
