"""What train leaves in TensorBoard beyond the epoch scalars (conveyor.train.summaries), read
back from the event files with TensorBoard's own EventAccumulator: the hyper-parameters with the
final figures (HParams plugin), and the exported epoch as a scalar and a text saying why."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
from support import fit_transform, write_dataset

from conveyor.local.seed import penguins
from conveyor.train import summaries
from conveyor.train.hyperparameters import Hyperparameters
from conveyor.train.result import TrainResult


def events(folder):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    return acc


def scalar(acc, tag) -> list[tuple[int, float]]:
    import tensorflow as tf

    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


@pytest.mark.slow
def test_hparams_and_the_exported_epoch_are_in_the_log_dir(tmp_path):
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    from conveyor.train.train import train

    table = penguins()
    table = table.filter(pc.is_valid(table.column("sex")))
    ds = write_dataset(tmp_path / "ds", table)
    transform = fit_transform(ds, tmp_path / "t", "sex", values=None, task="binary")
    hparams = {"epochs": 60, "batch_size": 32, "learning_rate": 0.05,
               "early_stopping_patience": 3, "hidden_units": [16, 8]}
    result = train(ds, transform, tmp_path / "model", hparams=hparams,
                   tensorboard_path=tmp_path / "tb")

    # the validation loss as Keras logged it, per epoch: the exported epoch is its lowest
    losses = scalar(events(tmp_path / "tb" / "validation"), "epoch_loss")
    lowest = min(losses, key=lambda s: s[1])[0]
    assert result.best_epoch == lowest

    root = events(tmp_path / "tb")
    assert scalar(root, "exported_epoch") == [(lowest, float(lowest + 1))]
    (text,) = root.Tensors("exported_epoch/why")
    assert text.step == lowest
    said = tf.make_ndarray(text.tensor_proto).item().decode()
    assert said.startswith(f"Epoch {lowest + 1} of {result.epochs_run} was exported: its "
                           "validation loss")
    assert f"{result.metrics['val_loss']:.6g} was the lowest" in said
    if result.epochs_run < 60:
        assert "stopped early" in said and "3 epochs (early_stopping_patience)" in said
    else:
        assert "ran all 60 epochs" in said
    assert scalar(root, "final/val_loss") == [(lowest, pytest.approx(result.metrics["val_loss"]))]

    # the HParams plugin: the experiment's hyper-parameters and metrics, and this session's
    content = root.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    assert {h.name for h in experiment.hparam_infos} >= {"learning_rate", "hidden_units",
                                                        "batch_size", "epochs"}
    assert {m.name.tag for m in experiment.metric_infos} >= {"final/val_loss", "final/auc",
                                                            "final/epochs_run"}
    session = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["learning_rate"].number_value == pytest.approx(0.05)
    assert session.hparams["hidden_units"].string_value == "16,8"
    assert session.hparams["early_stopping_patience"].number_value == 3
    assert session.hparams["batch_size"].number_value == 32


def run(**kw) -> TrainResult:
    fields = dict(model=None, metrics={"val_loss": 0.25, "loss": 0.2, "validation_rows": 70.0},
                  first_epoch=0, epochs_run=10, steps_per_epoch=5, examples_per_second=1.0,
                  steady_examples_per_second=1.0, seconds=1.0, best_epoch=6,
                  hyperparameters=Hyperparameters(epochs=10, early_stopping_patience=3))
    fields.update(kw)
    return TrainResult(**fields)


def test_why_an_epoch_was_exported_in_each_case():
    assert summaries.why_exported(run()) == (
        "Epoch 7 of 10 was exported: its validation loss 0.25 was the lowest (on 70 rows held "
        "out of the train split). Training ran all 10 epochs. On the epoch_* charts, epoch 7 "
        "is step 6 (they count from 0).")
    early = summaries.why_exported(run(epochs_run=9, best_epoch=5,
                                       hyperparameters=Hyperparameters(epochs=40,
                                                                       early_stopping_patience=3)))
    assert "Training stopped early after epoch 9 of at most 40: the validation loss had not " \
           "improved for 3 epochs (early_stopping_patience)." in early
    blind = run(best_epoch=None, metrics={"loss": 0.2})
    assert summaries.exported_epoch(blind) == 9
    assert summaries.why_exported(blind).startswith(
        "Epoch 10, the last of 10, was exported: there was no validation loss")
    resumed = summaries.why_exported(run(first_epoch=4, epochs_run=6))
    assert "resumed from a checkpoint at epoch 5" in resumed
    assert summaries.hparam_values(run())["hidden_units"] == "64,32"
    assert summaries.final_metrics(run(metrics={"a": float("nan"), "b": 1.0})) == {"final/b": 1.0}
