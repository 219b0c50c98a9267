"""Streaming evaluation metrics against exact computations on the same numbers."""

import numpy as np
import pytest

from conveyor.errors import InputError
from conveyor.evaluate.metrics import Binary, Multiclass, Regression
from conveyor.evaluate.verdict import parse_thresholds, rule_checks


def exact_auc(y, p):
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    pos = y.sum()
    return (ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos))


def test_binary_metrics_streamed_in_batches_match_exact_values():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20000)
    p = np.clip(0.3 * y + rng.random(20000) * 0.7, 0, 1)
    acc = Binary()
    for start in range(0, len(y), 3000):
        acc.update(y[start:start + 3000], p[start:start + 3000])
    m = acc.result()
    assert m["auc"] == pytest.approx(exact_auc(y, p), abs=1e-3)
    assert m["accuracy"] == pytest.approx(np.mean((p >= 0.5) == y), abs=1e-3)
    tp = np.sum((p >= 0.5) & (y == 1))
    assert m["precision"] == pytest.approx(tp / np.sum(p >= 0.5), abs=1e-3)
    assert m["recall"] == pytest.approx(tp / y.sum(), abs=1e-3)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    assert m["log_loss"] == pytest.approx(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
    roc = acc.roc()
    assert roc["tpr"][0] == 1.0 and roc["fpr"][0] == 1.0 and roc["tpr"][-1] <= roc["tpr"][0]
    assert sum(map(sum, acc.confusion())) == 20000


def test_multiclass_metrics():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    acc = Multiclass(3)
    acc.update(y, p)
    m = acc.result()
    assert m["accuracy"] == pytest.approx(4 / 6)
    f1 = [0.5, 0.8, 2 / 3]  # precision/recall: 1/2,1/2; 2/3,1; 1,1/2
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert acc.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_regression_metrics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 5.0])
    acc = Regression()
    acc.update(y[:2], p[:2])
    acc.update(y[2:], p[2:])
    m = acc.result()
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert m["r2"] == pytest.approx(1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2))


def test_thresholds_follow_each_metrics_direction():
    rules = parse_thresholds({"auc": {"min": 0.7, "min_improvement": 0.0},
                              "log_loss": {"min_improvement_relative": 0.05}}, "binary")
    checks = rule_checks(rules, {"auc": 0.8, "log_loss": 0.40}, {"auc": 0.81, "log_loss": 0.45})
    outcome = {(c.metric, c.rule.split()[0]): c.passed for c in checks}
    assert outcome == {("auc", ">="): True, ("auc", "improves"): False,
                       ("log_loss", "improves"): True}  # 0.40 is 11% lower than 0.45
    assert all(c.passed for c in rule_checks(rules, {"auc": 0.8, "log_loss": 0.4}, None))
    # Without thresholds: better than the baseline by more than the rows' noise.
    assert parse_thresholds({}, "regression") == {"rmse": {"min_improvement": 1e-6,
                                                           "significance": 0.05}}


@pytest.mark.parametrize("thresholds, words", [
    ({"f2": {"min": 1}}, "unknown metric 'f2'"),
    ({"auc": {"at_least": 1}}, "needs some of"),
    ({"auc": {"significance": 0.5}}, "between 0 and 0.5"),
    ({"auc": {"significance": 0}}, "between 0 and 0.5"),
    ({"calibration_error": {"significance": 0.05}}, "no paired test of calibration_error"),
])
def test_bad_thresholds_are_named(thresholds, words):
    with pytest.raises(InputError, match="thresholds") as err:
        parse_thresholds(thresholds, "binary")
    assert words in str(err.value)
