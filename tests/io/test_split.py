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


# -- the validation holdout of a train split -------------------------------------------------------

def info(columns, rows, key=None):
    from conveyor.io.dataset import Column, DatasetInfo, SplitInfo

    source = {"type": "test", "split": SplitSpec.parse(None, key).describe()}
    return DatasetInfo(tuple(Column(c, "int64") for c in columns),
                       {"train": SplitInfo(rows, (), 0), "eval": SplitInfo(rows // 4, (), 0)},
                       source, "sha256:x")


def test_the_holdout_bucket_is_bigquerys_div_then_mod_of_the_same_fingerprint():
    """ABS(MOD(DIV(FARM_FINGERPRINT(k), 10000), 10000)): DIV rounds toward zero, MOD keeps the
    dividend's sign (negative fingerprints included)."""
    import farmhash

    from conveyor.io.split import second_buckets

    keys = ["1footrue", "2applefalse", "3true", "", "42"]
    want = []
    for k in keys:
        fp = int(np.array([farmhash.fingerprint64(k)], dtype=np.uint64).view(np.int64)[0])
        quotient = abs(fp) // BUCKETS  # toward zero, sign dropped by the ABS anyway
        want.append(quotient % BUCKETS)
    assert second_buckets(pa.array(keys)).tolist() == want
    assert second_buckets(pa.array([42, None])).tolist() == \
        second_buckets(pa.array(["42", ""])).tolist()


def test_the_holdout_is_independent_of_the_split_bucket():
    """Held out: about the holdout's share of the train rows, whatever the split took."""
    from conveyor.io.split import second_buckets

    ids = pa.array(np.arange(40_000))
    split, holdout = fingerprint_buckets(ids), second_buckets(ids)
    train = split < 8000
    assert abs((holdout[train] < 2000).mean() - 0.2) < 0.01
    assert abs((holdout[~train] < 2000).mean() - 0.2) < 0.015
    assert abs(np.corrcoef(split, holdout)[0, 1]) < 0.02


def test_content_buckets_depend_on_each_rows_values_alone():
    """The same row has the same bucket in any batch: batches with and without NULLs (where
    pandas would turn an int column into floats), slices, every contract type."""
    import datetime as dt

    from conveyor.io.split import content_buckets

    n = 3000
    table = pa.table({
        "i": pa.array([None if k % 7 == 0 else k for k in range(n)], pa.int64()),
        "f": pa.array([None if k % 5 == 0 else k / 3 for k in range(n)], pa.float64()),
        "s": pa.array([None if k % 11 == 0 else f"v{k % 50}" for k in range(n)]),
        "b": pa.array([None if k % 13 == 0 else k % 2 == 0 for k in range(n)]),
        "d": pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=k % 400) for k in range(n)]),
        "t": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
                       + dt.timedelta(seconds=k) for k in range(n)], pa.timestamp("us", "UTC")),
    })
    whole = content_buckets(table.to_batches()[0])
    pieces = np.concatenate([content_buckets(b) for b in table.to_batches(max_chunksize=6)])
    assert whole.tolist() == pieces.tolist()
    one = content_buckets(table.slice(1, 1).to_batches()[0])  # row 1: no NULL in it alone
    assert one.tolist() == whole[1:2].tolist()
    assert abs((whole < 1000).mean() - 0.1) < 0.02  # spread over the buckets
    assert len(set(whole.tolist())) > 0.7 * n
    # a NULL is not the value 0, an empty string or False
    zeros = pa.record_batch({"i": pa.array([None, 0], pa.int64())})
    assert len(set(content_buckets(zeros).tolist())) == 2
    texts = pa.record_batch({"s": pa.array([None, ""])})
    assert len(set(content_buckets(texts).tolist())) == 2


@pytest.mark.parametrize("rows, fraction", [
    (0, 0.2), (400, 0.2), (10_000, 0.2), (15_000, 2000 / 15_000), (20_000, 0.1),
    (1_000_000, 0.1)])
def test_small_train_splits_hold_out_a_bigger_share(rows, fraction):
    from conveyor.io.split import holdout_fraction

    assert holdout_fraction(rows) == pytest.approx(fraction)


def test_the_holdout_follows_the_datasets_split_key_else_the_rows_content():
    from conveyor.io.split import Holdout

    keyed = Holdout.of(info(["id", "x"], 400, key="id"))
    assert (keyed.key, keyed.columns, keyed.upper) == ("id", ("id",), 2000)
    assert keyed.describe()["rule"] == (
        "ABS(MOD(DIV(FARM_FINGERPRINT(CAST(`id` AS STRING)), 10000), 10000)) < 2000")
    by_content = Holdout.of(info(["id", "x"], 100_000))
    assert (by_content.key, by_content.columns, by_content.upper) == (None, ("id", "x"), 1000)
    assert by_content.describe()["key"] == "<row content>"
    # a key column the Dataset no longer has: by content
    assert Holdout.of(info(["x"], 400, key="id")).key is None
    batch = pa.record_batch({"id": pa.array(range(5000)), "x": pa.array([1] * 5000)})
    held = keyed.held_out(batch)
    from conveyor.io.split import second_buckets

    assert held.tolist() == (second_buckets(batch.column("id")) < 2000).tolist()


@pytest.mark.local
def test_bigquery_lists_the_held_out_rows_by_the_recorded_rule(stack):
    """The rule train records is BigQuery SQL that selects exactly the rows Python holds out
    (on the emulator, whose FARM_FINGERPRINT matches BigQuery's)."""
    from conveyor import gcp
    from conveyor.io.split import Holdout

    client = gcp.bigquery_client()
    client.create_dataset("split_test", exists_ok=True)
    client.query("CREATE OR REPLACE TABLE split_test.ids AS "
                 "SELECT id FROM UNNEST(GENERATE_ARRAY(-2000, 2999)) AS id").result()
    rule = Holdout.of(info(["id"], 400, key="id")).describe()["rule"]
    sql = f"SELECT id FROM split_test.ids WHERE {rule} ORDER BY id"
    listed = [row["id"] for row in client.query(sql).result()]
    from conveyor.io.split import second_buckets

    ids = np.arange(-2000, 3000)
    buckets = second_buckets(pa.array(ids))
    want = ids[buckets < 2000].tolist()
    assert listed == want and 800 < len(want) < 1200
    # the bucket itself, row by row (a threshold alone rarely tells DIV from a floor division)
    bucket_sql = rule.rsplit(" < ", 1)[0]
    got = [row["b"] for row in client.query(
        f"SELECT {bucket_sql} AS b FROM split_test.ids ORDER BY id").result()]
    assert got == buckets.tolist()
