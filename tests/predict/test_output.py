"""batch_predict's output rules (conveyor.predict.output): never the input table, never over an
existing table unasked, never two output columns of one name. The same rules through the real
pipeline on the BigQuery emulator: tests/local/test_batch_prediction_local.py."""

from types import SimpleNamespace

import pytest

from conveyor.errors import InputError
from conveyor.gcp.sql import parse_table_id
from conveyor.pipelines import checks
from conveyor.predict import output

TARGET = parse_table_id("shop.out", "proj")


def field(name, kind):
    return SimpleNamespace(name=name, field_type=kind)


@pytest.mark.parametrize("source", [
    {"type": "bigquery", "table": "proj.shop.out"},
    {"type": "bigquery", "table": "proj.Shop.OUT"},
    {"type": "bigquery", "query": "SELECT * FROM shop.out WHERE x > 1"},
    {"type": "bigquery", "query": "SELECT * FROM `proj`.`shop`.`out`"},
    {"type": "bigquery", "query": "SELECT a.x FROM `proj.shop.out` AS a JOIN other.t USING (k)"},
])
def test_an_output_that_is_the_input_is_refused(source):
    with pytest.raises(InputError, match="proj.shop.out is the table the rows are read from"):
        output.check_not_input(TARGET, source, "proj")


@pytest.mark.parametrize("source", [
    {"type": "bigquery", "table": "proj.shop.in"},
    {"type": "bigquery", "table": "other.shop.out"},
    {"type": "bigquery", "query": "SELECT * FROM shop.out_old"},
    {"type": "gcs", "uris": ["gs://b/x.csv"]},
])
def test_another_output_is_accepted(source):
    output.check_not_input(TARGET, source, "proj")


@pytest.mark.parametrize("passthrough,task,classes,named", [
    (["value"], "regression", [], "passthrough column 'value' and prediction column 'value'"),
    (["Model_Version"], "binary", [], "'Model_Version' and prediction column 'model_version'"),
    (["class"], "binary", [], "passthrough column 'class' and prediction column 'class'"),
    (["probability_a"], "multiclass", ["a", "b"], "prediction column 'probability_a' (class 'a')"),
    (["k", "k"], "regression", [], "passthrough column 'k' and passthrough column 'k'"),
    ([], "multiclass", ["a b", "a_b"],
     "prediction column 'probability_a_b' (class 'a b') and prediction column 'probability_a_b'"),
    ([], "multiclass", ["A", "a"], ("'probability_A' (class 'A') and prediction column "
                                    "'probability_a' (class 'a')")),
])
def test_output_columns_of_one_name_are_refused(passthrough, task, classes, named):
    with pytest.raises(InputError, match="would share a name") as refused:
        output.check_columns(passthrough, task, classes)
    assert named in str(refused.value)


def test_distinct_output_columns_are_accepted():
    output.check_columns(["id", "species"], "multiclass", ["Adelie", "Gentoo"])


WANTED = [field("id", "INT64"), field("value", "FLOAT64"), field("model_version", "STRING")]


def test_an_existing_table_is_refused_by_default_naming_it_and_the_ways_out():
    existing = SimpleNamespace(schema=WANTED)
    with pytest.raises(InputError) as refused:
        output.check_existing(existing, TARGET, "create", WANTED)
    assert "proj.shop.out already exists" in str(refused.value)
    assert "write_mode='append'" in str(refused.value)
    output.check_existing(None, TARGET, "create", WANTED)
    output.check_existing(existing, TARGET, "replace", WANTED)


def test_append_needs_the_same_columns_and_names_those_that_differ():
    legacy = [field("ID", "INTEGER"), field("value", "FLOAT"), field("model_version", "STRING")]
    output.check_existing(SimpleNamespace(schema=legacy), TARGET, "append", WANTED)
    other = [field("id", "STRING"), field("score", "FLOAT64"), field("model_version", "STRING")]
    with pytest.raises(InputError, match="cannot append to proj.shop.out") as refused:
        output.check_existing(SimpleNamespace(schema=other), TARGET, "append", WANTED)
    message = str(refused.value)
    assert "value (FLOAT64) is not in the table" in message
    assert "score (FLOAT64) is in the table, not in the output" in message
    assert "id is STRING in the table, INT64 in the output" in message


def test_a_bad_write_mode_is_refused_before_anything_starts():
    assert checks.problems({"write_mode": "create"}) == []
    assert checks.problems({"write_mode": "apend"}) == [
        ("write_mode: 'apend' is not one of ('create', 'append', 'replace') "
         "(did you mean 'append'?)")]
    with pytest.raises(InputError, match="write_mode"):
        output.check_existing(None, TARGET, "overwrite", WANTED)
