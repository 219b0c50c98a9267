"""Fresh cases for issue 25's class 12 (a SQL error reported where the user wrote it), written
after the fix and run once against it, on the BigQuery emulator through ingest."""

from __future__ import annotations

import re

import pytest

from conveyor import gcp
from conveyor.errors import QueryError
from conveyor.ingest.bigquery import source_schema

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def table(stack) -> str:
    client = gcp.bigquery_client()
    client.create_dataset("fresh_query", exists_ok=True)
    client.query("CREATE OR REPLACE TABLE fresh_query.t AS "
                 "SELECT id FROM UNNEST(GENERATE_ARRAY(1, 20)) AS id").result()
    return "fresh_query.t"


@pytest.mark.parametrize("query, line", [
    # Windows line ends, comments above the error
    ("-- weekly churn\r\n-- owner: shops\r\nSELECT id\r\nFROM fresh_query.t\r\nWHER id > 3", 5),
    # a trailing comment on the last line (the wrapper's closing bracket must not be eaten)
    ("SELECT id FROM fresh_query.t WHERE id >>> 3 -- keep the big ones", 1),
])
def test_the_error_is_at_the_users_line(table, query, line):
    with pytest.raises(QueryError) as caught:
        source_schema(query=query)
    message = str(caught.value)
    found = re.search(r"at line (\d+), column (\d+) of the query", message)
    assert found and int(found.group(1)) == line, message
    assert "SELECT * FROM (" not in message, message
