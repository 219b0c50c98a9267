"""A fitted transform and a trained model, built by the steps' own functions (transform's
`propose_spec` and `fit`, train's `train`) the way the training pipeline chains them: fit on the
Dataset artifact, write the fitted transform to a folder, train on the Dataset and that folder.
Tests that need a transform or a model call these rather than wiring the steps by hand, so a
change in how the steps connect is made once; the root conftest.py caches the penguins ones per
session (`penguin_transform`, `penguin_model`)."""

from __future__ import annotations

from pathlib import Path

#: Small, fast hyper-parameters that still train penguins well (the session model's).
HPARAMS = {"epochs": 8, "batch_size": 32, "learning_rate": 0.01}

#: The penguins species' label values as a spec proposal needs them (counts only matter > 0).
PENGUIN_CLASSES = {"a": 1, "b": 1, "c": 1}


def fit_transform(dataset: Path, out: Path, label: str = "species", values=PENGUIN_CLASSES,
                  task: str | None = None) -> Path:
    """Fit transform on the Dataset artifact at `dataset` with the spec `propose_spec` gives
    for `label` (its `values` and/or `task`); the fitted transform is written to `out`."""
    from conveyor.io import Dataset
    from conveyor.transform.fit import fit
    from conveyor.transform.propose import propose_spec

    types = {c.name: c.type for c in Dataset(dataset).info.columns}
    fit(Dataset(dataset), propose_spec(types, label, values, task=task)).write(out)
    return Path(out)


def train_model(dataset: Path, transform: Path, out: Path, hparams: dict | None = None,
                **kw) -> Path:
    """Train on the Dataset artifact at `dataset` with the fitted transform at `transform`;
    the SavedModel is written to `out`. `kw` goes to train (module_file, tensorboard_path...)."""
    from conveyor.train.train import train

    train(dataset, transform, out, hparams=dict(hparams or HPARAMS), **kw)
    return Path(out)


def assert_signature_serves(model: Path, dataset: Path, batch_size: int = 16) -> None:
    """The exported SavedModel at `model` (a regression, output `value`) takes exactly the inputs
    that `model_inputs` makes from a batch of the Dataset's eval split with the fitted transform
    the model carries, and answers a finite value for each row."""
    import math

    import tensorflow as tf

    from conveyor.io import Dataset
    from conveyor.model.inputs import model_inputs
    from conveyor.model.layout import ASSETS_EXTRA
    from conveyor.transform.fit import Fitted

    fitted = Fitted.load(Path(model) / ASSETS_EXTRA)
    serve = tf.saved_model.load(str(model)).signatures["serving_default"]
    signature = serve.structured_input_signature[1]
    batch = next(Dataset(dataset).iter_batches("eval", batch_size=batch_size))
    inputs = model_inputs(batch, fitted)
    assert set(inputs) == set(signature)
    out = serve(**{n: tf.constant(a, dtype=signature[n].dtype) for n, a in inputs.items()})
    assert all(math.isfinite(v) for v in out["value"].numpy())
