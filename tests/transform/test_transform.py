"""Feature specs and fitting on small real datasets (no TensorFlow)."""

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support import write_dataset

from conveyor.errors import EmptyDataError, InputError, SchemaError
from conveyor.io import Dataset
from conveyor.local.seed import penguins, reference_rows
from conveyor.model.inputs import MISSING_INT
from conveyor.transform.fit import Fitted, fit
from conveyor.transform.propose import propose_spec
from conveyor.transform.spec import FeatureSpec


@pytest.fixture(scope="module")
def penguin_data(tmp_path_factory):
    return Dataset(write_dataset(tmp_path_factory.mktemp("p") / "ds", penguins()))


def types(ds):
    return {c.name: c.type for c in ds.info.columns}


def test_proposed_spec_follows_schema_and_label(penguin_data):
    spec = propose_spec(types(penguin_data), "species", {"Adelie": 1, "Gentoo": 1, "Chinstrap": 1})
    assert spec.task == "multiclass"
    assert spec.features["island"].kind == "categorical"
    assert spec.features["year"].kind == "numeric"
    assert "species" not in spec.features
    assert propose_spec(types(penguin_data), "body_mass_g").task == "regression"
    assert propose_spec({"x": "float64", "y": "int64"}, "y", {0: 5, 1: 3}).task == "binary"


def test_fit_is_readable_and_round_trips(penguin_data, tmp_path):
    spec = FeatureSpec.from_dict({
        "label": "species", "task": "multiclass",
        "features": {"bill_length_mm": {"kind": "numeric", "transform": "zscore"},
                     "body_mass_g": {"kind": "numeric", "transform": "bucketize", "buckets": 4},
                     "island": {"kind": "categorical", "top_k": 2},
                     "year": {"kind": "categorical", "encoding": "hash", "hash_buckets": 8}},
        "crosses": [{"features": ["island", "year"], "buckets": 16}]})
    fitted = fit(penguin_data, spec)
    train = penguin_data.read_table("train")
    assert fitted.label_classes == ["Adelie", "Chinstrap", "Gentoo"]
    bill = fitted.features["bill_length_mm"]
    assert abs(bill["mean"] - pc.mean(train.column("bill_length_mm")).as_py()) < 1e-9
    assert bill["impute"] == bill["mean"]
    assert len(fitted.features["body_mass_g"]["boundaries"]) == 3
    assert fitted.features["island"]["vocabulary"] == ["Biscoe", "Dream"]  # top 2 by count
    fitted.write(tmp_path / "t")
    again = Fitted.load(tmp_path / "t")
    assert again.to_dict() == fitted.to_dict()
    assert (tmp_path / "t" / "feature_spec.yaml").read_text().startswith("label: species")


@pytest.mark.parametrize("data, words", [
    ({"label": "species", "task": "multiclass", "features": {"island": {"kind": "numeric"}}},
     "feature 'island' is numeric but column 'island' holds string values"),
    ({"label": "species", "task": "multiclass", "features": {"beak": {"kind": "numeric"}}},
     "feature 'beak' is not a column"),
    ({"label": "kind", "task": "multiclass", "features": {"island": {"kind": "categorical"}}},
     "label 'kind' is not a column"),
    ({"label": "species", "task": "regression", "features": {"island": {"kind": "categorical"}}},
     "a regression label must be numeric"),
    ({"label": "species", "task": "binary", "features": {"island": {"kind": "categorical"}}},
     "a binary label needs exactly 2 classes; 'species' has 3"),
])
def test_spec_that_does_not_fit_the_data_is_named(penguin_data, data, words):
    with pytest.raises(SchemaError) as err:
        fit(penguin_data, FeatureSpec.from_dict(data))
    assert words in str(err.value)


@pytest.mark.parametrize("data, words", [
    ({"label": "y", "task": "ranking", "features": {"x": {"kind": "numeric"}}}, "task 'ranking'"),
    ({"label": "y", "task": "binary", "features": {"y": {"kind": "numeric"}}},
     "cannot also be a feature"),
    ({"label": "y", "task": "binary", "features": {"x": {"kind": "numeric", "top_k": 3}}},
     "unknown key(s) ['top_k'] for a numeric feature"),
    ({"label": "y", "task": "binary", "features": {"x": {"kind": "numeric", "transform": "sqrt"}}},
     "transform 'sqrt'"),
    ({"label": "y", "task": "binary", "features": {"x": {"kind": "numeric"}},
      "crosses": [{"features": ["x", "x"]}]}, "'x' is not a categorical feature"),
])
def test_malformed_specs_are_named(data, words):
    with pytest.raises(InputError) as err:
        FeatureSpec.from_dict(data)
    assert words in str(err.value)


def test_label_class_unseen_in_training_is_refused(tmp_path):
    table = penguins()
    from conveyor.io import DatasetWriter

    train = table.filter(pc.not_equal(table.column("species"), "Chinstrap"))
    with DatasetWriter(tmp_path / "ds", table.schema, ["train", "eval"], {}) as w:
        w.write("train", train)
        w.write("eval", table)
    spec = propose_spec(types(Dataset(tmp_path / "ds")), "species", {"a": 1, "b": 1, "c": 1})
    with pytest.raises(SchemaError, match=r"split 'eval' has label class\(es\) \['Chinstrap'\]"):
        fit(Dataset(tmp_path / "ds"), spec)


