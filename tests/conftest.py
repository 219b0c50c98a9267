"""Shared fixtures. The emulator stack starts once per test session, only if a test asks for it.
What tests import (helpers, factories) is in tests/support, not here: `from support import ...`."""

from __future__ import annotations

import os

import pytest
from support import fit_transform, mlflow_server, train_model, write_dataset


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


@pytest.fixture(scope="session")
def penguin_transform(tmp_path_factory):
    """The penguins table as a Dataset artifact and transform fitted on it (label species):
    its folder holds ds/ (Dataset) and t/ (fitted transform). Fitted once per test session;
    tests read it, never write into it."""
    from conveyor.local.seed import penguins

    root = tmp_path_factory.mktemp("penguin-model")
    fit_transform(write_dataset(root / "ds", penguins()), root / "t")
    return root


@pytest.fixture(scope="session")
def penguin_model(penguin_transform):
    """A small trained penguins classifier: its folder holds ds/ (Dataset), t/ (fitted
    transform) and model/ (SavedModel). Trained once per test session."""
    root = penguin_transform
    train_model(root / "ds", root / "t", root / "model")
    return root


@pytest.fixture(scope="session")
def bucket(stack):
    """make(name) -> name: a bucket in the GCS emulator, created if missing."""
    from conveyor import gcp

    def make(name: str) -> str:
        client = gcp.storage_client()
        if not client.bucket(name).exists():
            client.create_bucket(name)
        return name

    return make


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """A real MLflow tracking server (`mlflow server`, SQLite store) on a free loopback port,
    started once per test session: its URI."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri
