"""gcs_ingest against the GCS emulator with the real google-cloud-storage client."""

import io

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from conveyor import gcp
from conveyor.errors import InputError, SchemaError, SourceNotFoundError
from conveyor.ingest.bigquery import ingest_bigquery
from conveyor.ingest.gcs import ingest_gcs
from conveyor.io import Dataset

pytestmark = pytest.mark.local
BUCKET = "gcs-ingest-test"


def table(start: int, stop: int) -> pa.Table:
    ids = list(range(start, stop))
    return pa.table({"id": pa.array(ids, pa.int64()),
                     "name": [f"name-{i}" for i in ids],
                     "x": [i * 0.25 for i in ids]})


def put(name: str, data: bytes) -> None:
    gcp.storage_client().bucket(BUCKET).blob(name).upload_from_string(data)


def csv_bytes(t: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pcsv.write_csv(t, buffer)
    return buffer.getvalue()


def parquet_bytes(t: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(t, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files(stack):
    client = gcp.storage_client()
    if not client.bucket(BUCKET).exists():
        client.create_bucket(BUCKET)
    for i in range(3):  # 3 CSV parts of 700 rows, and the same rows as Parquet
        put(f"csv/part-{i}.csv", csv_bytes(table(700 * i, 700 * (i + 1))))
        put(f"parquet/part-{i}.parquet", parquet_bytes(table(700 * i, 700 * (i + 1))))
    put("csv/README.txt", b"not data")
    put("bad/floaty.csv", csv_bytes(table(0, 10)))
    put("bad/floaty2.csv", b"id,name,x\n1.5,a,0.1\n")
    put("bad/broken.parquet", b"PAR1 this is not parquet")
    put("bad/empty.csv", b"")
    put("bad/nested.parquet", parquet_bytes(pa.table({"id": [1], "tags": [[1, 2]]})))
    put("bad/missing-col.csv", b"id,name\n1,a\n")
    put("bad/typed-0.parquet", parquet_bytes(table(0, 5)))
    put("bad/typed-1.parquet", parquet_bytes(pa.table({"id": ["a"], "name": ["b"], "x": [0.5]})))
    return f"gs://{BUCKET}"


def test_csv_glob_through_kfp_local(files, kfp_local):
    from conveyor.components import gcs_ingest

    task = gcs_ingest(uris=f"{files}/csv/*.csv", split_key="id")
    ds = Dataset(task.outputs["dataset"].path)
    assert ds.info.rows == 2100
    assert [(c.name, c.type) for c in ds.info.columns] == [
        ("id", "int64"), ("name", "string"), ("x", "float64")]
    assert ds.info.source["uris"] == [f"{files}/csv/part-{i}.csv" for i in range(3)]
    assert task.outputs["dataset"].metadata["splits"]["train"] == ds.split("train").rows


def test_parquet_and_csv_of_the_same_rows_give_the_same_dataset(files, tmp_path):
    a = ingest_gcs(str(tmp_path / "csv"), uris=f"{files}/csv/*.csv", split_key="id").info
    b = ingest_gcs(str(tmp_path / "pq"), uris=[f"{files}/parquet/part-*.parquet"],
                   split_key="id").info
    assert a.fingerprint == b.fingerprint


def test_same_split_key_puts_rows_in_the_same_split_as_bigquery(files, tmp_path):
    # The same rows in BigQuery (the emulator cannot load from gs:// itself).
    from conveyor.local.seed import load_table

    load_table(table(0, 700), "gcs_test.part0")
    bq = ingest_bigquery(str(tmp_path / "bq"), table="gcs_test.part0", split_key="id").info
    gcs = ingest_gcs(str(tmp_path / "gcs"), uris=f"{files}/csv/part-0.csv", split_key="id").info
    def ids(path, split):
        return sorted(Dataset(path).read_table(split, ["id"]).column("id").to_pylist())

    for split in ("train", "eval"):
        assert ids(tmp_path / "bq", split) == ids(tmp_path / "gcs", split)
    assert bq.fingerprint == gcs.fingerprint


@pytest.mark.parametrize("uris, error, words", [
    ("gs://no-such-bucket/x/*.csv", SourceNotFoundError, "bucket gs://no-such-bucket not found"),
    (f"gs://{BUCKET}/csv/*.tsv", SourceNotFoundError, f"no files match gs://{BUCKET}/csv/*.tsv"),
    (f"gs://{BUCKET}/csv/*", InputError, "README.txt"),
    ("s3://bucket/x.csv", InputError, "not a gs:// URI"),
    (f"gs://{BUCKET}/bad/floaty*.csv", SchemaError, "floaty2.csv"),
    (f"gs://{BUCKET}/bad/broken.parquet", InputError, "broken.parquet: not a readable Parquet"),
    (f"gs://{BUCKET}/bad/empty.csv", InputError, "empty.csv"),
    (f"gs://{BUCKET}/bad/nested.parquet", SchemaError, "column 'tags'"),
    (f"gs://{BUCKET}/csv/part-0.csv,gs://{BUCKET}/bad/missing-col.csv", SchemaError,
     "part-0.csv: its columns differ from the first file's (id, name): missing [], extra ['x']"),
    (f"gs://{BUCKET}/bad/typed-*.parquet", SchemaError,
     "typed-1.parquet: column 'id' has type string, but int64 in the first file"),
])
def test_bad_files_are_named_and_nothing_is_written(files, tmp_path, uris, error, words):
    out = tmp_path / "out"
    with pytest.raises(error) as err:
        ingest_gcs(str(out), uris=uris)
    assert words in str(err.value)
    assert not out.exists()