def test_all_null_label_in_train_is_refused(tmp_path):
    table = reference_rows(300)
    table = table.set_column(10, "label", pa.nulls(300, pa.int64()))
    ds = Dataset(write_dataset(tmp_path / "ds", table))
    spec = FeatureSpec.from_dict({"label": "label", "task": "binary",
                                  "features": {"f0": {"kind": "numeric"}}})
    with pytest.raises(EmptyDataError, match="no row with a label"):
        fit(ds, spec)


# -- names, types and the proposal on a stranger's table --------------------------------------


@pytest.mark.parametrize("column, expected", [
    ("Area_m2", "Area_m2"), ("from", "from_"), ("class", "class_"), ("lambda", "lambda_"),
    ("2nd floor", "f_2nd_floor"), ("a/b-c", "a_b_c"), ("prix €", "prix__"), ("Âge", "Age"),
    ("größe", "gro_e"), ("", "f_"), ("_x", "f_x"), ("self", "self_"), ("id", "id"),
    ("match", "match_"), ("features", "features"), ("prediction", "prediction_"),
    ("the \"island\"", "the__island_"),
])
def test_every_column_name_maps_to_a_model_input(column, expected):
    from conveyor.transform.spec import input_name

    assert input_name(column) == expected


def test_clashing_inputs_are_refused_naming_both_columns():
    with pytest.raises(SchemaError, match="columns 'a b' and 'a_b' would both feed model input"):
        FeatureSpec.from_dict({"label": "y", "task": "regression", "features": {
            "a b": {"kind": "numeric"}, "a_b": {"kind": "numeric"}}})
    spec = FeatureSpec.from_dict({"label": "y", "task": "regression", "features": {
        "a b": {"kind": "numeric", "input": "a_space_b"}, "a_b": {"kind": "numeric"}}})
    assert spec.features["a b"].input_name == "a_space_b"


@pytest.fixture(scope="module")
def houses_data(tmp_path_factory):
    from conveyor.local.seed import houses

    return Dataset(write_dataset(tmp_path_factory.mktemp("h") / "ds", houses(4000)))


def test_the_proposal_reads_the_statistics_like_a_data_scientist(houses_data):
    from conveyor.transform.fit import column_statistics

    t = types(houses_data)
    stats = column_statistics(houses_data, "train", list(t))
    spec = propose_spec(t, "Price", stats=stats[1])
    assert spec.task == "regression" and spec.label_transform == "log"
    assert set(spec.excluded) == {"Id", "Country"}
    assert "identifies rows" in spec.excluded["Id"] and "single value" in spec.excluded["Country"]
    f = spec.features
    assert (f["class"].kind, f["HasGarden"].kind, f["SoldOn"].kind) == \
        ("numeric", "categorical", "datetime")
    assert f["class"].also_categorical  # an integer with few values: a number and a category
    assert f["from"].input_name == "from_" and f["Street Name"].input_name == "Street_Name"
    assert f["Street Name"].encoding == "vocabulary"
    assert all(feature.why for feature in f.values())
    fitted = fit(houses_data, spec, stats=stats)
    # a bool with NULLs: three values, NULL (as the model sees it, MISSING_INT) one of them
    assert sorted(fitted.features["HasGarden"]["vocabulary"]) == \
        sorted(["0", "1", str(MISSING_INT)])
    assert fitted.features["SoldOn"]["parts"] == ["days", "month", "weekday"]
    assert fitted.label_stats["transform"] == "log" and fitted.label_stats["raw_mean"] > 1e5


def test_high_cardinality_strings_are_hashed_and_ids_left_out(tmp_path):
    n = 30_000
    table = pa.table({"code": [f"c{i % 12000}" for i in range(n)],
                      "ref": [f"r{i}" for i in range(n)],
                      "x": [float(i % 7) for i in range(n)], "y": [i % 2 for i in range(n)]})
    data = Dataset(write_dataset(tmp_path / "ds", table))
    from conveyor.transform.fit import column_statistics

    stats = column_statistics(data, "train", ["code", "ref", "x", "y"])
    spec = propose_spec(types(data), "y", stats=stats[1])
    assert spec.task == "binary"
    assert spec.features["code"].encoding == "hash" and spec.features["code"].hash_buckets >= 16384
    assert "ref" in spec.excluded


def test_labels_beyond_float32_are_refused_before_training(tmp_path):
    table = pa.table({"x": [float(i) for i in range(40)],
                      "y": [1e39 if i == 3 else float(i) for i in range(40)]})
    data = Dataset(write_dataset(tmp_path / "ds", table))
    spec = FeatureSpec.from_dict({"label": "y", "task": "regression",
                                  "features": {"x": {"kind": "numeric"}}})
    with pytest.raises(SchemaError, match="beyond float32's range"):
        fit(data, spec)
