import numpy as np
import pyarrow as pa
import pytest

from conveyor.errors import InputError, SchemaError
from conveyor.io.split import BUCKETS, SplitSpec, fingerprint_buckets


def test_default_ratios_are_train_eval_80_20():
    spec = SplitSpec.parse()
    assert spec.names == ("train", "eval")
    assert spec.upper == (8000, BUCKETS)


def test_canonical_order_whatever_the_mapping_order():
    # KFP hands dict parameters back with sorted keys: eval, test, train.
    spec = SplitSpec.parse({"test": 0.1, "eval": 0.1, "train": 0.8})
    assert spec.names == ("train", "eval", "test")
    assert spec.upper == (8000, 9000, BUCKETS)


@pytest.mark.parametrize("ratios, words", [
    ({"train": 0.8, "eval": 0.3}, "sum to 1"),
    ({"train": 1.2, "eval": -0.2}, "positive"),
    ({"train": True}, "positive"),
    ({"Train": 1.0}, "not valid"),
    ({"../x": 1.0}, "not valid"),
    ({"train": 0.99999, "eval": 0.00001}, "below 1/10000"),
])
def test_bad_ratios_are_refused_with_the_reason(ratios, words):
    with pytest.raises(InputError, match="split_ratios") as err:
        SplitSpec.parse(ratios)
    assert words in str(err.value)


@pytest.mark.parametrize("key", ["a b", "x; DROP TABLE t", "1col", "a`b"])
def test_split_key_must_be_an_identifier(key):
    with pytest.raises(InputError, match="split_key"):
        SplitSpec.parse(None, key)


def test_fingerprint_matches_bigquery_documented_values():
    # BigQuery's FARM_FINGERPRINT documentation: CONCAT(CAST(x AS STRING), y, CAST(z AS STRING))
    # for (1, 'foo', true), (2, 'apple', false), (3, '', true).
    import farmhash

    signed = np.array([farmhash.fingerprint64(s) for s in ["1footrue", "2applefalse", "3true"]],
                      dtype=np.uint64).view(np.int64)
    assert signed.tolist() == [-1541654101129638711, 2794438866806483259, -4880158226897771312]
    buckets = fingerprint_buckets(pa.array(["1footrue", "2applefalse", "3true"]))
    assert buckets.tolist() == [abs(v) % BUCKETS for v in signed.tolist()]


def test_integer_keys_hash_as_their_decimal_string_and_null_as_empty():
    assert fingerprint_buckets(pa.array([7, None])).tolist() == \
        fingerprint_buckets(pa.array(["7", ""])).tolist()


def test_assign_by_key_uses_bucket_ranges():
    spec = SplitSpec.parse({"train": 0.5, "eval": 0.5}, "id")
    batch = pa.record_batch({"id": pa.array(range(1000))})
    index = spec.assign(batch)
    expected = (fingerprint_buckets(batch.column("id")) >= 5000).astype(int)
    assert index.tolist() == expected.tolist()
    assert 400 < int(index.sum()) < 600


def test_assign_without_key_is_deterministic_and_balanced():
    spec = SplitSpec.parse({"train": 0.75, "eval": 0.25})
    batch = pa.record_batch({"x": pa.array(np.arange(4000) * 0.5), "s": pa.array(["a"] * 4000)})
    first, second = spec.assign(batch), spec.assign(batch)
    assert first.tolist() == second.tolist()
    assert 800 < int(first.sum()) < 1200


def test_key_type_must_cast_identically_in_sql_and_python():
    spec = SplitSpec.parse(None, "x")
    with pytest.raises(SchemaError, match="'x'.*float64"):
        spec.check_key_type(pa.schema([("x", pa.float64())]), "t")
    with pytest.raises(InputError, match="no column 'x'"):
        spec.check_key_type(pa.schema([("y", pa.int64())]), "t")


def test_sql_names_the_key_or_every_column():
    assert "CAST(`id` AS STRING)" in SplitSpec.parse(None, "id").sql_bucket(["id", "x"])
    sql = SplitSpec.parse().sql_bucket(["a", "b"])
    assert sql.startswith("ABS(MOD(FARM_FINGERPRINT(ARRAY_TO_STRING([") and "`b`" in sql
    assert SplitSpec.parse({"train": 0.8, "eval": 0.2}).sql_split("b") == \
        "CASE WHEN b < 8000 THEN 'train' ELSE 'eval' END"
