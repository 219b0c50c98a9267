"""A value that does not fit its column's type, past the first 16 MiB of a CSV file (issue 25,
class 15: it was reported as column `#0`, or by number beside the whole value). Through GCS
ingest on the emulator (4 MiB blocks) and `conveyor local load`'s loader (16 MiB blocks): the
error names the file, the column by its header name and type, a short excerpt of the value, the
rows read before it and what to do; nothing is written."""

from __future__ import annotations

import re

import pytest

from conveyor import gcp
from conveyor.errors import SchemaError
from conveyor.ingest.gcs import ingest_gcs
from conveyor.local.data import load_table

pytestmark = pytest.mark.local
BUCKET = "csv-late-errors"
VALUE = "heavy" + "y" * 200  # a long value: only an excerpt may be quoted


@pytest.fixture(scope="module")
def late_csv(tmp_path_factory) -> tuple:
    """About 19 MiB of good rows, then a row whose `Rooms` (the 5th column) is not a number:
    the path, the data row number of the bad row and the longest good row's length in bytes."""
    path = tmp_path_factory.mktemp("csv") / "houses.csv"
    lines = [f"{i},{i % 997}.25,city-{i % 13},{i % 2 == 0},{i % 6}"
             for i in range(700_000)]
    bad_row = len(lines) + 1
    lines.append(f"{bad_row},1.5,city-x,true,{VALUE}")
    lines += [f"{i},2.5,city-y,false,3" for i in range(bad_row + 1, bad_row + 100)]
    text = "Id,Price,City,Garden,Rooms\n" + "\n".join(lines) + "\n"
    path.write_text(text)
    assert path.stat().st_size > 17 << 20
    return path, bad_row, max(len(line) for line in lines[:bad_row - 1]) + 1


def assert_named(message: str, where: str, bad_row: int, row_bytes: int, block: int) -> None:
    assert message.startswith(f"{where}: column 'Rooms' (int64): invalid value 'heavyyy"), message
    assert not re.search(r"#\d", message), message            # never a column number
    assert "y" * 40 not in message, message                    # a short excerpt of the value
    before = int(re.search(r"after row ([\d,]+) \(line", message).group(1).replace(",", ""))
    assert before > (16 << 20) // row_bytes, message            # past the first 16 MiB
    assert before < bad_row <= before + block // 15 + 1, message  # within the next block
    assert "fix or remove that value" in message, message


def test_gcs_ingest_names_the_column_of_a_late_bad_value(stack, late_csv, tmp_path):
    path, bad_row, row_bytes = late_csv
    client = gcp.storage_client()
    if not client.bucket(BUCKET).exists():
        client.create_bucket(BUCKET)
    client.bucket(BUCKET).blob("houses/houses.csv").upload_from_filename(str(path))
    out = tmp_path / "out"
    with pytest.raises(SchemaError) as err:
        ingest_gcs(str(out), uris=f"gs://{BUCKET}/houses/*.csv")
    assert_named(str(err.value), f"gs://{BUCKET}/houses/houses.csv", bad_row, row_bytes,
                 4 << 20)
    assert not out.exists()


def test_local_load_names_the_column_of_a_late_bad_value(stack, late_csv):
    path, bad_row, row_bytes = late_csv
    with pytest.raises(SchemaError) as err:
        load_table(path, "csv_late.houses")
    assert_named(str(err.value), f"FILE: {path}", bad_row, row_bytes, 16 << 20)
    tables = [t.table_id for t in gcp.bigquery_client().list_tables("csv_late")]
    assert not [t for t in tables if t.startswith("houses")], tables  # nor its staging table
