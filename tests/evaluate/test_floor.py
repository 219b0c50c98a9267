"""The naive floor: the train prior / mean as a reference no model may fail to beat clearly; the
serving-signature diff; the class map a baseline with other classes is scored in."""

import math

import numpy as np
import pytest

from conveyor.errors import InputError
from conveyor.evaluate import baselines as bl
from conveyor.evaluate import floor as fl
from conveyor.evaluate.metrics import Binary, Multiclass, Regression
from conveyor.evaluate.tasks import finite_metrics
from conveyor.evaluate.verdict import parse_thresholds


def judged(task, y, p, prior_or_mean, thresholds=None):
    """(passed, checks) of the floor for predictions `p` of labels `y`."""
    naive = fl.NaiveReference(task, prior_or_mean, "test")
    q = naive.predict(len(y))
    k = len(prior_or_mean) if task == "multiclass" else 0
    make = {"binary": Binary, "regression": Regression}.get(task, lambda: Multiclass(k))
    cand, ref = make(), make()
    cand.update(y, p)
    ref.update(y, q)
    stats = fl.RowStats(len(y), int(np.sum(y > 0.5)) if task == "binary" else 0,
                        fl.PairedSquaredError() if task == "regression" else None)
    if stats.paired is not None:
        stats.paired.update(y, p, q)
    checks = fl.floor_checks(task, fl.parse_floor(thresholds, task), cand.result(),
                             ref.result(), stats)
    return all(c[4] for c in checks), checks


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_a_thousand_class_model_at_0_76_percent_accuracy_is_not_blessed():
    """Mildly skewed classes (majority share ~0.3 %), 20 k eval rows; the model puts its top
    score on the right class 0.76 % of the time: twice the majority share, and still nowhere
    near worth serving."""
    rng = np.random.default_rng(11)
    k, n = 1000, 20_000
    prior = 1 / np.arange(1, k + 1) ** 0.2
    prior /= prior.sum()
    y = rng.choice(k, size=n, p=prior)
    logits = rng.normal(size=(n, k))
    right = rng.random(n) < 0.0076
    logits[right, y[right]] = 10.0  # right on 0.76 % of rows, a random guess elsewhere
    logits[~right, y[~right]] = -10.0
    p = softmax(logits)
    acc = Multiclass(k)
    acc.update(y, p)
    assert acc.result()["accuracy"] == pytest.approx(0.0076, abs=0.0015)
    assert acc.result()["accuracy"] > prior.max()  # it does beat the majority share
    passed, checks = judged("multiclass", y, p, prior.tolist())
    assert not passed
    accuracy = next(c for c in checks if c[0] == "accuracy")
    assert not accuracy[4] and "10% of the way to a perfect score" in accuracy[1]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_constant_model_is_not_blessed(task):
    rng = np.random.default_rng(3)
    n = 5000
    if task == "regression":
        y = rng.gamma(2.0, 50.0, n)
        constant = np.full(n, 97.0)  # near the mean, not exactly it
        passed, checks = judged(task, y, constant, 100.0)
    elif task == "binary":
        y = (rng.random(n) < 0.3).astype(float)
        passed, checks = judged(task, y, np.full(n, 0.8), 0.3)  # confident, constant
    else:
        y = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
        p = np.tile([0.2, 0.5, 0.3], (n, 1))
        passed, checks = judged(task, y, p, [0.5, 0.3, 0.2])
    assert not passed, checks


def test_a_model_that_predicts_exactly_the_prior_fails_every_default_rule():
    rng = np.random.default_rng(5)
    y = rng.choice(4, size=3000, p=[0.4, 0.3, 0.2, 0.1])
    prior = [0.4, 0.3, 0.2, 0.1]
    passed, checks = judged("multiclass", y, np.tile(prior, (3000, 1)), prior)
    assert not passed and not any(c[4] for c in checks)


def scored_binary(rng, n, signal):
    """Labels at a 40 % positive rate and scores carrying `signal` (0: none)."""
    y = (rng.random(n) < 0.4).astype(float)
    score = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
    return y, score


