"""Preflight finds in seconds, before a row is read, what used to fail at evaluate after a full
training: a missing bucket, a slice or label that is not a column, splits without the eval split."""

import time

import pytest

from conveyor.errors import InputError, SourceNotFoundError
from conveyor.gcp.hints import conveyor_command
from conveyor.preflight.checks import check

pytestmark = pytest.mark.local


def test_a_sound_run_passes_and_sees_the_source_columns(penguins, tmp_path):
    result = check(label="species", model_base_path=str(tmp_path / "models"), table=penguins,
                   slices=["island"])
    assert "island" in result.columns and result.columns["species"] == "string"
    assert not (tmp_path / "models").exists()  # nothing written


def test_every_problem_is_named_at_once(penguins, tmp_path):
    with pytest.raises(InputError) as raised:
        check(label="Species", model_base_path=str(tmp_path / "m"), table=penguins,
              slices=["islands"], split_ratios={"train": 0.7, "test": 0.3})
    message = str(raised.value)
    assert "label: 'Species' is not a column of table" in message
    assert "did you mean 'species'?" in message
    assert "slices: 'islands' is not a column of table" in message
    assert "(did you mean 'island'?)" in message  # a close match (conveyor.params)
    assert "split_ratios: no 'eval' split (train, test)" in message


def test_a_missing_bucket_or_table_is_reported_as_missing(penguins, stack):
    with pytest.raises(SourceNotFoundError, match="no-such-conveyor-bucket"):
        check(label="species", model_base_path="gs://no-such-conveyor-bucket/models/p",
              table=penguins)
    with pytest.raises(SourceNotFoundError, match="not found"):
        check(label="species", model_base_path="gs://no-such-conveyor-bucket/m",
              table="conveyor_demo.no_such_table")


def test_what_is_missing_comes_with_what_to_do(penguins, stack):
    """On the local stack: the command that creates the bucket, the closest table and the
    command that loads a file as the table (on Google Cloud the bucket's command is gcloud's:
    tests/gcp/test_hints.py)."""
    with pytest.raises(SourceNotFoundError) as raised:
        check(label="species", model_base_path="gs://no-such-conveyor-bucket/m",
              table="conveyor_demo.penguin")
    message = str(raised.value)
    assert (f"bucket gs://no-such-conveyor-bucket not found; create it on the local stack with "
            f"`{conveyor_command('local bucket')} gs://no-such-conveyor-bucket`") in message
    assert ("table conveyor-test.conveyor_demo.penguin not found (did you mean "
            "'conveyor_demo.penguins'?); to load a CSV or Parquet file as this table on the "
            f"local stack: `{conveyor_command('local load')} FILE --table "
            "conveyor_demo.penguin`") in message


def test_parameters_that_cannot_agree(tmp_path, stack):
    with pytest.raises(InputError, match="give exactly one of table or query"):
        check(label="y", model_base_path=str(tmp_path / "m"))
    with pytest.raises(InputError, match="model_base_path"):
        check(label="y", model_base_path="/", table="a.b")


@pytest.mark.slow
def test_the_pipeline_stops_at_preflight_in_seconds(penguins, kfp_local, tmp_path, capfd):
    from conveyor.pipelines import training

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="preflight"):
        training.pipeline(table=penguins, label="species", model_base_path=str(tmp_path / "m"),
                          slices=["continent"])
    elapsed = time.monotonic() - started
    text = "".join(capfd.readouterr())
    assert "slices: 'continent' is not a column of table" in text
    assert not list(kfp_local.rglob("dataset.json"))  # nothing was ingested
    assert elapsed < 60, elapsed  # a bound, not a benchmark
