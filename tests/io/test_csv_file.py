"""`conveyor.io.csv_file.CsvBatches`: pyarrow's block-wise CSV reading, with errors naming the
column by its header name, a short excerpt of the value or row, and the rows read before it
(issue 25, class 15). Small blocks here; tests/ingest/test_csv_late_errors.py does it past
16 MiB through ingest and `conveyor local load`."""

from __future__ import annotations

import gzip
import io
import re

import pyarrow as pa
import pytest

from conveyor.errors import InputError, SchemaError
from conveyor.io.csv_file import CsvBatches

BLOCK = 1024


def rows(n: int, first: int = 0) -> bytes:
    return b"".join(b"%d,%d.5,city-%d,%d\n" % (i, i, i % 7, i % 5) for i in range(first, n))


def read(data: bytes, **kwargs) -> int:
    reader = CsvBatches(io.BytesIO(data), "gs://b/houses.csv", block_size=BLOCK, **kwargs)
    return sum(batch.num_rows for batch in reader)


def refused(data: bytes, error=SchemaError, **kwargs) -> str:
    with pytest.raises(error) as err:
        read(data, **kwargs)
    return str(err.value)


HEADER = b"id,price,city,rooms\n"


def test_a_value_in_a_later_block_names_its_column_value_and_rows():
    bad = b"999999,1.5,city-x,heavy" + b"y" * 200 + b"\n"
    message = refused(HEADER + rows(500) + bad + rows(520, 501))
    assert message.startswith("gs://b/houses.csv: column 'rooms' (int64): invalid value "
                              "'heavyyy")
    assert not re.search(r"#\d", message), message      # never pyarrow's column number
    assert "y" * 40 not in message                       # the value: a short excerpt
    found = re.search(r"after row ([\d,]+) \(line ([\d,]+) or later\)", message)
    before = int(found.group(1).replace(",", ""))
    assert before < 501 and int(found.group(2).replace(",", "")) == before + 2
    assert "comes from the first 1,024 bytes of the file" in message
    assert "fix or remove that value" in message


def test_a_value_in_the_first_block_of_a_later_file_names_the_column_from_its_header():
    types = pa.schema([("id", pa.int64()), ("price", pa.float64()), ("city", pa.string()),
                       ("rooms", pa.int64())])
    # another column order than the first file's: the number pyarrow gives is this file's
    message = refused(b"rooms,id,price,city\n3,1,2.5,x\nmany,2,3.5,y\n", column_types=types,
                      types_from="the first file")
    assert "column 'rooms' (int64): invalid value 'many' in the first 1,024 bytes" in message
    assert "comes from the first 1,024 bytes of the first file" in message


def test_a_column_empty_in_the_first_block_says_so():
    message = refused(b"id,note\n" + b"".join(b"%d,\n" % i for i in range(400)) + b"7,late\n")
    assert "column 'note' (null): invalid value 'late'" in message
    assert "is empty in the first 1,024 bytes of the file, so it was read as all-NULL" in message


def test_a_row_with_other_fields_is_an_input_error_quoting_it_short():
    secret = "root:$6$" + "s" * 100
    message = refused(HEADER + rows(300) + f"1,2,{secret},4,5\n".encode(), error=InputError)
    assert "has 5 fields where the header has 4" in message and "check the delimiter (',')" \
        in message
    assert "s" * 40 not in message


def test_gzip_streams_and_files_read_whole(tmp_path):
    data = HEADER + rows(2000)
    assert read(data) == 2000
    stream = pa.CompressedInputStream(pa.BufferReader(gzip.compress(data)), "gzip")
    assert sum(b.num_rows for b in CsvBatches(stream, "x.csv.gz", block_size=BLOCK)) == 2000
    path = tmp_path / "x.csv"
    path.write_bytes(data)
    reader = CsvBatches(path, str(path), block_size=BLOCK)
    assert reader.schema.names == ["id", "price", "city", "rooms"]
    assert sum(b.num_rows for b in reader) == 2000 and reader.rows == 2000


def test_an_empty_file_is_named():
    assert "gs://b/houses.csv: not readable as CSV in the first 1,024 bytes: 'Empty CSV file'" \
        == refused(b"", error=InputError)
