"""TF Serving's :classify and :regress REST verbs (issue 28), in the request and answer shapes of
TF Serving's REST documentation, on a real penguins classifier and a real body-mass regressor,
checked against the same models' :predict."""

from __future__ import annotations

import pytest
from support.serving import ROW, app_client

from conveyor.registry import ModelBasePath
from conveyor.serving.models import ModelManager

pytestmark = pytest.mark.local


def client(model_path, tmp_path, name):
    base = ModelBasePath(str(tmp_path / name))
    base.publish(model_path)
    manager = ModelManager(base.uri, name)
    manager.poll_once()
    return app_client(manager)


def test_classify_answers_a_score_per_class_as_tf_serving_does(penguin_model, tmp_path):
    with client(penguin_model / "model", tmp_path, "penguins") as http:
        context = {"island": "Biscoe", "sex": ["female"], "year": 2008}
        rest = {k: v for k, v in ROW.items() if k not in context}
        got = http.post("/v1/models/penguins:classify",
                        json={"context": context, "examples": [rest, {**rest, "bill_depth_mm":
                                                                          [19.0]}]})
        assert got.status_code == 200, got.text
        predicted = http.post("/v1/models/penguins/versions/1:predict",
                              json={"instances": [ROW, {**ROW, "bill_depth_mm": 19.0}]}).json()
        wrong = http.post("/v1/models/penguins:regress", json={"examples": [ROW]})
        repeated = http.post("/v1/models/penguins:classify",
                             json={"context": {"year": 2008}, "examples": [ROW]})
        two = http.post("/v1/models/penguins:classify",
                        json={"examples": [{**ROW, "year": [2008, 2009]}]})
        missing = http.post("/v1/models/penguins:classify",
                            json={"examples": [{k: v for k, v in ROW.items() if k != "sex"}]})
        gets = http.get("/v1/models/penguins:classify")
    result = got.json()["result"]
    assert len(result) == 2
    for scores, row in zip(result, predicted["predictions"]):
        assert [c for c, _ in scores] == ["Adelie", "Chinstrap", "Gentoo"]
        assert [s for _, s in scores] == pytest.approx(row["probabilities"], abs=1e-6)
    assert wrong.status_code == 400 and ":classify" in wrong.json()["error"]
    assert repeated.status_code == 400 and "'year'" in repeated.json()["error"]
    assert two.status_code == 400 and "examples[0].year has 2 values" in two.json()["error"]
    assert missing.status_code == 400 and "'sex'" in missing.json()["error"]
    assert gets.status_code == 405


def test_regress_answers_values_and_refuses_classify(regressor, tmp_path):
    row = {k: v for k, v in ROW.items() if k != "body_mass_g"} | {"species": "Gentoo"}
    rows = [row, {**row, "sex": []}]
    with client(regressor, tmp_path, "mass") as http:
        got = http.post("/v1/models/mass:regress", json={"examples": rows})
        predicted = http.post("/v1/models/mass:predict",
                              json={"instances": [rows[0], {**rows[1], "sex": None}]}).json()
        wrong = http.post("/v1/models/mass:classify", json={"examples": rows})
    assert got.status_code == 200, got.text
    assert got.json()["result"] == pytest.approx([p["value"] for p in predicted["predictions"]])
    assert wrong.status_code == 400 and ":regress" in wrong.json()["error"]
