"""A syntax error in a user's query, against the BigQuery emulator, through ingest and the
preflight's dry run (issue 25, class 12): reported at its line and column in the user's own
text (conveyor runs it inside `SELECT * FROM (\\n<query>\\n)`, one line lower), the user's line
quoted, none of the wrapper's SQL echoed."""

from __future__ import annotations

import re

import pytest

from conveyor import gcp
from conveyor.errors import QueryError
from conveyor.ingest.bigquery import ingest_bigquery, source_schema

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def table(stack) -> str:
    client = gcp.bigquery_client()
    client.create_dataset("positions", exists_ok=True)
    client.query("CREATE OR REPLACE TABLE positions.t AS "
                 "SELECT id, CONCAT('n', CAST(id AS STRING)) AS name "
                 "FROM UNNEST(GENERATE_ARRAY(1, 50)) AS id").result()
    return "positions.t"


CASES = [
    # the query, the line the error is on, and that line as the user wrote it
    ("SELEC id FROM positions.t", 1, "SELEC id FROM positions.t"),
    ("SELECT id,\n  name FRM positions.t\nWHERE id > 1", 2, "  name FRM positions.t"),
    ("SELECT id,\n  name\nFROM positions.t\nWHERE id >> 3 AND", 4, "WHERE id >> 3 AND"),
    ("\n\n   SELEC id FROM positions.t;\n", 3, "   SELEC id FROM positions.t;"),
]


def assert_at_the_users_position(message: str, line: int, text: str) -> None:
    found = re.search(r"; at line (\d+), column (\d+) of the query: (.*)$", message)
    assert found, message
    assert int(found.group(1)) == line, message
    column = int(found.group(2))
    assert 1 <= column <= len(text) + 1, message
    assert found.group(3) == repr(text), message
    # every position BigQuery gave is the user's: none is the wrapper's line
    for reported in re.findall(r"\[(\d+):\d+\]|Line (\d+), Col:", message):
        assert int(next(g for g in reported if g)) == line, message
    assert "SELECT * FROM (" not in message and "\x1b" not in message, message


@pytest.mark.parametrize("query, line, text", CASES)
def test_ingest_reports_a_syntax_error_in_the_users_text(table, tmp_path, query, line, text):
    out = tmp_path / "out"
    with pytest.raises(QueryError) as err:
        ingest_bigquery(str(out), query=query)
    assert str(err.value).startswith("query: BigQuery rejected the query: Syntax error")
    assert_at_the_users_position(str(err.value), line, text)
    assert not out.exists()


@pytest.mark.parametrize("query, line, text", CASES[1:2])
def test_the_preflights_dry_run_reports_it_the_same_way(table, query, line, text):
    with pytest.raises(QueryError) as err:
        source_schema(query=query)
    assert_at_the_users_position(str(err.value), line, text)


def test_a_query_without_an_error_still_ingests(table, tmp_path):
    result = ingest_bigquery(str(tmp_path / "ok"), query="\n  SELECT id, name FROM positions.t;")
    assert result.info.rows == 50
