"""`conveyor.gcp.sql.WrappedQuery`: a position BigQuery reports in the SQL conveyor wraps around
a user's query is reported in the user's own text (issue 25, class 12). Messages here are real
BigQuery's format (`at [line:column]`) and the emulator's (`Line L, Col: C.` then its echo of
the SQL, with terminal colour codes)."""

from __future__ import annotations

import pytest

from conveyor.gcp.sql import single_statement, wrap_query


def wrapped(query: str):
    return wrap_query("SELECT * FROM (\n", single_statement(query), "\n)", query)


@pytest.mark.parametrize("query, at, expected", [
    ("SELEC id FROM t", (2, 1), (1, 1)),
    ("SELECT id,\n  name\nFRM t", (4, 5), (3, 5)),
    ("\n\n   SELEC id FROM t;", (2, 1), (3, 4)),         # leading blank lines and spaces
    ("SELECT id\nFROM t\nWHERE id >", (5, 1), (3, 11)),  # past the end: the query's end
])
def test_positions_move_into_the_users_text(query, at, expected):
    assert wrapped(query).position(*at) == expected


def test_a_position_in_the_wrapper_before_the_query_is_not_moved():
    query = wrapped("SELECT 1")
    assert query.position(1, 10) is None
    assert query.explain("Syntax error: x at [1:10]") == \
        "Syntax error: x at [1:10] (of the SQL conveyor wraps around the query)"


def test_bigquerys_message_names_the_users_line_and_column_and_quotes_the_line():
    query = wrapped("SELECT id,\n  name\nFROM t\nWHERE id >> 3 ANDD x")
    assert query.explain('Syntax error: Unexpected identifier "x" at [5:20]') == (
        'Syntax error: Unexpected identifier "x" at [4:20]; at line 4, column 20 of the query: '
        "'WHERE id >> 3 ANDD x'")


def test_the_emulators_echo_of_the_wrapper_is_left_out_and_its_position_moved():
    query = wrapped("SELEC id FROM t")
    message = ('Syntax error: Expected "," but got keyword AS at [2:13] (sqlglot: Expecting ). '
               'Line 2, Col: 13.\n  SELECT * FROM (\nSELEC id \x1b[4mFROM\x1b[0m t\n))')
    assert query.explain(message) == (
        'Syntax error: Expected "," but got keyword AS at [1:13] (sqlglot: Expecting ). '
        "Line 1, Col: 13; at line 1, column 13 of the query: 'SELEC id FROM t'")
    binder = ('Query execution failed: Binder Error: Referenced column "nope" not found!\n'
              'Candidate bindings: "name"\n\nLINE 1: SELECT * FROM (SELECT nope FROM "p__d"."t")\n'
              '                              ^^^^')
    assert query.explain(binder) == ('Query execution failed: Binder Error: Referenced column '
                                     '"nope" not found! Candidate bindings: "name"')


def test_a_long_line_is_quoted_short_around_the_column():
    query = wrapped("SELECT " + ", ".join(f"column_{i}" for i in range(40)) + " FRM t")
    message = query.explain("Syntax error: Unexpected identifier at [2:400]")
    quoted = message.split("of the query: ", 1)[1]
    assert quoted.startswith("...'") and len(quoted) <= 3 + 40 + 2  # + the quotes
    assert "at [1:400]" in message