def test_shuffled_labels_on_a_small_eval_split_are_blessed_at_most_at_chance_level():
    """A model trained on shuffled labels answers scores unrelated to the labels. On 60 eval
    rows its AUC swings by +-0.15: a fixed margin would bless it often; the noise term keeps
    false blessings near the one-sided 2.3 % of two standard errors, over 400 draws."""
    rng = np.random.default_rng(2026)
    blessed = 0
    for _ in range(400):
        y, score = scored_binary(rng, 60, 0.0)
        p = 0.4 + 0.1 * (score - 0.5)  # calibrated near the prior: log loss is no help here
        blessed += judged("binary", y, p, 0.4)[0]
    assert blessed <= 0.05 * 400
    # The same size of eval split does bless a model with real signal (AUC ~0.85).
    good = sum(judged("binary", *scored_binary(rng, 60, 1.5), 0.4)[0] for _ in range(100))
    assert good >= 90


def test_regression_must_beat_the_train_mean_by_5_percent_and_chance():
    rng = np.random.default_rng(9)
    x = rng.normal(size=4000)
    y = 100 + 30 * x + rng.normal(scale=10, size=4000)
    assert judged("regression", y, 100 + 30 * x, float(y.mean()))[0]
    # Shuffled: the model's guesses are unrelated to these rows' labels.
    passed, checks = judged("regression", y, 100 + 30 * rng.permutation(x), float(y.mean()))
    assert not passed
    # 3 % better than the mean: real, but below the 5 % default; a lowered margin accepts it.
    slight = y.mean() + 0.03 * (y - y.mean())
    rmse = np.sqrt(np.mean((slight - y) ** 2)) / np.sqrt(np.mean((y.mean() - y) ** 2))
    assert 0.95 < rmse < 0.98
    assert not judged("regression", y, slight, float(y.mean()))[0]
    assert judged("regression", y, slight, float(y.mean()),
                  {"rmse": {"min_improvement_over_naive": 0.5}})[0]  # RMSE units (naive ~32)


def test_thresholds_lower_replace_or_turn_off_the_floor():
    assert fl.parse_floor(None, "binary") == {"auc": None, "log_loss": None}
    assert fl.parse_floor({"naive_floor": False, "auc": {"min": 0.6}}, "binary") == {}
    assert fl.parse_floor({"accuracy": {"min_improvement_over_naive": 0.02}},
                          "multiclass") == {"accuracy": 0.02}
    # Floor keys alone keep the default "beat the baseline" rule; a baseline rule replaces it.
    assert parse_thresholds({"accuracy": {"min_improvement_over_naive": 0.02},
                             "naive_floor": True}, "multiclass") == {
        "accuracy": {"min_improvement": 1e-6, "significance": 0.05}}
    assert parse_thresholds({"auc": {"min": 0.7, "min_improvement_over_naive": 0}},
                            "binary") == {"auc": {"min": 0.7}}
    rng = np.random.default_rng(1)
    y, score = scored_binary(rng, 60, 0.0)
    off = judged("binary", y, score, 0.4, {"naive_floor": False})
    assert off == (True, [])


@pytest.mark.parametrize("thresholds, words", [
    ({"naive_floor": "no"}, "'naive_floor' is true or false"),
    ({"auc": {"min_improvement_over_naive": "a lot"}}, "must be a finite number"),
    ({"auc": {"min_improvement_over_naive": float("nan")}}, "must be a finite number"),
])
def test_bad_floor_thresholds_are_named(thresholds, words):
    with pytest.raises(InputError, match="thresholds") as err:
        fl.parse_floor(thresholds, "binary")
        parse_thresholds(thresholds, "binary")
    assert words in str(err.value)


def test_a_nan_metric_fails_its_floor_check():
    stats = fl.RowStats(100, 40)
    checks = fl.floor_checks("binary", {"auc": None}, {"auc": float("nan")}, {"auc": 0.5}, stats)
    assert checks[0][4] is False


def test_an_eval_split_of_one_class_cannot_show_an_auc_beats_chance():
    y = np.ones(50)
    passed, checks = judged("binary", y, np.linspace(0.1, 0.9, 50), 0.7)
    auc = next(c for c in checks if c[0] == "auc")
    assert not auc[4] and "single class" in auc[1]


