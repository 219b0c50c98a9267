import json

import pyarrow as pa
import pytest

from conveyor.errors import EmptyDataError, InputError, SchemaError
from conveyor.io.dataset import METADATA_FILE, Dataset, contract_schema
from conveyor.io.dataset_writer import DatasetWriter

SCHEMA = pa.schema([("id", pa.int64()), ("x", pa.float64()), ("s", pa.string())])


def rows(start, stop):
    n = stop - start
    return pa.record_batch({"id": pa.array(range(start, stop), pa.int64()),
                            "x": pa.array([i * 0.5 for i in range(start, stop)]),
                            "s": pa.array([f"v{i % 3}" for i in range(start, stop)])},
                           schema=SCHEMA) if n else pa.RecordBatch.from_pylist([], schema=SCHEMA)


def write(path, parts, **kw):
    with DatasetWriter(path, SCHEMA, ["train", "eval"], {"type": "test"}, **kw) as w:
        for split, batch in parts:
            w.write(split, batch)
    return w.info


def test_round_trip_with_shards_and_metadata(tmp_path):
    info = write(tmp_path / "ds", [("train", rows(0, 700)), ("eval", rows(700, 1000))],
                 shard_rows=256, row_group_rows=100)
    ds = Dataset(tmp_path / "ds")
    assert ds.splits == ["train", "eval"]
    assert ds.split("train").rows == 700 and len(ds.files("train")) == 3
    assert ds.schema == SCHEMA
    assert ds.read_table("train").column("id").to_pylist() == list(range(700))
    assert sum(b.num_rows for b in ds.iter_batches("eval", ["x"], batch_size=64)) == 300
    meta = json.loads((tmp_path / "ds" / METADATA_FILE).read_text())
    assert meta["format"] == "conveyor.dataset/v1"
    assert meta["columns"][0] == {"name": "id", "type": "int64", "nullable": True}
    assert meta["fingerprint"] == info.fingerprint


def test_fingerprint_ignores_row_order_and_sharding_but_not_content(tmp_path):
    a = write(tmp_path / "a", [("train", rows(0, 600)), ("eval", rows(600, 900))])
    b = write(tmp_path / "b", [("train", rows(300, 600)), ("train", rows(0, 300)),
                                ("eval", rows(600, 900))], shard_rows=100)
    c = write(tmp_path / "c", [("train", rows(0, 601)), ("eval", rows(601, 900))])
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def test_empty_split_is_refused_and_nothing_is_left(tmp_path):
    with pytest.raises(EmptyDataError, match=r"\['eval'\] are empty"):
        write(tmp_path / "ds", [("train", rows(0, 10))])
    assert not (tmp_path / "ds").exists()


def test_failure_midway_removes_every_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "ds", SCHEMA, ["train"], {}, row_group_rows=1) as w:
            w.write("train", rows(0, 50))
            raise RuntimeError("boom")
    assert not (tmp_path / "ds").exists()


def test_existing_empty_folder_is_used_and_a_full_one_refused(tmp_path):
    (tmp_path / "ds").mkdir()
    write(tmp_path / "ds", [("train", rows(0, 5)), ("eval", rows(5, 9))])
    with pytest.raises(InputError, match="not empty"):
        write(tmp_path / "ds", [("train", rows(0, 5)), ("eval", rows(5, 9))])
    assert Dataset(tmp_path / "ds").info.rows == 9  # untouched


def test_a_killed_writers_shards_are_cleared_by_the_next_writer(tmp_path):
    ds = tmp_path / "ds"
    write(ds, [("train", rows(0, 5)), ("eval", rows(5, 9))])
    (ds / METADATA_FILE).rename(ds / (METADATA_FILE + ".tmp"))  # as if killed before the commit
    with pytest.raises(InputError, match="dataset.json missing"):
        Dataset(ds)
    write(ds, [("train", rows(0, 3)), ("eval", rows(3, 4))])
    assert Dataset(ds).info.rows == 4
    (ds / "notes.txt").write_text("not a shard")
    (ds / METADATA_FILE).unlink()
    with pytest.raises(InputError, match="not empty"):  # not only a writer's leftovers
        write(ds, [("train", rows(0, 5)), ("eval", rows(5, 9))])
    assert (ds / "notes.txt").exists()


def test_unsupported_column_type_names_the_column():
    with pytest.raises(SchemaError, match="column 'tags' has type list<item: string>"):
        contract_schema(pa.schema([("id", pa.int64()), ("tags", pa.list_(pa.string()))]), "t")


def test_narrow_types_are_widened_to_contract_types(tmp_path):
    schema = pa.schema([("i", pa.int32()), ("f", pa.float32()), ("t", pa.timestamp("ms"))])
    batch = pa.record_batch({"i": pa.array([1], pa.int32()), "f": pa.array([0.5], pa.float32()),
                             "t": pa.array([0], pa.timestamp("ms"))})
    with DatasetWriter(tmp_path / "ds", schema, ["train"], {}) as w:
        w.write("train", batch)
    assert [c.type for c in w.info.columns] == ["int64", "float64", "timestamp"]
    assert Dataset(tmp_path / "ds").read_table("train").schema.field("i").type == pa.int64()


def test_reading_an_unfinished_dataset_says_so(tmp_path):
    (tmp_path / "ds" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match="dataset.json missing"):
        Dataset(tmp_path / "ds")


def test_unknown_split_and_column_are_named(tmp_path):
    write(tmp_path / "ds", [("train", rows(0, 5)), ("eval", rows(5, 9))])
    ds = Dataset(tmp_path / "ds")
    with pytest.raises(InputError, match="no split 'test'"):
        ds.files("test")
    with pytest.raises(InputError, match=r"no column\(s\) \['nope'\]"):
        list(ds.iter_batches("train", ["nope"]))
