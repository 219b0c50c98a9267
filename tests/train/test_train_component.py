"""transform and train through kfp.local on data ingested from the BigQuery emulator."""

import json
from pathlib import Path

import pytest
from kfp import dsl

from conveyor.components import bigquery_ingest, train, transform

pytestmark = [pytest.mark.local, pytest.mark.slow]


@dsl.pipeline(name="train-case")
def train_case(table: str, label: str, task: str, hyperparameters: dict) -> dsl.Model:
    data = bigquery_ingest(table=table, split_ratios={"train": 0.67, "eval": 0.33})
    fitted = transform(dataset=data.outputs["dataset"], label=label, task=task)
    return train(dataset=data.outputs["dataset"], preprocessing=fitted.outputs["preprocessing"],
                 hyperparameters=hyperparameters).outputs["model"]


@pytest.fixture(scope="module")
def reference(stack):
    from conveyor.local import seed

    return seed.seed_reference(20_000)


def metrics_of(model: Path) -> dict:
    out = json.loads((model.parent / "executor_output.json").read_text())
    return out["artifacts"]["metrics"]["artifacts"][0]["metadata"]


def signature_of(model: Path) -> tuple[set, set]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(model)).signatures["serving_default"]
    return set(serve.structured_input_signature[1]), set(serve.structured_outputs)


@pytest.mark.parametrize("label, task, outputs, metric, floor", [
    ("species", "", {"probabilities", "class_id", "class_label"}, "val_accuracy", 0.8),
    ("body_mass_g", "regression", {"value"}, "val_mae", None),
])
def test_penguins(penguins, kfp_local, label, task, outputs, metric, floor):
    run = train_case(table=penguins, label=label, task=task,
                     hyperparameters={"epochs": 25, "batch_size": 32, "learning_rate": 0.01})
    model = Path(run.outputs["Output"].path)
    inputs, outs = signature_of(model)
    assert label not in inputs and "island" in inputs
    assert outs == outputs
    figures = metrics_of(model)
    if floor:
        assert figures[metric] > floor
    else:
        assert figures[metric] < 500  # grams; the label's standard deviation is ~800
    assert figures["resumed_from_epoch"] == 0


def test_reference_workload_binary(reference, kfp_local):
    # The TFX baseline's model: Embedding(vocab+1, 4), Dense(16), Adam(1e-2), 200 x 256.
    run = train_case(table=reference, label="label", task="binary", hyperparameters={
        "hidden_units": [16], "embedding_dim": 4, "learning_rate": 0.01, "batch_size": 256,
        "steps": 200, "epochs": 1})
    model = Path(run.outputs["Output"].path)
    assert signature_of(model)[1] == {"probability", "class", "class_label"}
    figures = metrics_of(model)
    assert figures["val_auc"] > 0.8
    assert figures["examples_per_second"] > 0