def test_naive_reference_from_counts_and_from_an_old_transform():
    ref = fl.naive_reference("multiclass", [30, 10, 60], None, lambda: pytest.fail("not used"))
    assert ref.prediction == pytest.approx([0.3, 0.1, 0.6])
    assert "Chinstrap: 0.100" in ref.describe(["Adelie", "Chinstrap", "Gentoo"])
    old = fl.naive_reference("binary", None, None, lambda: ([25, 75], "counted on 'train'"))
    assert old.prediction == pytest.approx(0.75) and old.source == "counted on 'train'"
    mean = fl.naive_reference("regression", None, {"mean": 8.3, "raw_mean": 4100.0},
                              lambda: pytest.fail("not used"))
    assert mean.prediction == 4100.0 and np.all(mean.predict(3) == 4100.0)


def regression_floor(y, p, mean, median=None, thresholds=None):
    """(passed, checks) of the regression floor as evaluate runs it: the scoring state fed the
    rows in two batches, then `State.floor_checks` (mean, median, R2)."""
    from conveyor.evaluate.scoring import State

    state = State("regression", 0, fl.NaiveReference("regression", mean, "test", median), ())
    for part in np.array_split(np.arange(len(y)), 2):
        rows = len(part)
        state.update({"value": p[part]}, "value", y[part], p[part],
                     {"overall": np.ones(rows, dtype=bool)}, rows)
    checks = state.floor_checks(fl.parse_floor(thresholds, "regression"))
    return all(c[4] for c in checks), checks


def test_a_train_mean_dragged_by_one_label_blesses_no_absurd_model():
    """Issue 25, class 3, as it happened: one body mass of 1e30 among 261 train rows made the
    train mean 3.8e27; a model answering ~2e14 g for every bird (R2 = -5.6e22 on the 81 eval
    rows) beat that mean by 24 orders of magnitude and was blessed. The train median (4,075 g)
    and R2 > 0 refuse it; a real model still passes every check."""
    rng = np.random.default_rng(25)
    y = rng.normal(4200.0, 800.0, 81)
    mean, median = 3.831e27, 4075.0
    absurd = rng.normal(2.0e14, 1.0e13, 81)
    passed, checks = regression_floor(y, absurd, mean, median)
    assert not passed
    by_rule = {c[1].split(":")[0].split(" by ")[0]: c for c in checks}
    assert by_rule["beats the naive reference"][4]  # the poisoned mean alone would bless it
    assert not by_rule["beats the train median (4075 for every row)"][4]
    r2 = next(c for c in checks if c[0] == "r2")
    assert not r2[4] and r2[2] < -1e22 and "the eval rows' own mean" in r2[1]
    # without a median (a transform before it was recorded), R2 alone still refuses it
    assert not regression_floor(y, absurd, mean)[0]
    good = y + rng.normal(0.0, 300.0, 81)
    assert regression_floor(y, good, float(np.mean(y)), median)[0]
    assert regression_floor(y, good, mean, median)[0]  # poisoned mean, real model: blessed


def test_a_negative_r2_is_never_blessed_even_with_the_floor_off():
    rng = np.random.default_rng(3)
    y = rng.normal(100.0, 10.0, 500)
    worse = y.mean() + 1.2 * (rng.permutation(y) - y.mean())  # R2 about -1.4
    passed, checks = regression_floor(y, worse, float(y.mean()), float(np.median(y)),
                                      {"naive_floor": False})
    assert not passed and [c[0] for c in checks] == ["r2"]
    # eval labels all equal: R2 is undefined, no check (the other rules still judge)
    same = np.full(50, 7.0)
    assert regression_floor(same, same + 0.5, 7.0, 7.0, {"naive_floor": False}) == (True, [])


def test_regression_metrics_keep_their_digits_for_large_labels():
    """R2 from sum(y^2) - sum(y)^2 / n lost every digit for labels of 1e9 +- 1 (it gave any
    value); the merged sum of squared deviations keeps them."""
    rng = np.random.default_rng(7)
    y = 1e9 + rng.normal(size=20_000)
    p = y + rng.normal(scale=0.5, size=20_000)
    acc = Regression()
    for part in np.array_split(np.arange(len(y)), 7):
        acc.update(y[part], p[part])
    assert acc.result()["r2"] == pytest.approx(0.75, abs=0.02)
    assert acc.sst == pytest.approx(np.sum((y - y.mean()) ** 2), rel=1e-9)


