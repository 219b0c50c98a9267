"""`conveyor local load|query|fetch` through the installed `conveyor` command, against the
emulators of the session's stack (found with --root, or through the environment)."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conveyor import gcp

pytestmark = pytest.mark.local
CONVEYOR = str(Path(sys.executable).parent / "conveyor")

CSV = (
    "Row_ID,Area_m2,from,Größe,prix €,Is_Open,Opened On,MiXeD\r\n"
    "3,2.5,Zürich,,1.25,true,2024-02-29,naïve\r\n"
    "1,,,7,,false,,日本語\r\n"
    "2,-0.0,\"Genève, CH\",-3,1e300,,1969-07-20,\r\n"
    "4,1,x,9223372036854775807,0,True,2000-01-01,\"say \"\"hi\"\"\"\r\n"
)
#: What BigQuery must hold for CSV, ordered by Row_ID.
CSV_ROWS = {
    "Row_ID": [1, 2, 3, 4],
    "Area_m2": [None, -0.0, 2.5, 1.0],
    "from": [None, "Genève, CH", "Zürich", "x"],
    "Größe": [7, -3, None, 9223372036854775807],
    "prix €": [None, 1e300, 1.25, 0.0],
    "Is_Open": [False, None, True, True],
    "Opened On": [None, dt.date(1969, 7, 20), dt.date(2024, 2, 29), dt.date(2000, 1, 1)],
    "MiXeD": ["日本語", None, "naïve", 'say "hi"'],
}


def conveyor(*args, root=None, env=None, check=True):
    """Run the real command; `root` adds --root, `env` replaces the emulator variables."""
    environ = dict(os.environ)
    if env is not None:
        for key in (gcp.BIGQUERY_ENDPOINT_ENV, gcp.BIGQUERY_STORAGE_ENDPOINT_ENV,
                    gcp.STORAGE_EMULATOR_ENV):
            environ.pop(key, None)
        environ.update(env)
    argv = [CONVEYOR, "local", *args] + (["--root", str(root)] if root else [])
    done = subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=240)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}: {done.stderr}")
    return done


def columns_of(table: pa.Table) -> dict:
    table = table.sort_by("Row_ID")
    return {name: table.column(name).to_pylist() for name in table.column_names}


def test_csv_loaded_and_queried_back_with_names_types_and_nulls(stack, tmp_path):
    path = tmp_path / "shops.csv"
    path.write_bytes(b"\xef\xbb\xbf" + CSV.encode())  # as a spreadsheet saves it
    done = conveyor("load", str(path), "--table", "local_data.shops", root=stack.root,
                    env={})  # --root alone finds the stack
    assert "4 rows -> local_data.shops" in done.stdout
    schema = gcp.bigquery_client().get_table("local_data.shops").schema
    assert [(f.name, f.field_type) for f in schema] == [
        ("Row_ID", "INTEGER"), ("Area_m2", "FLOAT"), ("from", "STRING"), ("Größe", "INTEGER"),
        ("prix €", "FLOAT"), ("Is_Open", "BOOLEAN"), ("Opened On", "DATE"), ("MiXeD", "STRING")]

    out = tmp_path / "back.parquet"
    conveyor("query", "SELECT * FROM local_data.shops", "--out", str(out))  # the environment's
    assert columns_of(pq.read_table(out)) == CSV_ROWS

    printed = conveyor("query", "SELECT * FROM local_data.shops ORDER BY Row_ID").stdout
    lines = printed.splitlines()
    assert lines[0].split() == ["Row_ID", "Area_m2", "from", "Größe", "prix", "€", "Is_Open",
                                "Opened", "On", "MiXeD"]
    assert lines[2].split()[:3] == ["1", "NULL", "NULL"]
    assert lines[-1] == "(4 rows)"
    assert not [t for t in gcp.bigquery_client().list_tables("local_data")
                if "__load_" in t.table_id]  # the staging table is gone


def test_an_existing_table_is_refused_unless_replace(stack, tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("Key,Value\n1,a\n2,b\n")
    second.write_text("Key,Other Value\n9,z\n")
    conveyor("load", str(first), "--table", "local_data.replaced")
    refused = conveyor("load", str(second), "--table", "local_data.replaced", check=False)
    assert refused.returncode == 2
    assert "local_data.replaced already exists; give --replace" in refused.stderr
    assert conveyor("query", "SELECT COUNT(*) AS n FROM local_data.replaced").stdout \
        .splitlines()[2].strip() == "2"  # untouched
    conveyor("load", str(second), "--table", "local_data.replaced", "--replace")
    back = tmp_path / "back.csv"
    conveyor("query", "SELECT * FROM local_data.replaced", "--out", str(back))
    assert back.read_text().splitlines() == ['"Key","Other Value"', '9,"z"']


def test_parquet_into_a_new_table_and_every_row_out_again(stack, tmp_path):
    rows = 12_345  # two REST pages (data._PAGE_ROWS)
    ts0 = dt.datetime(2001, 9, 9, 1, 46, 40, 123456, tzinfo=dt.UTC)
    table = pa.table({
        "Row_ID": pa.array(range(rows), pa.int32()),  # widened to INT64
        "Score": [None if i % 7 == 0 else i / 3 for i in range(rows)],
        "Seen At": pa.array([None if i % 5 == 0 else ts0 + dt.timedelta(seconds=i)
                             for i in range(rows)], pa.timestamp("us", tz="UTC")),
        "class": pa.array([["a", "b", None][i % 3] for i in range(rows)]).dictionary_encode(),
    })
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    conveyor("load", str(path), "--table", "local_data.events")
    out = tmp_path / "events.csv"
    done = conveyor("query", "SELECT * FROM local_data.events", "--out", str(out))
    assert f"{rows} rows -> {out}" in done.stdout
    import pyarrow.csv as pcsv

    back = pcsv.read_csv(out)
    assert back.column_names == ["Row_ID", "Score", "Seen At", "class"]
    assert back.num_rows == rows
    got = columns_of(pq.read_table(path).cast(pa.schema([
        ("Row_ID", pa.int64()), ("Score", pa.float64()),
        ("Seen At", pa.timestamp("us", tz="UTC")), ("class", pa.string())])))
    parquet_out = tmp_path / "events.parquet.out.parquet"
    conveyor("query", "SELECT * FROM local_data.events", "--out", str(parquet_out))
    assert columns_of(pq.read_table(parquet_out)) == got

    shown = conveyor("query", "SELECT * FROM local_data.events", "--max-rows", "3").stdout
    assert len(shown.splitlines()) == 2 + 3 + 1
    assert f"(3 of {rows} rows shown" in shown


def test_upload_and_fetch_a_prefix(stack, tmp_path):
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    files = {"saved_model.pb": b"\x08\x01pb", "variables/variables.index": b"index",
             "variables/variables.data-00000-of-00001": os.urandom(300_000),
             "assets.extra/labels.txt": "Adélie\nGentoo\n".encode()}
    for name, data in files.items():
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(data)
        done = conveyor("load", str(model / name), "--gcs",
                        f"gs://local-data-test/models/m/1/{name}")
        assert done.stdout.strip() == f"gs://local-data-test/models/m/1/{name}"
    conveyor("load", str(model / "saved_model.pb"), "--gcs", "gs://local-data-test/models/m/10/")

    target = tmp_path / "fetched" / "1"
    done = conveyor("fetch", "gs://local-data-test/models/m/1", str(target))
    assert done.stdout.strip() == f"4 files -> {target}"
    got = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert got == files  # and nothing of version 10

    again = conveyor("fetch", "gs://local-data-test/models/m/1/", str(target), check=False)
    assert again.returncode == 2 and "is not an empty folder" in again.stderr
    refused = conveyor("load", str(model / "saved_model.pb"), "--gcs",
                       "gs://local-data-test/models/m/1/saved_model.pb", check=False)
    assert refused.returncode == 2 and "already exists; give --replace" in refused.stderr
    missing = conveyor("fetch", "gs://local-data-test/models/m/2", str(tmp_path / "x"),
                       check=False)
    assert missing.returncode == 2 and "no objects at gs://local-data-test/models/m/2" \
        in missing.stderr
    assert not (tmp_path / "x").exists()


def test_bad_sql_and_a_bad_file_are_named(stack, tmp_path):
    bad = conveyor("query", "SELEC 1", check=False)
    assert bad.returncode == 2 and "SQL: BigQuery rejected the query" in bad.stderr
    assert bad.stderr.count("\n") == 1 or "Traceback" not in bad.stderr
    messy = tmp_path / "messy.csv"
    messy.write_text("id,ID\n1,2\n")
    done = conveyor("load", str(messy), "--table", "local_data.messy", check=False)
    assert done.returncode == 2 and "'id' and 'ID'" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_root_or_environment_the_default_stack_is_used(stack, tmp_path):
    """No --root and no emulator variables: CONVEYOR_STACK_DIR names the default root."""
    done = conveyor("query", "SELECT 1 AS One", env={"CONVEYOR_STACK_DIR": stack.root})
    assert done.stdout.splitlines()[0] == "One"
    nowhere = conveyor("query", "SELECT 1", env={"CONVEYOR_STACK_DIR": str(tmp_path)},
                       check=False)
    assert nowhere.returncode == 1 and f"no stack running under {tmp_path}" in nowhere.stderr
