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


# -- column names and values survive exactly -------------------------------------------------

import datetime as dt  # noqa: E402

ODD_NAMES = ["Row_ID", "from", "class", "lambda", "select", "table", "1st", "a-b", "a/b",
             "with space", "prix €", "größe", "ÉTÉ", "MiXeD", 'say "hi", ok']


def odd_table(rows: int = 400) -> pa.Table:
    """Odd names, every contract type, NULLs skewed differently in each column."""
    def nulls(values, every):
        return [None if every and i % every == 0 else v for i, v in enumerate(values)]

    i = list(range(rows))
    t0 = dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    columns = [
        pa.array(i, pa.int64()),
        pa.array(nulls([f"Zürich {k % 13}" for k in i], 5)),
        pa.array(nulls([k % 3 == 0 for k in i], 11)),
        pa.array(nulls([dt.date(1969, 12, 25) + dt.timedelta(days=37 * k) for k in i], 4)),
        pa.array(nulls([t0 + dt.timedelta(seconds=7777 * k) for k in i], 9),
                 pa.timestamp("us", tz="UTC")),
        pa.array(nulls([(k - 200) * 30_000_000_000_000 for k in i], 2), pa.int64()),
        pa.array(nulls(["x" if k % 17 else "y" for k in i], 3)),
        pa.array([k % 4 for k in i], pa.int64()),
        pa.array(nulls([1e308 if k % 2 else -0.5 for k in i], 13)),
        pa.array(["ab" * (k % 5) or "z" for k in i]),
        pa.array(nulls([k / 7 for k in i], 6)),
        pa.array(nulls([k * k for k in i], 8), pa.int64()),
        pa.array(nulls([k * 0.25 for k in i], 7)),
        pa.array(["日本語" if k % 2 else "naïve" for k in i]),
        pa.array(nulls([f"q{k}" for k in i], 10)),
    ]
    return pa.Table.from_arrays(columns, names=ODD_NAMES)


def rows_of(path) -> dict:
    ds = Dataset(path)
    t = pa.concat_tables(ds.read_table(s) for s in ds.splits).sort_by("Row_ID")
    return {c: t.column(c).to_pylist() for c in t.column_names}


@pytest.fixture(scope="module")
def odd_files(files):
    t = odd_table()
    put("odd/data.parquet", parquet_bytes(t))
    # A CSV as a spreadsheet writes it: UTF-8 BOM, CRLF, the header quoted where it must be.
    text = csv_bytes(t).decode().replace("\n", "\r\n")
    put("odd/data.csv", b"\xef\xbb\xbf" + text.encode())
    return t


@pytest.mark.parametrize("name", ["odd/data.parquet", "odd/data.csv"])
@pytest.mark.parametrize("split_key", [None, "Row_ID"])
def test_odd_names_and_every_type_round_trip_exactly(odd_files, tmp_path, name, split_key):
    info = ingest_gcs(str(tmp_path / "ds"), uris=f"gs://{BUCKET}/{name}",
                      split_key=split_key).info
    assert [c.name for c in info.columns] == ODD_NAMES
    assert [c.type for c in info.columns] == [
        "int64", "string", "bool", "date", "timestamp", "int64", "string", "int64", "float64",
        "string", "float64", "int64", "float64", "string", "string"]
    assert info.rows == odd_files.num_rows and all(s.rows for s in info.splits.values())
    got = rows_of(tmp_path / "ds")
    for column in ODD_NAMES:
        assert got[column] == odd_files.column(column).to_pylist(), column


def test_csv_and_parquet_of_odd_names_give_the_same_dataset(odd_files, tmp_path):
    a = ingest_gcs(str(tmp_path / "a"), uris=f"gs://{BUCKET}/odd/data.csv", split_key="Row_ID")
    b = ingest_gcs(str(tmp_path / "b"), uris=f"gs://{BUCKET}/odd/data.parquet",
                   split_key="Row_ID")
    assert a.info.fingerprint == b.info.fingerprint


@pytest.fixture(scope="module")
def bad_names(files):
    put("names/empty.csv", b"id,,x\n1,2,3\n2,3,4\n")
    put("names/blank.csv", b"id, ,x\n1,2,3\n2,3,4\n")
    put("names/twice.csv", b"id,x,x\n1,2,3\n2,3,4\n")
    put("names/case.csv", b"Id,name,ID\n1,a,3\n2,b,4\n")
    put("names/reserved.csv", b"id,__Conveyor_Split\n1,a\n2,b\n")
    put("names/unicode-case.csv", "id,größe,GRÖSSE\n1,2,3\n".encode())
    arrays = [pa.array([1, 2]), pa.array([3, 4])]
    put("names/twice.parquet", parquet_bytes(pa.Table.from_arrays(arrays, ["v", "v"])))
    put("names/empty.parquet", parquet_bytes(pa.Table.from_arrays(arrays, ["v", ""])))
    put("names/case.parquet", parquet_bytes(pa.Table.from_arrays(arrays, ["Prix €", "prix €"])))
    put("names/split-0.csv", b"Id,name\n1,a\n2,b\n")
    put("names/split-1.csv", b"id,name\n3,c\n")
    return f"gs://{BUCKET}/names"


@pytest.mark.parametrize("name, words", [
    ("empty.csv", "column 2 has an empty name ''"),
    ("blank.csv", "column 2 has an empty name ' '"),
    ("twice.csv", "column name 'x' is given twice (columns 2 and 3)"),
    ("case.csv", "columns 'Id' (column 1) and 'ID' (column 3) differ only in case"),
    ("reserved.csv", "column name '__Conveyor_Split' is reserved by conveyor"),
    ("unicode-case.csv", "columns 'größe' (column 2) and 'GRÖSSE' (column 3) differ only in case"),
    ("twice.parquet", "column name 'v' is given twice"),
    ("empty.parquet", "column 2 has an empty name"),
    ("case.parquet", "columns 'Prix €' (column 1) and 'prix €' (column 2) differ only in case"),
    ("split-*.csv", "split-1.csv: its columns differ from the first file's (Id, name): "
                    "missing ['Id'], extra ['id']; the names differ only in case"),
])
def test_names_a_dataset_cannot_take_are_refused(bad_names, tmp_path, name, words):
    out = tmp_path / "out"
    with pytest.raises(SchemaError) as err:
        ingest_gcs(str(out), uris=f"{bad_names}/{name}")
    assert words in str(err.value)
    assert f"{bad_names}/" in str(err.value)
    assert not out.exists()
