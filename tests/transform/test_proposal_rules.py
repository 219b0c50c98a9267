"""The proposal's rules for categories and integers (issue 26, items 1 and 2), on train-split
statistics computed from real columns, and what fitting makes of them (no TensorFlow)."""

import numpy as np
import pyarrow as pa
import pytest
from support import write_dataset

from conveyor.errors import InputError, SchemaError
from conveyor.io import Dataset
from conveyor.model.inputs import MISSING_INT
from conveyor.stats.columns import ColumnStatistics
from conveyor.transform.fit import column_statistics, fit
from conveyor.transform.propose import min_count, propose_spec
from conveyor.transform.spec import FeatureSpec


def proposed(columns: dict, label_values=None):
    """The spec proposed for `columns` (name -> pyarrow array) and a float label `y`."""
    n = len(next(iter(columns.values())))
    columns = {**columns, "y": pa.array(label_values if label_values is not None
                                        else np.linspace(0, 1, n))}
    stats = {}
    for name, array in columns.items():
        stats[name] = ColumnStatistics(name, _type(array.type))
        stats[name].update(array)
    return propose_spec({k: _type(a.type) for k, a in columns.items()}, "y", stats=stats)


def _type(t) -> str:
    return {pa.int64(): "int64", pa.float64(): "float64", pa.string(): "string",
            pa.bool_(): "bool"}[t]


