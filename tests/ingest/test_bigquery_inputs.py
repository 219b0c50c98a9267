"""Parsing of what users pass to bigquery_ingest, before any request is sent."""

import pytest

from conveyor.errors import InputError
from conveyor.gcp.sql import bigquery_parameters, parse_table_id
from conveyor.ingest.bigquery import ingest_bigquery


def test_table_ids_with_and_without_project():
    assert str(parse_table_id("ds.t", "p-1")) == "p-1.ds.t"
    assert str(parse_table_id("other-proj.ds.t", "p-1")) == "other-proj.ds.t"
    assert str(parse_table_id("example.com:proj.ds.t", "p")) == "example.com:proj.ds.t"
    assert parse_table_id("`p.ds.t`", "x").sql == "`p.ds.t`"


@pytest.mark.parametrize("table_id", [
    "t", "ds.t`; DROP TABLE x; --", "ds-x.t", "Proj.ds.t", "p.ds.t)", "p.ds.",
])
def test_table_ids_that_could_carry_sql_are_refused(table_id):
    with pytest.raises(InputError, match="table"):
        parse_table_id(table_id, "p")


def test_query_parameter_types():
    params = {p.name: (p.type_, p.value) for p in bigquery_parameters(
        {"n": 3, "f": 0.5, "whole": 2008.0, "s": "x'; --", "b": True,
         "d": {"type": "date", "value": "2024-01-01"}})}
    assert params == {"n": ("INT64", 3), "f": ("FLOAT64", 0.5), "whole": ("INT64", 2008),
                      "s": ("STRING", "x'; --"), "b": ("BOOL", True),
                      "d": ("DATE", "2024-01-01")}


@pytest.mark.parametrize("params, words", [
    ({"bad name": 1}, "not a valid column name"),
    ({"x": [1, 2]}, "type list"),
    ({"x": {"value": 1}}, "plain value"),
])
def test_bad_query_parameters(params, words):
    with pytest.raises(InputError, match="query_parameters") as err:
        bigquery_parameters(params)
    assert words in str(err.value)


@pytest.mark.parametrize("kwargs, words", [
    ({}, "exactly one of table or query"),
    ({"table": "ds.t", "query": "SELECT 1"}, "exactly one of table or query"),
    ({"table": "ds.t", "read_method": "odbc"}, "read_method"),
    ({"table": "ds.t", "staging_dataset": "a.b"}, "staging_dataset"),
])
def test_parameters_are_checked_before_any_request(tmp_path, kwargs, words):
    with pytest.raises(InputError, match=words):
        ingest_bigquery(str(tmp_path / "out"), **kwargs)
    assert not (tmp_path / "out").exists()
