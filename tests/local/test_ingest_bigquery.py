"""bigquery_ingest against the BigQuery emulator, with the real google-cloud-bigquery and
google-cloud-bigquery-storage clients, as logic and through kfp.local."""

import json
from pathlib import Path

import pyarrow as pa
import pytest

from conveyor import gcp
from conveyor.errors import EmptyDataError, QueryError, SchemaError, SourceNotFoundError
from conveyor.ingest.bigquery import ingest_bigquery
from conveyor.ingest.split import fingerprint_buckets
from conveyor.io import Dataset

pytestmark = pytest.mark.local
ROWS = 2000


@pytest.fixture(scope="module")
def items(stack):
    """`ingest_test.items`: every contract type, some NULLs; and a few odd tables beside it."""
    client = gcp.bigquery_client()
    client.create_dataset("ingest_test", exists_ok=True)
    client.query(f"""
        CREATE OR REPLACE TABLE ingest_test.items AS
        SELECT id, CONCAT('name-', CAST(id AS STRING)) AS name,
               IF(MOD(id, 10) = 0, NULL, id * 0.25) AS x, MOD(id, 2) = 0 AS flag,
               TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+00', INTERVAL id SECOND) AS ts,
               DATE_ADD(DATE '2024-01-01', INTERVAL MOD(id, 300) DAY) AS day
        FROM UNNEST(GENERATE_ARRAY(0, {ROWS - 1})) AS id""").result()
    client.query("CREATE OR REPLACE TABLE ingest_test.one_row AS SELECT 1 AS id").result()
    client.query("CREATE OR REPLACE TABLE ingest_test.with_array AS "
                 "SELECT 1 AS id, [1, 2] AS tags").result()
    return "ingest_test.items"


def bucket_counts(where: str = "TRUE") -> dict:
    sql = f"""SELECT COUNTIF(b < 8000) AS train, COUNTIF(b >= 8000) AS eval FROM (
                SELECT ABS(MOD(FARM_FINGERPRINT(CAST(id AS STRING)), 10000)) AS b
                FROM ingest_test.items WHERE {where})"""
    row = list(gcp.bigquery_client().query(sql).result())[0]
    return {"train": row["train"], "eval": row["eval"]}


