"""bench/quality_paired.py: the weighted metrics a bootstrap resample is scored with, and the
paired interval that calls better, worse or a tie (numbers only: no TensorFlow, no sklearn)."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import quality_paired as qp


def brute_auc(positive, score) -> float:
    """P(positive scores above negative) + P(tie) / 2, over every pair."""
    pos = [s for s, p in zip(score, positive) if p]
    neg = [s for s, p in zip(score, positive) if not p]
    total = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


def test_auc_matches_every_pair_ties_included():
    rng = np.random.default_rng(1)
    positive = rng.random(60) < 0.3
    score = np.round(rng.random(60) + 0.4 * positive, 1)  # rounded: many ties
    assert qp.RankedScores(positive, score).auc(np.ones(60)) == pytest.approx(
        brute_auc(positive, score), abs=1e-12)


def test_weights_are_repeated_rows():
    rng = np.random.default_rng(2)
    n = 40
    y = rng.random(n) < 0.5
    score = np.round(rng.random(n), 2)
    w = rng.integers(0, 4, n)
    repeated = np.repeat(np.arange(n), w)
    assert qp.RankedScores(y, score).auc(w) == pytest.approx(
        brute_auc(y[repeated], score[repeated]), abs=1e-12)
    values, predictions = rng.normal(size=n), rng.normal(size=n)
    assert qp.weighted_rmse(values, predictions, w) == pytest.approx(
        math.sqrt(np.mean((values[repeated] - predictions[repeated]) ** 2)))
    correct = (rng.random(n) < 0.7).astype(float)
    assert qp.weighted_accuracy(correct, w) == pytest.approx(correct[repeated].mean())


def test_auc_without_both_classes_is_nan():
    assert math.isnan(qp.RankedScores(np.zeros(5, bool), np.arange(5.0)).auc(np.ones(5)))


@pytest.mark.parametrize(("low", "high", "verdict"), [
    (0.001, 0.02, "better"), (-0.02, -0.001, "worse"), (-0.01, 0.01, "tie"), (0.0, 0.01, "tie"),
    (-0.01, 0.0, "tie")])
def test_verdict_is_a_tie_unless_the_interval_excludes_zero(low, high, verdict):
    assert qp.verdict_of(low, high) == verdict


def _regression(n=400, seed=3):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return y, rng


def test_same_predictions_are_a_tie_at_zero():
    y, rng = _regression()
    p = y + rng.normal(0, 0.5, len(y))
    result = qp.paired_difference("rmse", y, p, p.copy(), resamples=300)
    assert result["diff"] == 0 and result["low"] == 0 and result["high"] == 0
    assert result["verdict"] == "tie" and result["rows"] == len(y)


def test_rmse_difference_is_signed_so_positive_is_conveyor_better():
    y, rng = _regression()
    good, bad = y + rng.normal(0, 0.3, len(y)), y + rng.normal(0, 1.0, len(y))
    better = qp.paired_difference("rmse", y, good, bad, resamples=500)
    assert better["verdict"] == "better" and better["diff"] > 0 and better["low"] > 0
    assert better["diff"] == pytest.approx(better["baseline"] - better["conveyor"])
    worse = qp.paired_difference("rmse", y, bad, good, resamples=500)
    assert worse["verdict"] == "worse" and worse["high"] < 0
    assert worse["diff"] == pytest.approx(-better["diff"])


def test_equally_good_models_with_their_own_noise_tie():
    y, rng = _regression(n=300, seed=4)
    a, b = y + rng.normal(0, 0.5, len(y)), y + rng.normal(0, 0.5, len(y))
    result = qp.paired_difference("rmse", y, a, b, resamples=1000)
    assert result["low"] < 0 < result["high"] and result["verdict"] == "tie"


def test_pairing_finds_a_small_steady_gain_that_unpaired_scores_would_not():
    """Errors shared row by row: conveyor's are the baseline's shrunk by 2 %. Each model's own
    RMSE varies by far more than 2 % across resamples, the paired difference does not."""
    y, rng = _regression(n=500, seed=5)
    shared = rng.normal(0, 1.0, len(y))
    result = qp.paired_difference("rmse", y, y + 0.98 * shared, y + shared, resamples=1000)
    assert result["verdict"] == "better"
    spread = np.std([qp.weighted_rmse(y, y + shared, np.bincount(rng.integers(0, 500, 500),
                                                                 minlength=500))
                     for _ in range(300)])
    assert 1.96 * spread > result["diff"]  # unpaired, the two models' intervals would overlap


def test_auc_and_accuracy_differences():
    rng = np.random.default_rng(6)
    n = 600
    y = rng.random(n) < 0.3
    strong = y + rng.normal(0, 0.5, n)
    weak = y + rng.normal(0, 2.0, n)
    result = qp.paired_difference("auc", y, strong, weak, resamples=500)
    assert result["verdict"] == "better" and result["conveyor"] > result["baseline"]
    assert result["conveyor"] == pytest.approx(brute_auc(y, strong))
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    right = np.where(rng.random(n) < 0.9, labels, "a")
    wrong = np.where(rng.random(n) < 0.5, labels, "a")
    result = qp.paired_difference("accuracy", labels, wrong, right, resamples=500)
    assert result["verdict"] == "worse"
    assert result["conveyor"] == pytest.approx(np.mean(wrong == labels))


def test_paired_rows_must_match():
    with pytest.raises(ValueError, match="paired rows differ"):
        qp.paired_difference("rmse", np.zeros(3), np.zeros(3), np.zeros(2))


def test_the_same_seed_gives_the_same_interval():
    y, rng = _regression(n=200, seed=7)
    a, b = y + rng.normal(0, 0.5, 200), y + rng.normal(0, 0.6, 200)
    assert (qp.paired_difference("rmse", y, a, b, resamples=200)
            == qp.paired_difference("rmse", y, a, b, resamples=200))


def test_labels_present_drops_null_and_nan_labels():
    assert qp.labels_present(pa.array([1.0, None, float("nan"), 2.0])).to_pylist() == [
        True, False, False, True]
    assert qp.labels_present(pa.array(["a", None, "b"])).to_pylist() == [True, False, True]


def test_conveyor_binary_scores_follow_the_positive_class():
    p = np.array([0.2, 0.9])
    meta = {"classes": ["no", "yes"]}
    assert list(qp.conveyor_positive_scores(meta, p, "yes")) == [0.2, 0.9]
    assert list(qp.conveyor_positive_scores(meta, p, "no")) == pytest.approx([0.8, 0.1])
    with pytest.raises(ValueError, match="positive class"):
        qp.conveyor_positive_scores(meta, p, "maybe")


def test_conveyor_metrics_per_task():
    y = np.array(["no", "yes", "yes", "no"])
    binary = qp.conveyor_metrics("binary", ["no", "yes"], y, np.array([0.1, 0.8, 0.4, 0.3]))
    assert binary == {"auc": 1.0, "accuracy": 0.75}
    multi = qp.conveyor_metrics("multiclass", ["0", "1", "2"], np.array(["0", "1", "2"]),
                                np.array(["0", "1", "1"]))
    assert multi == {"accuracy": pytest.approx(2 / 3)}
    reg = qp.conveyor_metrics("regression", [], np.array([1.0, 2.0, 3.0]),
                              np.array([1.0, 2.0, 4.0]))
    assert reg["rmse"] == pytest.approx(math.sqrt(1 / 3)) and reg["r2"] == pytest.approx(0.5)
