"""bigquery_ingest against the BigQuery emulator, with the real google-cloud-bigquery and
google-cloud-bigquery-storage clients, as logic and through kfp.local."""

import json
from pathlib import Path

import pyarrow as pa
import pytest

from conveyor import gcp
from conveyor.errors import EmptyDataError, InputError, QueryError, SchemaError, SourceNotFoundError
from conveyor.ingest.bigquery import ingest_bigquery
from conveyor.io import Dataset
from conveyor.io.split import fingerprint_buckets

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
        query_parameters={"n": 1000.0}, split_key="id",
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


# -- column names and values survive exactly -------------------------------------------------

ODD_ROWS = 600
#: Column name -> (BigQuery type, SQL of its value from `i`, NULL one row in how many).
ODD_COLUMNS = {
    "Row_ID": ("INT64", "i", 0),
    "Area_m2": ("FLOAT64", "i * 1.5 - 300", 7),
    "from": ("STRING", "CONCAT('Zürich ', CAST(MOD(i, 13) AS STRING))", 5),
    "class": ("BOOL", "MOD(i, 3) = 0", 11),
    "lambda": ("DATE", "DATE_ADD(DATE '1969-12-25', INTERVAL i * 37 DAY)", 4),
    "select": ("TIMESTAMP",
               "TIMESTAMP_ADD(TIMESTAMP '1999-12-31 23:59:59.999999+00', INTERVAL i * 7777 SECOND)",
               9),
    "table": ("INT64", "(i - 300) * 30000000000000", 2),
    "1st": ("STRING", "IF(MOD(i, 17) = 1, '', 'x')", 3),
    "a-b": ("INT64", "MOD(i, 4)", 0),
    "a/b": ("FLOAT64", "IF(MOD(i, 2) = 0, 1e308, -0.0)", 13),
    "with space": ("STRING", "REPEAT('ab', MOD(i, 5))", 0),
    "prix €": ("FLOAT64", "i / 7", 6),
    "größe": ("INT64", "i * i", 8),
    "MiXeD Case": ("STRING", "IF(MOD(i, 2) = 0, '日本語', 'naïve')", 10),
}


def _q(name: str) -> str:
    return f"`{name}`"


@pytest.fixture(scope="module")
def odd_names(stack):
    """`ingest_test.odd_names`: mixed case, SQL/Python keywords, a leading digit, '-', '/',
    spaces and unicode in the names; every scalar type, NULLs skewed differently per column."""
    client = gcp.bigquery_client()
    client.create_dataset("ingest_test", exists_ok=True)
    select = ", ".join(
        (f"CAST({sql} AS {kind})" if not every else
         f"IF(MOD(i, {every}) = 0, CAST(NULL AS {kind}), CAST({sql} AS {kind}))") + f" AS {_q(n)}"
        for n, (kind, sql, every) in ODD_COLUMNS.items())
    client.query(f"CREATE OR REPLACE TABLE ingest_test.odd_names AS SELECT {select} "
                 f"FROM UNNEST(GENERATE_ARRAY(0, {ODD_ROWS - 1})) AS i").result()
    table = client.get_table("ingest_test.odd_names")
    assert [f.name for f in table.schema] == list(ODD_COLUMNS)  # the emulator keeps them
    return "ingest_test.odd_names"


def _source_rows(table_id: str, columns: list[str]) -> dict:
    """The source's values by column, in Row_ID order, read straight from the table (REST)."""
    rows = gcp.bigquery_client().list_rows(table_id).to_arrow(create_bqstorage_client=False)
    rows = rows.sort_by("Row_ID")
    return {c: rows.column(c).to_pylist() for c in columns}


def _dataset_rows(path) -> dict:
    ds = Dataset(path)
    table = pa.concat_tables(ds.read_table(s) for s in ds.splits).sort_by("Row_ID")
    return {c: table.column(c).to_pylist() for c in table.column_names}


