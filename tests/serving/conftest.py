"""Fixtures of the serving tests (the penguins classifier is the root conftest's)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def regressor(penguin_transform, tmp_path_factory):
    """Body mass from the other penguin columns, trained briefly."""
    from support.models import fit_transform, train_model

    root = tmp_path_factory.mktemp("mass")
    fit_transform(penguin_transform / "ds", root / "t", label="body_mass_g", values=None,
                  task="regression")
    return train_model(penguin_transform / "ds", root / "t", root / "model",
                       {"epochs": 2, "batch_size": 32})
