"""Column-name rules shared by both ingest paths (conveyor.ingest.core)."""

import pytest

from conveyor.errors import SchemaError
from conveyor.ingest.core import check_column_names, restore_names


def test_names_are_restored_ignoring_case_in_any_order():
    expected = ["Area_m2", "from", "Größe", "ΣΊΣΥΦΟΣ", "MiXeD Case", "__conveyor_split"]
    found = ["mixed case", "area_m2", "größe", "σίσυφος", "from", "__conveyor_split"]
    assert restore_names(found, expected, "t") == [
        "MiXeD Case", "Area_m2", "Größe", "ΣΊΣΥΦΟΣ", "from", "__conveyor_split"]


@pytest.mark.parametrize("found, words", [
    (["a", "c"], "a column 'c' that the source's schema does not have, even ignoring case"),
    (["a", "A"], "two columns for 'a'"),
    (["a"], "no column for ['B']"),
])
def test_names_that_do_not_match_are_refused(found, words):
    with pytest.raises(SchemaError) as err:
        restore_names(found, ["a", "B"], "table p.d.t")
    assert str(err.value).startswith("table p.d.t: ") and words in str(err.value)


@pytest.mark.parametrize("names, words", [
    (["a", ""], "column 2 has an empty name ''"),
    (["\t"], "column 1 has an empty name '\\t'"),
    (["x", "y", "x"], "'x' is given twice (columns 1 and 3)"),
    (["Straße", "STRASSE"], "'Straße' (column 1) and 'STRASSE' (column 2) differ only in case"),
    (["__CONVEYOR_split"], "'__CONVEYOR_split' is reserved by conveyor ('__conveyor_split'"),
    (["__conveyor_bucket"], "is reserved"),
])
def test_names_a_dataset_cannot_take(names, words):
    with pytest.raises(SchemaError) as err:
        check_column_names(names, "f.csv")
    assert words in str(err.value)


def test_odd_but_valid_names_pass():
    check_column_names(["from", "1st", "a-b", "a/b", "with space", "prix €", "日本語",
                        "__conveyor", "conveyor_split"], "f.csv")


def test_a_long_name_is_quoted_short():
    """A CSV's header is its first line, whatever the file holds: never quoted whole."""
    line = "root:$6$salt$" + "s" * 100 + ":19700:0:99999:7:::"
    with pytest.raises(SchemaError) as err:
        check_column_names([line, "x", line], "f.csv")
    assert "is given twice (columns 1 and 3)" in str(err.value)
    assert "'root:$6$salt$sss" in str(err.value) and "s" * 40 not in str(err.value)
