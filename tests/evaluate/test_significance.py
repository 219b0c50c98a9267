"""The paired comparison of candidate and baseline: exact where it can be checked by hand,
calibrated under the null (equally good models are "significantly better" about as often as
the level says), and able to see a real improvement."""

import math

import numpy as np
import pytest

from conveyor.evaluate.significance import SCORE_BINS, PairedComparison, _binomial_tail


def pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def binary_pair(rng, n, noise_a, noise_b):
    """Labels and two models' scores: each a logistic of the same signal plus its own noise."""
    y = rng.random(n) < 0.4
    signal = np.where(y, 1.0, -1.0)
    a = 1 / (1 + np.exp(-(signal + rng.normal(0, noise_a, n))))
    b = 1 / (1 + np.exp(-(signal + rng.normal(0, noise_b, n))))
    return y, a, b


def compare(task, metric, y, a, b, **kw):
    comparison = PairedComparison(task, metric, **kw)
    for start in range(0, len(y), 97):  # in batches, as evaluate feeds it
        comparison.update(y[start:start + 97], a[start:start + 97], b[start:start + 97])
    return comparison.result()


def test_delong_auc_is_the_pairwise_auc_of_the_binned_scores_ties_counting_half():
    rng = np.random.default_rng(1)
    y, a, b = binary_pair(rng, 400, 1.0, 2.0)
    a = np.round(a * 20) / 20  # coarse scores: many ties
    result = compare("binary", "auc", y, a, b)
    bins = lambda s: np.minimum((s * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)  # noqa: E731
    assert result["candidate"] == pytest.approx(pairwise_auc(y, bins(a)), abs=1e-12)
    assert result["baseline"] == pytest.approx(pairwise_auc(y, bins(b)), abs=1e-12)
    assert result["improvement"] == pytest.approx(result["candidate"] - result["baseline"])
    low, high = result["interval"]
    assert low < result["improvement"] < high


def test_the_same_model_twice_is_never_an_improvement():
    rng = np.random.default_rng(2)
    y, a, _ = binary_pair(rng, 300, 1.0, 1.0)
    for task, metric, label, answer in (
            ("binary", "auc", y, a), ("binary", "accuracy", y, a),
            ("binary", "log_loss", y, a),
            ("regression", "rmse", rng.normal(size=300), rng.normal(size=300)),
            ("regression", "mae", rng.normal(size=300), rng.normal(size=300))):
        result = compare(task, metric, label, answer, answer)
        assert result["improvement"] == pytest.approx(0.0, abs=1e-12), metric
        assert result["p_value"] >= 0.5, (metric, result)


def test_mcnemar_is_the_mid_p_binomial_tail_of_the_discordant_rows():
    y = np.zeros(40, dtype=np.int64)
    a = np.zeros((40, 3))
    b = np.zeros((40, 3))
    a[:, 0] = 1  # the candidate right everywhere
    b[:, 0] = 1
    b[:9, 1] = 2  # the baseline wrong on 9 rows
    a[30:32, 2] = 2  # the candidate wrong on 2 of the others
    result = compare("multiclass", "accuracy", y, a, b)
    mid_p = (sum(math.comb(11, k) for k in range(10, 12)) + math.comb(11, 9) / 2) / 2 ** 11
    assert result["p_value"] == pytest.approx(mid_p, rel=1e-12)
    assert result["improvement"] == pytest.approx(7 / 40)
    assert result["candidate"] == pytest.approx(38 / 40)
    assert result["baseline"] == pytest.approx(31 / 40)
    assert "9 rows only the candidate" in result["note"]
    assert _binomial_tail(0, 0) == 1.0 and _binomial_tail(3, 2) == 0.0
    assert _binomial_tail(5000, 10000) == pytest.approx(0.5 + math.comb(10000, 5000) / 2 ** 10001)
    assert _binomial_tail(4, 4) == 1 / 16 and _binomial_tail(4, 4, mid=True) == 1 / 32


@pytest.mark.parametrize("task, metric", [("binary", "auc"), ("binary", "accuracy"),
                                          ("binary", "log_loss"), ("regression", "rmse"),
                                          ("regression", "mae")])
def test_equally_good_models_are_significantly_better_about_as_often_as_the_level_says(
        task, metric):
    """400 eval sets of 150 rows, two models of the same quality (independent noise): the
    one-sided p-value is below 0.05 in about 5 % of them (binomial noise of 400 draws: 1-10 %)."""
    rng = np.random.default_rng(7)
    below = 0
    for _ in range(400):
        if task == "binary":
            y, a, b = binary_pair(rng, 150, 1.5, 1.5)
        else:
            y = rng.normal(size=150)
            a, b = y + rng.normal(0, 1, 150), y + rng.normal(0, 1, 150)
        below += compare(task, metric, y, a, b)["p_value"] < 0.05
    assert 4 <= below <= 40, below


@pytest.mark.parametrize("task, metric", [("binary", "auc"), ("binary", "accuracy"),
                                          ("regression", "rmse")])
def test_a_clearly_better_model_is_seen(task, metric):
    rng = np.random.default_rng(11)
    seen = 0
    for _ in range(50):
        if task == "binary":
            y, a, b = binary_pair(rng, 300, 0.7, 2.0)
        else:
            y = rng.normal(size=300)
            a, b = y + rng.normal(0, 0.5, 300), y + rng.normal(0, 1.0, 300)
        result = compare(task, metric, y, a, b)
        seen += result["p_value"] < 0.05 and result["interval"][0] > 0
    assert seen >= 45, seen


def test_beyond_max_rows_the_auc_comes_from_a_uniform_sample_and_says_so():
    rng = np.random.default_rng(3)
    y, a, b = binary_pair(rng, 5000, 1.0, 1.5)
    full = compare("binary", "auc", y, a, b)
    sampled = compare("binary", "auc", y, a, b, max_rows=1000)
    assert sampled["rows"] == 5000 and "uniform sample of 1000 of the 5000 rows" in sampled["note"]
    assert sampled["candidate"] == pytest.approx(full["candidate"], abs=0.03)
    width = lambda r: r["interval"][1] - r["interval"][0]  # noqa: E731
    assert width(sampled) > width(full)  # fewer rows kept: an honestly wider interval


def test_one_class_or_no_rows_give_nan_and_say_why():
    one = compare("binary", "auc", np.ones(20, bool), np.linspace(0, 1, 20), np.full(20, .5))
    assert math.isnan(one["improvement"]) and "one class" in one["note"]
    empty = PairedComparison("regression", "rmse").result()
    assert math.isnan(empty["p_value"]) and empty["rows"] == 0


def test_a_metric_that_does_not_fit_the_task_is_refused():
    for task, metric in (("multiclass", "auc"), ("binary", "rmse"), ("regression", "accuracy"),
                         ("binary", "f1")):
        with pytest.raises(ValueError, match=metric):
            PairedComparison(task, metric)


def test_the_binomial_tail_matches_exact_sums_on_both_sides_of_the_mode():
    for n in [*range(0, 30), 101, 400]:
        for k in range(-1, n + 2):
            for mid in (False, True):
                exact = sum(math.comb(n, i) for i in range(max(k, 0), n + 1))
                if mid and 0 <= k <= n:
                    exact -= math.comb(n, k) / 2
                exact /= 2 ** n
                assert _binomial_tail(k, n, mid) == pytest.approx(exact, rel=1e-9, abs=1e-300)
