"""A binary model's decisions (conveyor.evaluate.cutoffs): the confusion matrix at the decision
threshold on a set counted by hand, the threshold table against precision / recall / F1 counted
row by row (and scikit-learn's, when it is installed) at the same cut-offs, in memory that does
not grow with the rows, and what evaluation.json and the reports say about them."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from support import HAND_P, HAND_Y, accumulated, binary_result

from conveyor.evaluate import cutoffs
from conveyor.evaluate import metrics as m
from conveyor.evaluate.evaluate import identity
from conveyor.evaluate.outputs import markdown, write_outputs
from conveyor.model import decision
from conveyor.registry import ModelBasePath


def by_rows(y: np.ndarray, p: np.ndarray, t: float) -> dict:
    """Counted row by row, as sklearn's precision_score(y, p >= t) counts."""
    hit = p >= t
    tp, fp = int((hit & y).sum()), int((hit & ~y).sum())
    fn, tn = int((~hit & y).sum()), int((~hit & ~y).sum())
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": tp / (tp + fp),
            "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn),
            "predicted_positive": hit.mean(), "accuracy": (tp + tn) / len(y)}


def test_the_confusion_matrix_at_the_decision_threshold_on_a_set_counted_by_hand():
    acc = accumulated(HAND_Y, HAND_P)
    d = acc.decision()
    assert d["threshold"] == decision.THRESHOLD == 0.5
    assert "serving signature" in d["source"]
    assert d["confusion"] == {"tn": 3, "fp": 1, "fn": 2, "tp": 4}
    assert acc.confusion() == [[3, 1], [2, 4]]  # what KFP's confusion matrix gets
    result = acc.result()
    assert result["precision"] == pytest.approx(4 / 5)
    assert result["recall"] == pytest.approx(4 / 6)
    assert result["accuracy"] == pytest.approx(7 / 10)
    chosen = [r for r in d["table"] if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["threshold"] == 0.5
    assert [r["threshold"] for r in d["table"]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    at_09 = d["table"][-1]  # only 0.95 (a positive): precision 1, recall 1/6
    assert (at_09["tp"], at_09["fp"], at_09["precision"]) == (1, 0, 1.0)
    assert at_09["recall"] == pytest.approx(1 / 6)
    assert d["positive_rate"] == pytest.approx(0.6)
    assert d["mean_predicted"] == pytest.approx(HAND_P.mean())


def test_the_threshold_table_matches_rates_counted_row_by_row_and_sklearn():
    rng = np.random.default_rng(7)
    n = 100_000
    p = rng.beta(2, 3, n).astype(np.float32)  # a model's float32 probabilities
    p[:9] = np.array(cutoffs.CUTOFFS, dtype=np.float32)  # rows right on each cut-off
    y = rng.random(n) < p
    d = accumulated(y, p).decision()
    for row in d["table"]:
        want = by_rows(y, p.astype(np.float64), row["threshold"])
        for key, value in want.items():
            assert row[key] == pytest.approx(value, abs=1e-12), (row["threshold"], key)
    best = d["best_f1"]
    assert best["f1"] == pytest.approx(by_rows(y, p, best["threshold"])["f1"], abs=1e-12)
    assert best["f1"] >= max(r["f1"] for r in d["table"])
    exact_best = max(by_rows(y, p, t)["f1"] for t in np.quantile(p, np.linspace(0, 1, 100)))
    assert best["f1"] >= exact_best - 1e-3  # the grid's best is the best within 1e-4

    sklearn = pytest.importorskip("sklearn.metrics")
    for row in d["table"]:
        hit = p.astype(np.float64) >= row["threshold"]
        assert row["precision"] == pytest.approx(sklearn.precision_score(y, hit), abs=1e-12)
        assert row["recall"] == pytest.approx(sklearn.recall_score(y, hit), abs=1e-12)
        assert row["f1"] == pytest.approx(sklearn.f1_score(y, hit), abs=1e-12)


def test_a_million_rows_keep_the_same_fixed_size_state():
    rng = np.random.default_rng(1)
    acc = m.Binary()
    for _ in range(10):  # 1 M rows, 100 k at a time
        p = rng.random(100_000)
        acc.update(rng.random(100_000) < p, p)
    assert acc.pos.shape == acc.neg.shape == (m.BINS,)  # what the table is read from
    d = acc.decision()
    assert sum(d["confusion"].values()) == 1_000_000
    assert len(json.dumps(d)) < 5_000


def test_rates_with_nothing_to_divide_by_are_null_not_zero():
    d = accumulated(np.zeros(4, dtype=bool), np.array([0.1, 0.2, 0.3, 0.4])).decision()
    top = d["table"][-1]
    assert top["precision"] is None and top["recall"] is None and top["f1"] is None
    assert d["best_f1"] is None
    assert m.Binary().decision() is None


def test_evaluation_json_holds_the_decision_and_the_model(tmp_path):
    result = binary_result(accumulated(HAND_Y, HAND_P))
    write_outputs(result, tmp_path / "e", tmp_path / "r.md")
    saved = json.loads((tmp_path / "e" / "evaluation.json").read_text())
    assert saved["decision"]["threshold"] == 0.5
    assert saved["decision"]["confusion"] == {"tn": 3, "fp": 1, "fn": 2, "tp": 4}
    assert saved["decision"]["table"][4] == {
        "threshold": 0.5, "tp": 4, "fp": 1, "fn": 2, "tn": 3, "predicted_positive": 0.5,
        "precision": 0.8, "recall": pytest.approx(4 / 6), "f1": pytest.approx(8 / 11),
        "accuracy": 0.7, "chosen": True}
    assert saved["model"]["name"] == "penguins" and saved["model"]["newest_version"] == 2
    text = markdown(result)
    assert "Model: penguins, candidate, not published yet (newest published: version 2)" in text
    assert "TN 3, FP 1, FN 2, TP 4" in text and "| 0.5 (decision) | 0.500 | 0.800 |" in text
    assert "calibration " in text and "1 is perfect, above 1 over-predicts" in text


def test_identity_names_the_model_and_its_version(tmp_path):
    base = ModelBasePath(str(tmp_path / "churn"))
    run = types.SimpleNamespace(fitted=types.SimpleNamespace(spec=types.SimpleNamespace(
        label="churned")), task="binary", split="eval")
    published = identity(run, f"{base.uri}/3", base, [1, 3], (f"{base.uri}/1", {}))
    assert published["name"] == "churn" and published["version"] == 3
    assert published["newest_version"] == 3 and published["served_version"] == 1
    fresh = identity(run, "/runs/9/model", base, [1, 3], None)
    assert fresh["version"] is None and fresh["served_version"] is None
    alone = identity(run, "/runs/9/model", None, [], None)
    assert alone["name"] is None and alone["label"] == "churned" and alone["split"] == "eval"