def test_the_median_is_read_from_the_transform_and_described():
    ref = fl.naive_reference("regression", None, {"raw_mean": 3.8e27, "raw_median": 4075.0},
                             lambda: pytest.fail("not used"))
    assert ref.median == 4075.0 and "and the train median 4075" in ref.describe([])
    old = fl.naive_reference("regression", None, {"raw_mean": 4100.0},
                             lambda: pytest.fail("not used"))
    assert old.median is None and "median" not in old.describe([])


class _Result:
    metrics = {"overall": {"auc": 0.81, "calibration": float("nan"), "examples": 10.0}}
    baseline_metrics = {"overall": {"auc": float("inf")}}
    naive_metrics = {"overall": {"auc": 0.5, "calibration": float("nan")}}
    blessed = False
    skipped_baselines = [{"uri": "x", "reason": "y"}]


def test_metrics_for_kfp_are_never_nan():
    out = finite_metrics(_Result())
    assert out == {"auc": 0.81, "examples": 10.0, "naive_auc": 0.5, "blessed": 0.0,
                   "skipped_baselines": 1.0}
    assert all(math.isfinite(v) for v in out.values())


# -- the serving contract ----------------------------------------------------------------------

def sig(inputs, outputs):
    return {"inputs": {n: {"dtype": d, "shape": [None]} for n, d in inputs.items()},
            "outputs": {n: {"dtype": d, "shape": [None]} for n, d in outputs.items()}}


SERVED = sig({"bill_length_mm": "float32", "island": "string"},
             {"probabilities": "float32", "class_id": "int64"})


@pytest.mark.parametrize("candidate, breaking, words", [
    (SERVED, False, []),
    (sig({"bill_length_mm": "float32", "island": "string"},
         {"probabilities": "float32", "class_id": "int64", "class_label": "string"}), False, []),
    (sig({"bill_length_mm": "float32", "island": "string", "Größe": "float32"},
         {"probabilities": "float32", "class_id": "int64"}), True, ["input 'Größe' added"]),
    (sig({"bill_length_mm": "float32"}, {"probabilities": "float32", "class_id": "int64"}),
     True, ["input 'island' removed"]),
    (sig({"bill_length_mm": "float64", "island": "string"},
         {"probabilities": "float32", "class_id": "int64"}),
     True, ["input 'bill_length_mm' changed from float32 [None] to float64 [None]"]),
    (sig({"bill_length_mm": "float32", "island": "string"}, {"probabilities": "float32"}),
     True, ["output 'class_id' removed"]),
])
def test_signature_diff(candidate, breaking, words):
    diff = bl.signature_diff(SERVED, candidate, "gs://b/m/3")
    assert diff["breaking"] is breaking and diff["against"] == "gs://b/m/3"
    for word in words:
        assert any(word in r for r in diff["reasons"]), diff["reasons"]


def test_an_output_added_to_a_one_output_signature_breaks_row_format_clients():
    served = sig({"x": "float32"}, {"value": "float32"})
    diff = bl.signature_diff(served, sig({"x": "float32"}, {"value": "float32",
                                                             "interval": "float32"}), "3")
    assert diff["breaking"] and diff["outputs"]["added"] == ["interval"]


def test_class_map_scores_a_baseline_in_the_union_of_classes():
    cmap = bl.ClassMap(["Adelie", "Chinstrap", "Gentoo"], ["Gentoo", "Adelie", "Emperor"])
    assert cmap.union == ["Adelie", "Chinstrap", "Gentoo", "Emperor"]
    assert cmap.known.tolist() == [True, False, True]
    pb = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])  # Gentoo; Emperor (wrong whatever y is)
    mapped = cmap.baseline_probabilities(pb)
    assert mapped.tolist() == [[0.2, 0.0, 0.7, 0.1], [0.1, 0.0, 0.1, 0.8]]
    acc = Multiclass(cmap.width)
    acc.update(np.array([2, 0]), mapped)
    assert acc.result()["accuracy"] == 0.5  # the Emperor answer counts as wrong, not as Adelie
