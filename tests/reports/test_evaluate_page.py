"""The evaluate page of a binary model: a header naming the model and its version, the confusion
matrix at the stated decision threshold, the threshold table, calibration in one line, and one
slice table (not two that repeat each other)."""

from __future__ import annotations

import re

import numpy as np
from support import HAND_P, HAND_Y, accumulated, binary_result

from conveyor.evaluate.outputs import write_outputs


def cells(page: str, heading: str) -> list[list[str]]:
    """The text of each row of the first table after `heading`."""
    part = page.split(heading, 1)[1].split("</table>", 1)[0]
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>",
                                                                    row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", part, re.S)]


def test_binary_page_header_decision_threshold_calibration_and_one_slice_table(tmp_path):
    result = binary_result(accumulated(HAND_Y, HAND_P))
    write_outputs(result, tmp_path / "e", tmp_path / "r.md", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    # the header: the model's name, that it is not published yet, the newest and served versions
    assert "<h1>conveyor evaluate: penguins</h1>" in page
    assert "<title>conveyor evaluate: penguins: BLESSED</title>" in page
    assert "candidate, not published yet (newest published: version 2)" in page
    assert "<code>/runs/7/train/model</code>" in page and ", serving version 2" in page
    assert "baseline: version 2: /models/penguins/2" in page
    # the threshold, where it comes from, and the confusion matrix there, counted by hand
    assert "decision threshold <b>0.5</b>: the serving signature&#x27;s class and class_label" \
        in page
    grid = cells(page, "<h2>Decisions at the threshold</h2>")
    assert grid[0] == ["", "predicted female", "predicted male", "rows"]
    assert grid[1] == ["true female", "3 (75.0%, TN)", "1 (25.0%, FP)", "4"]
    assert grid[2] == ["true male", "2 (33.3%, FN)", "4 (66.7%, TP)", "6"]
    assert page.count("<svg") == 4  # the confusion matrix heat map beside ROC, PR, calibration
    assert "confusion matrix at 0.5" in page
    # precision / recall / F1 by cut-off, the decision threshold's row marked
    table = cells(page, "Precision, recall and F1 by cut-off")
    assert table[0][:5] == ["cut-off", "predicted positive", "precision", "recall", "F1"]
    by_cutoff = {row[0]: row for row in table[1:]}
    assert {"0.1", "0.5", "0.9"} <= set(by_cutoff)
    assert by_cutoff["0.5"][1:5] == ["0.500", "0.800", "0.667", "0.727"]
    assert by_cutoff["0.5"][-1].startswith("decision threshold")
    assert by_cutoff["0.9"][1:5] == ["0.100", "1.000", "0.167", "0.286"]
    # calibration in one line
    calibration = HAND_P.mean() / HAND_Y.mean()
    assert (f"calibration {calibration:.4g} = mean predicted probability {HAND_P.mean():.4g} / "
            "observed positive rate 0.6: 1 is perfect, above 1 over-predicts") in page
    # one slice table, every metric, the baseline and naive under each value
    assert page.count("<h2>Metrics by slice</h2>") == 1
    assert "Slices: candidate / baseline / naive" not in page
    slices = cells(page, "<h2>Metrics by slice</h2>")
    assert slices[0][:4] == ["slice", "examples", "auc", "auc_pr"]
    assert {"precision", "recall", "calibration"} <= set(slices[0])
    assert [row[0] for row in slices[1:]] == ["overall", "island=Dream"]
    assert re.fullmatch(r"0\.8 ?b 0\.8 · n 0\.8", slices[1][slices[0].index("precision")])


def test_a_page_without_a_base_path_names_the_label():
    from conveyor.reports.evaluate import render

    result = binary_result(accumulated(HAND_Y, HAND_P), baseline_metrics=None,
                           baseline_uri=None, baseline_version=None)
    result.model = dict(result.model, name=None, base_path=None, newest_version=None,
                        served_version=None)
    page = render(result)
    assert "<h1>conveyor evaluate: model of sex</h1>" in page
    assert "candidate, not published yet</b>" in page
    assert "under it n: the naive reference" in page
    assert np.isfinite(result.metrics["overall"]["calibration"])
