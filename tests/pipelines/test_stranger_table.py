"""A table nobody here designed, first time: the training pipeline with only `table`, `label`
and `model_base_path`, through kfp.local against the emulators.

`conveyor.local.seed.houses` has what real tables bring: mixed-case, keyword, spaced and unicode
column names, a bool, a DATE, an int-coded category, a high-cardinality string, an id, a constant
column, NULLs in numbers and strings, and a heavy-tailed positive label. The pushed model must be
at least as good as ordinary least squares on the same split, and answer raw values by its
documented input names.
"""

import json

import numpy as np
import pytest

from conveyor.io import Dataset
from conveyor.local import seed
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]

ROWS = 6000


@pytest.fixture(scope="module")
def houses_table(stack):
    table_id = "strangers.houses"
    seed.load_table(seed.houses(ROWS), table_id)
    return table_id


def ols_r2(train, evaluation) -> float:
    """Least squares on what a quick analyst would feed it: every numeric column (NULL ->
    train mean), the bool, the date as a day number, and one-hot categories."""
    def design(frame):
        cols = []
        for name in ("Area_m2", "Rooms", "âge"):
            cols.append(frame[name].astype(float).fillna(train[name].astype(float).mean()))
        cols.append(frame["HasGarden"].astype(float).fillna(0.0))
        cols.append((frame["SoldOn"].astype("datetime64[s]") - np.datetime64("2015-01-01"))
                    .dt.days.astype(float))
        x = np.column_stack([np.ones(len(frame)), *cols])
        onehot = [(text(frame[c])[:, None] == levels[c][None, :]).astype(float)
                  for c in ("class", "from")]
        return np.column_stack([x, *onehot])

    def text(column):
        return np.array(["NULL" if v is None or v != v else str(v) for v in column], dtype=object)

    levels = {c: np.unique(text(train[c]))[1:] for c in ("class", "from")}
    w, *_ = np.linalg.lstsq(design(train), train["Price"].to_numpy(float), rcond=None)
    y = evaluation["Price"].to_numpy(float)
    residual = y - design(evaluation) @ w
    return float(1 - (residual ** 2).mean() / y.var())


def test_a_strangers_table_trains_and_pushes_a_model_better_than_least_squares(
        houses_table, kfp_local, tmp_path):
    import tensorflow as tf

    from conveyor.pipelines import training

    base = str(tmp_path / "models" / "houses")
    training.pipeline(table=houses_table, label="Price", model_base_path=base)
    run = next(p for p in kfp_local.iterdir() if p.is_dir())

    # Ingest kept every name exactly, case and all.
    data = Dataset(run / "bigquery-ingest" / "dataset")
    assert data.schema.names == seed.houses(10).schema.names
    types = {c.name: c.type for c in data.info.columns}
    assert types["HasGarden"] == "bool" and types["SoldOn"] == "date"

    # The proposal: each decision with its reason, in the spec and the transform's output.
    spec = (run / "transform" / "preprocessing" / "feature_spec.yaml").read_text()
    fitted = json.loads((run / "transform" / "preprocessing" / "transform.json").read_text())
    proposed = fitted["feature_spec"]
    assert proposed["label_transform"] == "log"  # a heavy-tailed positive price
    assert set(proposed["excluded"]) == {"Id", "Country"}  # an id and a constant
    features = proposed["features"]
    # 20 integer codes: a number (their order) and a category
    assert (features["class"]["kind"], features["class"]["also_categorical"]) == ("numeric", True)
    assert features["HasGarden"]["kind"] == "categorical"
    assert features["SoldOn"]["kind"] == "datetime"
    assert features["Area_m2"]["transform"] in ("zscore", "log")  # log-normal, skewness ~1.5
    assert all(f.get("why") for f in features.values())
    inputs = {name: f["input"] for name, f in fitted["features"].items()}
    assert inputs["from"] == "from_" and inputs["class"] == "class_"
    assert inputs["Street Name"] == "Street_Name"
    assert inputs["âge"] == "age" and inputs["Area_m2"] == "Area_m2"
    assert "identifies rows" in spec and "input: from_" in spec

    # Pushed on the first run, and at least as good as least squares on the same split.
    assert ModelBasePath(base).versions() == [1]
    evaluation = json.loads((run / "evaluate" / "evaluation" / "evaluation.json").read_text())
    assert evaluation["blessed"]
    r2 = evaluation["metrics"]["overall"]["r2"]
    reference = ols_r2(data.read_table("train").to_pandas(), data.read_table("eval").to_pandas())
    assert r2 >= reference, f"conveyor R² {r2:.4f} below least squares {reference:.4f}"

    # Serving takes the raw values by input name: a date string, a bool as 1/0, NULLs.
    serve = tf.saved_model.load(f"{base}/1").signatures["serving_default"]
    row = {"Area_m2": [120.0], "Rooms": [5], "class_": [3], "HasGarden": [1],
           "SoldOn": ["2021-06-30"], "Street_Name": ["Oak street 7"], "from_": ["centre"],
           "age": [float("nan")]}
    kinds = serve.structured_input_signature[1]
    assert set(kinds) == set(row)
    out = serve(**{k: tf.constant(v, dtype=kinds[k].dtype) for k, v in row.items()})
    price = float(out["value"].numpy()[0])
    assert 50_000 < price < 5_000_000  # label units, not the log or z-scored scale