def test_table_through_kfp_local(items, kfp_local):
    from conveyor.components import bigquery_ingest

    task = bigquery_ingest(table=items, split_key="id")
    artifact = task.outputs["dataset"]
    ds = Dataset(artifact.path)

    # Row counts per split are BigQuery's own FARM_FINGERPRINT bucket counts.
    assert {n: s.rows for n, s in ds.info.splits.items()} == bucket_counts()
    # Every row is where Python's FARM_FINGERPRINT puts it too.
    for split, want in (("train", lambda b: b < 8000), ("eval", lambda b: b >= 8000)):
        ids = ds.read_table(split, ["id"]).column("id")
        assert all(want(b) for b in fingerprint_buckets(ids))
    assert [(c.name, c.type) for c in ds.info.columns] == [
        ("id", "int64"), ("name", "string"), ("x", "float64"), ("flag", "bool"),
        ("ts", "timestamp"), ("day", "date")]
    train = ds.read_table("train")
    assert train.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert train.column("x").null_count == sum(1 for i in train.column("id").to_pylist()
                                               if i % 10 == 0)
    assert ds.info.source["table"] == f"conveyor-test.{items}"
    assert artifact.metadata["rows"] == ROWS
    executor_output = json.loads(
        (Path(artifact.path).parent / "executor_output.json").read_text())
    metrics = executor_output["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert metrics["rows_total"] == ROWS and metrics["bytes_read"] > 0


def test_split_is_deterministic_across_runs(items, tmp_path):
    first = ingest_bigquery(str(tmp_path / "a"), table=items, split_key="id").info
    second = ingest_bigquery(str(tmp_path / "b"), table=items, split_key="id").info
    assert first.fingerprint == second.fingerprint
    for split in first.splits:
        a = sorted(Dataset(tmp_path / "a").read_table(split, ["id"]).column("id").to_pylist())
        b = sorted(Dataset(tmp_path / "b").read_table(split, ["id"]).column("id").to_pylist())
        assert a == b


def test_row_content_split_without_key_is_deterministic(items, tmp_path):
    first = ingest_bigquery(str(tmp_path / "a"), table=items).info
    second = ingest_bigquery(str(tmp_path / "b"), table=items).info
    assert first.fingerprint == second.fingerprint
    assert 0.75 < first.splits["train"].rows / ROWS < 0.85


def test_query_with_parameters_and_three_splits(items, tmp_path):
    result = ingest_bigquery(
        str(tmp_path / "q"), query="SELECT id, name FROM ingest_test.items WHERE id < @n;",
        query_params={"n": 1000.0}, split_key="id",
        split_ratios={"train": 0.6, "eval": 0.2, "test": 0.2})
    info = result.info
    assert list(info.splits) == ["train", "eval", "test"]
    assert info.rows == 1000
    assert [c.name for c in info.columns] == ["id", "name"]
    assert result.metrics()["rows_test"] == info.splits["test"].rows > 0
    assert info.source["query_parameters"] == {"n": 1000.0}


def test_rest_and_storage_read_give_the_same_dataset(items, tmp_path):
    storage = ingest_bigquery(str(tmp_path / "s"), table=items, split_key="id")
    rest = ingest_bigquery(str(tmp_path / "r"), table=items, split_key="id", read_method="rest")
    assert storage.info.fingerprint == rest.info.fingerprint
    assert storage.bytes_read > 0 and rest.bytes_read > 0


def test_staging_tables_are_removed(items, tmp_path):
    def staging_tables():
        client = gcp.bigquery_client()
        client.create_dataset("conveyor_staging", exists_ok=True)
        return {t.table_id for t in client.list_tables("conveyor_staging")}

    # Other tests in the session kill ingests on purpose: their staging tables stay (and expire
    # after a day); this ingest must leave none of its own.
    before = staging_tables()
    ingest_bigquery(str(tmp_path / "s"), table=items, split_key="id")
    assert staging_tables() - before == set()


@pytest.mark.parametrize("kwargs, error, words", [
    ({"table": "no_such_dataset.items"}, SourceNotFoundError,
     "dataset conveyor-test.no_such_dataset not found"),
    ({"table": "ingest_test.no_such_table"}, SourceNotFoundError,
     "table conveyor-test.ingest_test.no_such_table not found"),
    ({"query": "SELEC id FROM ingest_test.items"}, QueryError, "BigQuery rejected the query"),
    ({"query": "SELECT * FROM ingest_test.missing"}, SourceNotFoundError, "missing"),
    ({"query": "SELECT * FROM ingest_test.items WHERE id < 0"}, EmptyDataError, "no rows"),
    ({"table": "ingest_test.one_row"}, EmptyDataError, "would be empty"),
    ({"table": "ingest_test.with_array"}, SchemaError, "column 'tags' has BigQuery type ARRAY"),
    ({"table": "ingest_test.items", "split_key": "nope"}, Exception, "no column 'nope'"),
    ({"table": "ingest_test.items", "split_key": "x"}, SchemaError, "column 'x'"),
])
def test_bad_input_is_named_and_nothing_is_written(items, tmp_path, kwargs, error, words):
    out = tmp_path / "out"
    with pytest.raises(error) as err:
        ingest_bigquery(str(out), **kwargs)
    assert words in str(err.value)
    assert not out.exists()


def test_failure_through_kfp_local_names_the_table_and_leaves_no_artifact(stack, kfp_local,
                                                                         capfd):
    from conveyor.components import bigquery_ingest

    with pytest.raises(RuntimeError):
        bigquery_ingest(table="ingest_test.absent_table")
    logs = capfd.readouterr()
    assert "SourceNotFoundError" in logs.out + logs.err
    assert "ingest_test.absent_table not found" in logs.out + logs.err
    assert not list(kfp_local.rglob("dataset.json"))