def test_a_name_like_string_is_left_out_with_its_reason():
    rng = np.random.default_rng(0)
    n = 400  # 260 distinct names in 400 rows: 65 % distinct, each seen 1.5 times on average
    names = pa.array([f"name {i}" for i in rng.integers(0, 260, n)])
    distinct = len(set(names.to_pylist()))
    assert 0.5 * n < distinct < 0.95 * n  # under the identifier cutoff, over the name-like one
    spec = proposed({"name": names, "colour": pa.array(["red", "blue"] * (n // 2))})
    assert "name" not in spec.features
    assert "name-like" in spec.excluded["name"] and f"{distinct} distinct" in spec.excluded["name"]
    assert spec.features["colour"].kind == "categorical"  # 2 values: a plain category


def test_a_string_with_repeated_values_is_kept_with_a_minimum_count(tmp_path):
    n = 3000  # 20 values seen 150 times each, and 100 seen 2 times
    values = [f"v{i % 20}" for i in range(n - 200)] + [f"rare{i // 2}" for i in range(200)]
    table = pa.table({"s": values, "y": np.arange(n, dtype=float)})
    data = Dataset(write_dataset(tmp_path / "ds", table, ratios={"train": 1.0}))
    stats = column_statistics(data, "train", ["s", "y"])
    spec = propose_spec({"s": "string", "y": "float64"}, "y", stats=stats[1])
    f = spec.features["s"]
    assert (f.kind, f.encoding, f.min_count) == ("categorical", "vocabulary", 5)
    assert "seen >= 5 times" in f.why and "OOV" in f.why
    fitted = fit(data, spec, stats=stats)
    assert sorted(fitted.features["s"]["vocabulary"]) == sorted(f"v{i}" for i in range(20))
    assert fitted.features["s"]["rows_out_of_vocabulary"] == 200  # they train the OOV vector
    assert spec.to_dict()["features"]["s"]["min_count"] == 5


def test_the_minimum_count_shrinks_for_small_tables():
    assert [min_count(r) for r in (40, 300, 600, 999, 1000, 10**6)] == [2, 2, 3, 4, 5, 5]


def test_null_is_its_own_value_when_frequent(tmp_path):
    n = 1000
    s = pa.array([None if i % 4 == 0 else f"v{i % 3}" for i in range(n)])
    k = pa.array([None if i % 250 == 0 else i % 3 for i in range(n)], pa.int64())  # 4 NULLs
    table = pa.table({"s": s, "k": k, "y": np.arange(n, dtype=float)})
    data = Dataset(write_dataset(tmp_path / "ds", table, ratios={"train": 1.0}))
    spec = FeatureSpec.from_dict({"label": "y", "task": "regression", "features": {
        "s": {"kind": "categorical", "min_count": 5},
        "k": {"kind": "categorical", "min_count": 5}}})
    fitted = fit(data, spec)
    assert "" in fitted.features["s"]["vocabulary"]  # 250 NULLs: a value of their own
    assert str(MISSING_INT) not in fitted.features["k"]["vocabulary"]  # 4: out of vocabulary
    assert fitted.features["k"]["rows_out_of_vocabulary"] == 4


def test_small_integers_are_a_number_and_a_category(tmp_path):
    n = 2000
    table = pa.table({"pixel": pa.array([i % 17 for i in range(n)], pa.int64()),
                      "big": pa.array([i % 500 for i in range(n)], pa.int64()),
                      "y": np.arange(n, dtype=float)})
    data = Dataset(write_dataset(tmp_path / "ds", table, ratios={"train": 1.0}))
    stats = column_statistics(data, "train", ["pixel", "big", "y"])
    spec = propose_spec({"pixel": "int64", "big": "int64", "y": "float64"}, "y", stats=stats[1])
    pixel = spec.features["pixel"]
    assert (pixel.kind, pixel.transform, pixel.also_categorical, pixel.period) == \
        ("numeric", "zscore", True, None)
    assert "17 distinct values" in pixel.why and "category" in pixel.why
    flag = proposed({"flag": pa.array([i % 2 for i in range(n)], pa.int64())}).features["flag"]
    assert (flag.kind, flag.also_categorical) == ("numeric", False)  # 0/1: the number says all
    big = spec.features["big"]
    assert (big.kind, big.also_categorical) == ("numeric", False)  # > 20 values: a number
    fitted = fit(data, spec, stats=stats)
    categories = fitted.features["pixel"]["categories"]
    assert sorted(categories["vocabulary"], key=int) == [str(i) for i in range(17)]
    assert categories["oov_buckets"] == 1 and "categories" not in fitted.features["big"]
    again = FeatureSpec.from_dict(spec.to_dict())  # the spec round-trips
    assert again.features["pixel"].also_categorical and again.features["pixel"].min_count == 5


@pytest.mark.parametrize("name, values, period", [
    ("hour", range(24), 24), ("dep_hour", range(5, 24), 24), ("Month", range(1, 13), 12),
    ("weekday", range(7), 7), ("day_of_week", range(1, 8), 7),
])
def test_cyclic_integers_get_sin_and_cos_as_well(name, values, period):
    values = list(values)
    spec = proposed({name: pa.array(values * (1200 // len(values)), pa.int64())})
    f = spec.features[name]
    assert (f.kind, f.also_categorical, f.period) == ("numeric", True, period)
    assert f"sin/cos on a cycle of {period}" in f.why


@pytest.mark.parametrize("name, values", [
    ("hour", range(0, 48)),  # not an hour of day
    ("month", range(0, 13)),  # 13 values
    ("count", range(24)),  # 24 values, and no cycle in the name
])
def test_integers_that_only_look_cyclic_stay_numbers(name, values):
    values = list(values)
    f = proposed({name: pa.array(values * (1200 // len(values)), pa.int64())}).features[name]
    assert f.period is None
    assert f.also_categorical == (len(values) <= 20)


def test_date_parts_are_encoded_on_their_cycle(tmp_path):
    import datetime as dt

    n = 400
    start = dt.datetime(2024, 1, 1)
    table = pa.table({"at": pa.array([start + dt.timedelta(hours=7 * i) for i in range(n)],
                                     pa.timestamp("us")),
                      "y": np.arange(n, dtype=float)})
    data = Dataset(write_dataset(tmp_path / "ds", table, ratios={"train": 1.0}))
    stats = column_statistics(data, "train", ["at", "y"])
    spec = propose_spec({"at": "timestamp", "y": "float64"}, "y", stats=stats[1])
    assert "sin/cos" in spec.features["at"].why
    fitted = fit(data, spec, stats=stats)
    assert fitted.features["at"]["cyclic"] == ["month", "weekday", "hour"]
    off = FeatureSpec.from_dict({"label": "y", "task": "regression",
                                 "features": {"at": {"kind": "datetime", "cyclic": False}}})
    assert fit(data, off).features["at"]["cyclic"] == []


def test_bad_new_keys_are_refused_naming_the_feature():
    def spec(feature):
        return {"label": "y", "task": "regression", "features": {"x": feature}}

    with pytest.raises(InputError, match="'x': period must be a positive number"):
        FeatureSpec.from_dict(spec({"kind": "numeric", "period": 0}))
    with pytest.raises(InputError, match="'x': also_categorical must be true or false"):
        FeatureSpec.from_dict(spec({"kind": "numeric", "also_categorical": "yes"}))
    with pytest.raises(InputError, match="'x' min_count must be a positive integer"):
        FeatureSpec.from_dict(spec({"kind": "categorical", "min_count": 0}))
    floats = FeatureSpec.from_dict(spec({"kind": "numeric", "also_categorical": True}))
    with pytest.raises(SchemaError, match="'x' is also_categorical but column 'x' holds float64"):
        floats.check_columns({"x": "float64", "y": "float64"})


def test_a_minimum_count_no_value_reaches_is_refused_by_fit(tmp_path):
    table = pa.table({"s": [f"v{i}" for i in range(60)], "y": np.arange(60, dtype=float)})
    data = Dataset(write_dataset(tmp_path / "ds", table, ratios={"train": 1.0}))
    spec = FeatureSpec.from_dict({"label": "y", "task": "regression",
                                  "features": {"s": {"kind": "categorical", "min_count": 3}}})
    with pytest.raises(SchemaError, match="'s' has no value seen at least min_count=3 times"):
        fit(data, spec)
