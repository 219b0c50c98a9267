"""Fresh cases for issue 25's class 5 (column names that break export), written after the fix
and run once against it: names of TensorFlow's own SavedModel machinery and graph syntax, as
number and string columns, through a real fit, train, export and the exported signature."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from support import fit_transform, train_model, write_dataset
from support.models import assert_signature_serves

NAMES = ["saver_filename", "serving_default_x", "x", "x:0", "a/b", "inputs", "kwargs", "args",
         "Const", "name", "signatures", "StatefulPartitionedCall", "y_1"]


@pytest.mark.slow
def test_savedmodel_machinery_names_train_export_and_serve(tmp_path):
    rng = np.random.default_rng(1)
    rows = 200
    data: dict = {}
    for i, name in enumerate(NAMES):
        data[name] = (rng.normal(size=rows) if i % 2 else
                      rng.choice(["red", "green", "blue"], size=rows).tolist())
    data["y"] = rng.normal(size=rows)
    ds = write_dataset(tmp_path / "ds", pa.table(data))
    fit_transform(ds, tmp_path / "t", label="y", values=None)
    model = train_model(ds, tmp_path / "t", tmp_path / "model",
                        hparams={"epochs": 1, "batch_size": 64})
    assert_signature_serves(model, ds, batch_size=16)
