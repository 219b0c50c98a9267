"""Fresh cases for issue 25's class 5 (column names that break export), written after the fix
and run once against it: names of TensorFlow's own SavedModel machinery and graph syntax, as
number and string columns, through a real fit, train, export and the exported signature."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from support import write_dataset

NAMES = ["saver_filename", "serving_default_x", "x", "x:0", "a/b", "inputs", "kwargs", "args",
         "Const", "name", "signatures", "StatefulPartitionedCall", "y_1"]


@pytest.mark.slow
def test_savedmodel_machinery_names_train_export_and_serve(tmp_path):
    import tensorflow as tf

    from conveyor.io import Dataset
    from conveyor.model.inputs import model_inputs
    from conveyor.model.layout import ASSETS_EXTRA
    from conveyor.train.train import train
    from conveyor.transform.fit import Fitted, fit
    from conveyor.transform.propose import propose_spec

    rng = np.random.default_rng(1)
    rows = 200
    data: dict = {}
    for i, name in enumerate(NAMES):
        data[name] = (rng.normal(size=rows) if i % 2 else
                      rng.choice(["red", "green", "blue"], size=rows).tolist())
    data["y"] = rng.normal(size=rows)
    ds = write_dataset(tmp_path / "ds", pa.table(data))
    types = {c.name: c.type for c in Dataset(ds).info.columns}
    fit(Dataset(ds), propose_spec(types, "y")).write(tmp_path / "t")
    train(ds, tmp_path / "t", tmp_path / "model", hparams={"epochs": 1, "batch_size": 64})
    model = tmp_path / "model"
    fitted = Fitted.load(model / ASSETS_EXTRA)
    serve = tf.saved_model.load(str(model)).signatures["serving_default"]
    signature = serve.structured_input_signature[1]
    batch = next(Dataset(ds).iter_batches("eval", batch_size=16))
    inputs = model_inputs(batch, fitted)
    assert set(inputs) == set(signature)
    out = serve(**{n: tf.constant(a, dtype=signature[n].dtype) for n, a in inputs.items()})
    assert all(math.isfinite(v) for v in out["value"].numpy())
