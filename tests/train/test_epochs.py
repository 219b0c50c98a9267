"""The epoch policy alone (conveyor.train.epochs): what one worker's `model.fit` and the
multi-worker loop both do after each epoch. Pure Python: no TensorFlow is imported."""

import math
import subprocess
import sys

import pyarrow as pa
import pytest
from support import write_dataset

from conveyor.errors import TrainingError
from conveyor.io import Dataset
from conveyor.train.epochs import EpochPolicy, divergence_causes, epoch_metrics
from conveyor.transform.fit import fit
from conveyor.transform.spec import FeatureSpec


def run(policy: EpochPolicy, val_losses, first_epoch: int = 0):
    """Feed the eval losses from `first_epoch` until the policy stops: the decisions taken."""
    decisions = []
    for epoch, loss in enumerate(val_losses, start=first_epoch):
        decisions.append(policy.end_epoch(epoch, {"loss": 1.0, "val_loss": loss}))
        if decisions[-1].stop:
            break
    return decisions


def test_the_policy_needs_no_tensorflow():
    code = ("import sys, conveyor.train.epochs; "
            "assert not {'tensorflow', 'keras'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stops_after_patience_epochs_without_improvement_and_keeps_the_best():
    policy = EpochPolicy(patience=3, learning_rate=0.01)
    decisions = run(policy, [1.0, 0.8, 0.81, 0.8, 0.79, 0.9, 0.9, 0.9, 0.5])
    assert [d.stop for d in decisions] == [False] * 7 + [True]  # 0.5 is never seen
    assert [d.new_best for d in decisions] == [True, True, False, False, True, False, False,
                                               False]
    assert policy.best_epoch == 4 and policy.best_loss == 0.79


def test_an_equal_loss_is_no_improvement():
    policy = EpochPolicy(patience=2, learning_rate=0.01)
    decisions = run(policy, [1.0, 1.0, 1.0, 0.1])
    assert [d.stop for d in decisions] == [False, False, True]
    assert policy.best_epoch == 0


def test_the_learning_rate_halves_after_three_stalled_epochs_down_to_an_8th():
    policy = EpochPolicy(patience=4, learning_rate=0.01)  # halving patience max(3, 4 // 2)
    rates = [policy.end_epoch(e, {"val_loss": v}).learning_rate
             for e, v in enumerate([1.0, 0.9, 0.9, 0.89995, 0.95])]
    # 0.89995 improves on 0.9 by less than 1e-4: the third stalled epoch halves
    assert rates == [0.01, 0.01, 0.01, 0.01, 0.005]
    policy = EpochPolicy(patience=100, learning_rate=0.01)  # halving every 50 stalled epochs
    for epoch in range(300):
        policy.end_epoch(epoch, {"val_loss": 1.0})
    assert policy.learning_rate == pytest.approx(0.01 / 8)


def noisy_improving_losses(epochs=120, seed=7):
    """A validation loss still falling (0.5 + 0.4 e^(-epoch / 40)) under epoch-to-epoch noise
    of sd 0.02, as over ~100 validation rows: a chance low often looks unbeaten for a while.
    (The trend does not depend on the learning rate here: only the stopping rule is judged.)"""
    import random

    rng = random.Random(seed)
    return [0.5 + 0.4 * math.exp(-e / 40) + rng.gauss(0, 0.02) for e in range(epochs)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_noisy_validation_loss_over_few_rows_does_not_stop_a_run_that_still_improves(seed):
    """The automatic patience over 100 validation rows lets the run go on while the loss
    trend still falls; 5 epochs (the old rule, from steps per epoch) stopped it early,
    keeping a chance low of its first epochs (issue 26: 6 epochs with epoch 1 kept)."""
    from conveyor.train.hyperparameters import Hyperparameters

    hp = Hyperparameters().resolved(rows=40_000, validating=100)  # 80 steps of 512 an epoch
    assert hp.early_stopping_patience == 20
    losses = noisy_improving_losses(seed=seed)
    policy = EpochPolicy(hp.early_stopping_patience, hp.learning_rate)
    decisions = run(policy, losses)
    assert len(decisions) >= 90 and policy.best_epoch >= 75, (len(decisions), policy.best_epoch)
    truth = [0.5 + 0.4 * math.exp(-e / 40) for e in range(len(losses))]
    hasty = EpochPolicy(5, hp.learning_rate, min_learning_rate=hp.learning_rate / 32)
    hasty.plateau.lr_patience = 2
    run(hasty, losses)
    assert truth[policy.best_epoch] < truth[hasty.best_epoch] - 0.04
    assert policy.learning_rate >= hp.learning_rate / 8


@pytest.mark.parametrize("validating, steps, patience", [
    (50, 1000, 20), (999, 1000, 20), (1_000, 1000, 10), (9_999, 1000, 10), (10_000, 1000, 5),
    (10_000, 49, 10), (1_000_000, 2000, 5)])
def test_the_automatic_patience_grows_as_the_validation_rows_get_fewer(validating, steps,
                                                                       patience):
    from conveyor.train.hyperparameters import auto_patience

    assert auto_patience(validating, steps) == patience


def test_a_fixed_step_budget_turns_the_automatic_patience_off():
    from conveyor.train.hyperparameters import Hyperparameters

    assert Hyperparameters(steps=500).resolved(10_000, 50).early_stopping_patience == 0
    assert Hyperparameters(early_stopping_patience=3).resolved(10_000, 50
                                                               ).early_stopping_patience == 3


def test_after_a_resume_the_learning_rate_goes_on_from_the_optimizers():
    policy = EpochPolicy(patience=4, learning_rate=0.01)
    policy.learning_rate = 0.0025  # as restored from a checkpoint
    rates = [d.learning_rate for d in run(policy, [1.0, 1.0, 1.0, 1.0], first_epoch=5)]
    assert rates == [0.0025, 0.0025, 0.0025, 0.00125]


def test_patience_zero_never_stops_nor_halves_but_keeps_the_best():
    policy = EpochPolicy(patience=0, learning_rate=0.01)
    decisions = run(policy, [1.0, 0.5] + [0.9] * 30)
    assert len(decisions) == 32 and not any(d.stop for d in decisions)
    assert {d.learning_rate for d in decisions} == {0.01}
    assert policy.best_epoch == 1


def test_without_a_validation_loss_nothing_is_decided():
    policy = EpochPolicy(patience=2, learning_rate=0.01)
    decisions = [policy.end_epoch(e, {"loss": 1.0}) for e in range(10)]
    assert not any(d.stop or d.new_best for d in decisions)
    assert policy.best_epoch is None


@pytest.mark.parametrize("logs, what", [
    ({"loss": math.nan, "val_loss": 1.0}, "training loss became nan at epoch 3"),
    ({"loss": 1.0, "val_loss": math.inf}, "validation loss became inf at epoch 3"),
    ({"loss": -math.inf}, "training loss became -inf at epoch 3"),
])
def test_a_diverged_loss_raises_with_its_causes(logs, what):
    policy = EpochPolicy(patience=2, learning_rate=0.01, causes=["cause one", "cause two"])
    policy.end_epoch(1, {"loss": 1.0, "val_loss": 1.0})
    with pytest.raises(TrainingError) as raised:
        policy.end_epoch(2, logs)
    assert str(raised.value) == (f"train: the {what}; stopped, nothing exported. Likely cause: "
                                 "cause one; cause two")
    assert policy.best_epoch == 1  # the diverged epoch is never the best


def test_divergence_causes_name_a_huge_label_or_an_unscaled_feature(tmp_path):
    table = pa.table({"x": [float(i) * 1e7 for i in range(50)],
                      "z": [float(i) for i in range(50)],
                      "y": [float(i) * 1e17 for i in range(50)]})
    ds = Dataset(write_dataset(tmp_path / "ds", table))
    spec = FeatureSpec.from_dict({"label": "y", "task": "regression", "features": {
        "x": {"kind": "numeric", "transform": "none"},
        "z": {"kind": "numeric", "transform": "none"}}})
    causes = divergence_causes(fit(ds, spec))
    assert len(causes) == 2
    assert causes[0].startswith("the label 'y' reaches 4.9e+18: rescale it")
    assert causes[1] == "feature 'x' reaches 4.9e+08 with transform none: use zscore or log"
    plain = FeatureSpec.from_dict({"label": "z", "task": "regression", "features": {
        "x": {"kind": "numeric", "transform": "zscore"}}})
    assert divergence_causes(fit(ds, plain)) == [
        "a learning_rate too high for this data (try 10x lower)"]


def test_epoch_metrics_are_read_at_the_best_epoch_of_this_run():
    history = {"loss": [0.9, 0.8, 0.7], "val_loss": [0.6, 0.5, 0.55],
               "learning_rate": [0.01, 0.01, 0.005]}
    # resumed at epoch 4 (from 0): the best epoch 5 is the second of this run
    assert epoch_metrics(history, 5, first_epoch=4) == {"loss": 0.8, "val_loss": 0.5}
    assert epoch_metrics(history, None) == {"loss": 0.7, "val_loss": 0.55}