@pytest.mark.parametrize("source", ["table", "query"])
@pytest.mark.parametrize("split_key", [None, "Row_ID"])
def test_odd_column_names_and_every_type_round_trip_exactly(odd_names, tmp_path, source,
                                                             split_key):
    names = list(ODD_COLUMNS)
    if source == "table":
        kwargs = {"table": odd_names}
    else:  # the columns listed by name, in another order, and a filter on an odd one
        names = names[::-1]
        kwargs = {"query": f"SELECT {', '.join(map(_q, names))} FROM {odd_names} "
                           "WHERE `größe` IS NULL OR `größe` >= @low",
                  "query_parameters": {"low": 0}}
    result = ingest_bigquery(str(tmp_path / "ds"), split_key=split_key, **kwargs)
    info = result.info
    assert [c.name for c in info.columns] == names
    assert [c.type for c in info.columns] == [
        {"INT64": "int64", "FLOAT64": "float64", "STRING": "string", "BOOL": "bool",
         "DATE": "date", "TIMESTAMP": "timestamp"}[ODD_COLUMNS[n][0]] for n in names]
    assert info.rows == ODD_ROWS and all(s.rows > 0 for s in info.splits.values())
    got = _dataset_rows(tmp_path / "ds")
    want = _source_rows(odd_names, names)
    assert list(got) == names
    for name in names:  # NULLs where they were, '' is not NULL, -0.0, 1e308, microseconds
        assert got[name] == want[name], name
    assert got["1st"].count(None) == ODD_ROWS // 3 and "" in got["1st"]


def test_odd_names_read_through_rest_give_the_same_dataset(odd_names, tmp_path):
    storage = ingest_bigquery(str(tmp_path / "s"), table=odd_names, split_key="Row_ID")
    rest = ingest_bigquery(str(tmp_path / "r"), table=odd_names, split_key="Row_ID",
                           read_method="rest")
    assert [c.name for c in rest.info.columns] == list(ODD_COLUMNS)
    assert rest.info.fingerprint == storage.info.fingerprint


def test_a_second_run_gives_the_same_names_and_rows(odd_names, tmp_path):
    first = ingest_bigquery(str(tmp_path / "a"), table=odd_names).info
    second = ingest_bigquery(str(tmp_path / "b"), table=odd_names).info
    assert first.fingerprint == second.fingerprint
    assert first.columns == second.columns


def test_a_mixed_case_split_key_splits_as_farm_fingerprint(odd_names, tmp_path):
    ingest_bigquery(str(tmp_path / "k"), table=odd_names, split_key="Row_ID")
    ds = Dataset(tmp_path / "k")
    for split, want in (("train", lambda b: b < 8000), ("eval", lambda b: b >= 8000)):
        assert all(want(b) for b in fingerprint_buckets(ds.read_table(split, ["Row_ID"])
                                                        .column("Row_ID")))


def test_split_key_in_another_case_is_refused_with_the_column_it_means(odd_names, tmp_path):
    with pytest.raises(InputError, match="split_key") as err:
        ingest_bigquery(str(tmp_path / "k"), table=odd_names, split_key="row_id")
    assert "'Row_ID'" in str(err.value)
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize("query, words", [
    ("SELECT 1 AS `__conveyor_split`, 2 AS b", "'__conveyor_split' is reserved"),
    ("SELECT 1 AS `__Conveyor_Split`, 2 AS b", "'__Conveyor_Split' is reserved"),
    ("SELECT 1 AS b, 2 AS `__CONVEYOR_BUCKET`", "'__CONVEYOR_BUCKET' is reserved"),
])
def test_reserved_names_are_refused_in_any_case(stack, tmp_path, query, words):
    with pytest.raises(SchemaError) as err:
        ingest_bigquery(str(tmp_path / "out"), query=query)
    assert words in str(err.value)
    assert not (tmp_path / "out").exists()


