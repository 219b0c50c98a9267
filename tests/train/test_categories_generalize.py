"""Categories that generalize (issue 26, item 1), in a real Keras model: the out-of-vocabulary
vector is trained, so a value never seen in training lands on a learned vector; the L2 penalty
on embeddings is part of the training loss only; embeddings are sized by the rows too."""

import numpy as np
import pyarrow as pa
import pytest
from support import write_dataset

from conveyor.io import Dataset
from conveyor.train.hyperparameters import Hyperparameters
from conveyor.transform.fit import Fitted, fit
from conveyor.transform.propose import propose_spec


def colours(tmp_path, n=800):
    """Four frequent colours (no rare value, so only OOV dropout can reach the OOV vector) and
    a binary label that depends on the colour and a number."""
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue", "black"], n)
    x = rng.normal(size=n)
    y = ((colour == "red") | (colour == "blue")) ^ (x > 1.5)
    table = pa.table({"colour": colour, "x": x, "y": y.astype(np.int64)})
    ds = Dataset(write_dataset(tmp_path / "ds", table))
    types = {c.name: c.type for c in ds.info.columns}
    spec = propose_spec(types, "y", {0: 1, 1: 1}, stats=None)
    fitted = fit(ds, spec)
    assert fitted.features["colour"]["rows_out_of_vocabulary"] == 0
    fitted.write(tmp_path / "transform")
    return tmp_path / "ds", tmp_path / "transform", fitted


def oov_row(model):
    return model.get_layer("colour_embedding").get_weights()[0][0]


@pytest.mark.slow
def test_an_unseen_value_lands_on_a_trained_vector(tmp_path):
    import keras
    import tensorflow as tf

    from conveyor.train.model import build_model
    from conveyor.train.train import train

    ds, transform, fitted = colours(tmp_path)
    common = {"epochs": 6, "batch_size": 32, "embedding_l2": 0.0, "hidden_units": [8]}
    keras.utils.set_random_seed(0)  # as train does, before it builds the model
    initial = oov_row(build_model(Fitted.load(transform), Hyperparameters.from_dict(common)))

    control = train(ds, transform, tmp_path / "m0", hparams={**common, "oov_dropout": 0.0})
    np.testing.assert_allclose(oov_row(control.model), initial, atol=1e-7)  # never reached

    trained = train(ds, transform, tmp_path / "m1", hparams=common)  # oov_dropout: 0.5 %
    assert np.abs(oov_row(trained.model) - initial).max() > 1e-3
    lookup = trained.model.get_layer("colour_lookup")
    assert lookup(tf.constant(["purple"])).numpy().tolist() == [0]  # unseen: the OOV index
    served = {"colour": tf.constant(["purple", "red"]), "x": tf.constant([0.0, 0.0])}
    assert np.isfinite(trained.model(served, training=False).numpy()).all()


def test_the_embedding_penalty_is_in_the_training_loss_only(tmp_path):
    import keras
    import tensorflow as tf

    from conveyor.train.data import chunks
    from conveyor.train.model import build_model

    ds, _, fitted = colours(tmp_path, 400)
    hp = Hyperparameters.from_dict({"embedding_l2": 0.5, "hidden_units": [8]})
    keras.utils.set_random_seed(0)
    model = build_model(fitted, hp)
    loss = keras.losses.BinaryCrossentropy()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    x, y = next(chunks(Dataset(ds), "train", fitted, 10_000))
    x = {k: tf.constant(v) for k, v in x.items()}
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)

    prediction = model(x, training=False)
    assert not model.losses  # serving and evaluation: the model's own loss, nothing added
    pure = float(loss(y, prediction))
    reported = model.evaluate(x, y, batch_size=len(y), verbose=0, return_dict=True)["loss"]
    assert reported == pytest.approx(pure, rel=1e-5)  # what val_loss and early stopping see

    trained = model(x, training=True)
    penalty = float(sum(model.losses))
    weights = model.get_layer("colour_embedding").get_weights()[0]
    assert penalty == pytest.approx(0.5 * float((weights ** 2).sum()), rel=1e-4)
    training_loss = float(model.compute_loss(x, y, trained, training=True))
    assert training_loss == pytest.approx(float(loss(y, trained)) + penalty, rel=1e-5)


def test_embeddings_are_sized_by_values_and_rows():
    from conveyor.train.model import embedding_dim, embedding_l2

    auto = Hyperparameters()
    assert embedding_dim(5, 1_000_000, auto) == 4  # 1.6 * 5 ** 0.56, as before
    assert embedding_dim(300, 10**7, auto) == 16  # at most 16
    assert embedding_dim(300, 400, auto) == 2  # each value in ~1 row: 2 weights
    assert embedding_dim(18, 1_400, auto) == 7  # 78 rows per value: log2 -> 7
    assert embedding_dim(300, 400, Hyperparameters(embedding_dim=8)) == 8  # given: as given
    assert embedding_l2(50, auto) == 0.01 and embedding_l2(10_000, auto) == 1e-4
    assert embedding_l2(10_000, Hyperparameters(embedding_l2=0.0)) == 0.0


def test_an_integer_category_is_looked_up_as_fitted(tmp_path):
    """The model's words for a numeric feature's float32 values are the fitted vocabulary's:
    each hour its own index, NaN and an unseen value the OOV index; sin/cos on the cycle."""
    import keras
    import tensorflow as tf

    from conveyor.train.preprocess import preprocess, raw_inputs
    from conveyor.transform.fit import column_statistics

    table = pa.table({"hour": pa.array([i % 24 for i in range(1200)], pa.int64()),
                      "y": np.arange(1200, dtype=float)})
    data = Dataset(write_dataset(tmp_path / "ds", table, ratios={"train": 1.0}))
    stats = column_statistics(data, "train", ["hour", "y"])
    fitted = fit(data, propose_spec({"hour": "int64", "y": "float64"}, "y", stats=stats[1]),
                 stats=stats)
    vocabulary = fitted.features["hour"]["categories"]["vocabulary"]
    inputs = raw_inputs(fitted)
    features = preprocess(fitted, inputs)
    model = keras.Model(inputs, [features["indices"]["hour::category"],
                                 features["numeric"]["hour::cycle"]])
    index, cycle = model({"hour": tf.constant([0.0, 5.0, 23.0, float("nan"), 99.0])})
    assert index.numpy().tolist() == [1 + vocabulary.index(w) for w in ("0", "5", "23")] + [0, 0]
    np.testing.assert_allclose(cycle.numpy()[:3], [[0, 1], [np.sin(5 * np.pi / 12),
                               np.cos(5 * np.pi / 12)], [np.sin(-np.pi / 12),
                               np.cos(-np.pi / 12)]], atol=1e-5)
