"""The promotion rule on paired comparisons, and the base path's labels (local folder)."""

import json
import math
import threading

import pytest

from conveyor.errors import InputError
from conveyor.promote import rule
from conveyor.push import push as pushing
from conveyor.registry import LABELS, LabelsError, ModelBasePath


def comparison(metric, candidate, baseline, p, rows=200, improvement=None):
    if improvement is None:
        improvement = (baseline - candidate) if metric in ("log_loss", "rmse", "mae") else (
            candidate - baseline)
    return {"metric": metric, "method": "m", "rows": rows, "candidate": candidate,
            "baseline": baseline, "improvement": improvement, "p_value": p,
            "interval": [0.0, 0.0], "note": ""}


def test_a_tie_on_accuracy_promotes_a_significantly_worse_log_loss_rolls_back():
    forward = {"accuracy": comparison("accuracy", 0.9, 0.9, 0.5),
               "log_loss": comparison("log_loss", 0.30, 0.30, 0.5)}
    reverse = {"accuracy": comparison("accuracy", 0.9, 0.9, 0.5),
               "log_loss": comparison("log_loss", 0.30, 0.30, 0.5)}
    assert rule.decide("multiclass", forward, reverse).promote
    reverse["log_loss"] = comparison("log_loss", 0.20, 0.45, 0.001)  # champion much better
    decision = rule.decide("multiclass", forward, reverse)
    assert not decision.promote and decision.action == "rollback"
    assert any("log_loss: the challenger is significantly worse" in r for r in decision.reasons)


def test_lower_primary_metric_rolls_back_even_when_not_significant():
    forward = {"rmse": comparison("rmse", 10.2, 10.0, 0.7)}
    reverse = {"rmse": comparison("rmse", 10.0, 10.2, 0.3), "mae": comparison("mae", 8, 8, 0.5)}
    decision = rule.decide("regression", forward, reverse)
    assert not decision.promote and "rmse: challenger 10.2 < champion 10" in decision.reasons[0]


def test_no_evidence_keeps_the_champion_and_bad_arguments_are_named():
    forward = {"auc": comparison("auc", math.nan, math.nan, math.nan, improvement=math.nan)}
    reverse = {"auc": comparison("auc", math.nan, math.nan, math.nan, improvement=math.nan)}
    assert not rule.decide("binary", forward, reverse).promote
    with pytest.raises(InputError, match="could not be compared"):
        rule.decide("binary", None, reverse)
    with pytest.raises(InputError, match="between 0 and 0.5"):
        rule.decide("binary", forward, reverse, significance=0.7)


def fake_versions(tmp_path, *numbers):
    for n in numbers:
        (tmp_path / str(n)).mkdir(parents=True)
        (tmp_path / str(n) / "saved_model.pb").write_bytes(b"x")
    return ModelBasePath(str(tmp_path))


def test_labels_are_checked_and_written_whole(tmp_path):
    base = fake_versions(tmp_path / "m", 1, 2)
    assert base.labels() == {} and base.served() == 2  # no file: the newest
    assert base.update_labels(lambda labels: {"champion": 1, "challenger": 2}) == {
        "champion": 1, "challenger": 2}
    assert json.loads((tmp_path / "m" / LABELS).read_text()) == {"champion": 1, "challenger": 2}
    assert base.served() == 1
    with pytest.raises(LabelsError, match="version 7, which is not a published version"):
        base.update_labels(lambda labels: {**labels, "golden": 7})
    with pytest.raises(LabelsError, match="'Gold Ünï' is not a label name"):
        base.update_labels(lambda labels: {**labels, "Gold Ünï": 1})
    with pytest.raises(LabelsError, match="expected a version number"):
        base.update_labels(lambda labels: {**labels, "champion": True})
    assert base.labels() == {"champion": 1, "challenger": 2}  # nothing written by the above
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".labels")]
    (tmp_path / "m" / LABELS).write_text("{not json")
    with pytest.raises(LabelsError, match=r"labels\.json: not JSON"):
        base.labels()
    (tmp_path / "m" / LABELS).write_text('{"champion": 1}')
    assert base.update_labels(lambda labels: {}) == {}
    assert not (tmp_path / "m" / LABELS).exists() and base.served() == 2


def test_concurrent_label_updates_lose_nothing(tmp_path):
    base = fake_versions(tmp_path / "m", 1)
    threads = [threading.Thread(target=lambda i=i: ModelBasePath(base.uri).update_labels(
        lambda labels: {**labels, f"l{i}": 1})) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert base.labels() == {f"l{i}": 1 for i in range(12)}


def test_push_labels_by_mode(tmp_path):
    base = fake_versions(tmp_path / "m", 1, 2)
    # champion mode without labels keeps today's behaviour: no file at all
    assert pushing._label(base, 2, "champion", previous=1) == {}
    assert not (tmp_path / "m" / LABELS).exists()
    # a challenger without labels challenges the version served before it
    assert pushing._label(base, 2, "challenger", previous=1) == {"champion": 1,
                                                                 "challenger": 2}
    fake_versions(tmp_path / "m", 3)
    assert pushing._label(base, 3, "challenger", previous=2) == {"champion": 1,
                                                                 "challenger": 3}
    assert pushing._label(base, 3, "champion", previous=2) == {"champion": 3}
    # the first version of a base path is its champion, whatever the mode
    first = fake_versions(tmp_path / "n", 1)
    assert pushing._label(first, 1, "challenger", previous=None) == {"champion": 1}