def test_non_ascii_upper_case_names_are_kept_or_explained(stack, tmp_path):
    """The emulator lower-cases the split query's column names and then cannot bind 'ÉTÉ'
    (DuckDB matches case-insensitively in ASCII only); real BigQuery keeps them. Either the
    names come back exactly or the error names the columns and says why."""
    client = gcp.bigquery_client()
    client.create_dataset("ingest_test", exists_ok=True)
    client.query("CREATE OR REPLACE TABLE ingest_test.accents AS SELECT i AS `Größe`, "
                 "i * 2 AS `ÉTÉ`, i AS id FROM UNNEST(GENERATE_ARRAY(1, 50)) AS i").result()
    try:
        info = ingest_bigquery(str(tmp_path / "out"), table="ingest_test.accents").info
    except QueryError as exc:
        assert "(['ÉTÉ'])" in str(exc) and "real BigQuery can" in str(exc)
        assert not (tmp_path / "out").exists()
    else:
        assert [c.name for c in info.columns] == ["Größe", "ÉTÉ", "id"]


def test_a_wide_table_ingests_and_splits_as_a_flat_concat_would(stack, tmp_path):
    """The row-content key is ARRAY_TO_STRING of the columns: the string CONCAT(a, '|', b, ...)
    gives (so the splits did not move), and it works for 40 columns on the emulator, whose CONCAT
    of over ~30 arguments fails with a bogus "Catalog Error" / "Not found: Dataset"."""
    import numpy as np
    import pyarrow as pa

    from conveyor import gcp
    from conveyor.ingest.bigquery import ingest_bigquery
    from conveyor.local import seed

    wide = pa.table({f"m{i}": np.round(np.linspace(0, 1, 300) * (i + 1), 3) for i in range(40)})
    seed.load_table(wide, "wide_test.forty")
    result = ingest_bigquery(str(tmp_path / "forty"), table="wide_test.forty")
    assert result.info.rows == 300 and len(result.info.columns) == 40
    cast = [f"IFNULL(CAST(`m{i}` AS STRING), '')" for i in range(10)]
    rows = list(gcp.bigquery_client().query(
        "SELECT COUNTIF(FARM_FINGERPRINT(ARRAY_TO_STRING([" + ", ".join(cast) + "], '|')) = "
        "FARM_FINGERPRINT(CONCAT(" + ", '|', ".join(cast) + "))) AS same, COUNT(*) AS n "
        "FROM `wide_test.forty`").result())
    assert rows[0]["same"] == rows[0]["n"] == 300


def test_parallel_read_streams_give_the_same_dataset_as_one(stack, tmp_path):
    """A table big enough for several Storage Read streams (the emulator, like BigQuery, gives
    one below ~1 MB): reading 4 at once writes the same rows in the same order as reading 1."""
    from google.cloud.bigquery_storage_v1 import types

    client = gcp.bigquery_client()
    client.create_dataset("ingest_test", exists_ok=True)
    client.query("""
        CREATE OR REPLACE TABLE ingest_test.wide AS
        SELECT id, REPEAT(CAST(id AS STRING), 20) AS `Text`, id * 0.5 AS `select`
        FROM UNNEST(GENERATE_ARRAY(0, 59999)) AS id""").result()
    session = gcp.bigquery_read_client().create_read_session(
        parent="projects/conveyor-test", max_stream_count=4, read_session=types.ReadSession(
            table="projects/conveyor-test/datasets/ingest_test/tables/wide",
            data_format=types.DataFormat.ARROW))
    assert len(session.streams) == 4

    one = ingest_bigquery(str(tmp_path / "one"), table="ingest_test.wide", read_streams=1)
    four = ingest_bigquery(str(tmp_path / "four"), table="ingest_test.wide", read_streams=4)
    assert one.info.fingerprint == four.info.fingerprint
    for split in one.info.splits:
        a = Dataset(tmp_path / "one").read_table(split)
        b = Dataset(tmp_path / "four").read_table(split)
        assert a.num_rows > 0 and a.equals(b)
    assert sum(s.rows for s in four.info.splits.values()) == 60_000


@pytest.mark.parametrize("streams", [0, -2, 1.5, True, "4"])
def test_read_streams_must_be_a_whole_number(streams, tmp_path):
    with pytest.raises(InputError, match="read_streams: expected a whole number"):
        ingest_bigquery(str(tmp_path / "x"), table="ingest_test.items", read_streams=streams)
    assert not (tmp_path / "x").exists()
