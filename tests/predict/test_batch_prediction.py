"""The batch-prediction pipeline through kfp.local: every row predicted by the pushed model,
written to the emulated BigQuery with the model version."""

import uuid

import pytest
from kfp import local

from conveyor import gcp
from conveyor.pipelines import batch_prediction
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]


@pytest.fixture(scope="module")
def pushed(penguin_model, bucket):
    base = ModelBasePath(f"gs://{bucket('batch-test')}/{penguin_model.name}/penguins")
    base.publish(penguin_model / "model")
    base.publish(penguin_model / "model")
    return base.uri


def fresh_table() -> str:
    """A table id no earlier run has used (the emulator may outlive a test session)."""
    return f"predict_test.out_{uuid.uuid4().hex[:10]}"


def count(table: str) -> int:
    return list(gcp.bigquery_client().query(f"SELECT COUNT(*) AS n FROM {table}").result())[0].n


def test_batch_prediction_writes_every_row_with_the_model_version(penguins, pushed, tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)
    out = fresh_table()
    batch_prediction.pipeline(table=penguins, output_table=out,
                              model_base_path=pushed, passthrough=["species"])
    rows = list(gcp.bigquery_client().query(f"SELECT * FROM {out}").result())
    assert len(rows) == 344
    first = dict(rows[0])
    assert set(first) == {"species", "class_id", "class_label", "probability_Adelie",
                          "probability_Chinstrap", "probability_Gentoo", "model_version"}
    assert {r["model_version"] for r in rows} == {"2"}
    assert all(abs(r["probability_Adelie"] + r["probability_Chinstrap"]
                   + r["probability_Gentoo"] - 1) < 1e-4 for r in rows)
    right = sum(r["class_label"] == r["species"] for r in rows)
    assert right / len(rows) > 0.8
    staging = [t.table_id for t in gcp.bigquery_client().list_tables("predict_test")
               if "__staging_" in t.table_id]
    assert staging == []


def refused(capfd, **arguments) -> str:
    """Run the pipeline expecting batch_predict to refuse: the log's text."""
    with pytest.raises(RuntimeError, match="batch-predict"):
        batch_prediction.pipeline(**arguments)
    logs = capfd.readouterr()
    text = logs.out + logs.err
    assert "InputError" in text
    assert "wrote " not in text  # nothing published
    return text


def test_the_input_table_is_never_the_output(penguins, pushed, tmp_path, capfd):
    """The source table named as the output, spelt differently (project, backticks), is
    refused whatever the write_mode, and the source keeps its rows and columns."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)
    client = gcp.bigquery_client()
    columns = [f.name for f in client.get_table(penguins).schema]
    spelt = f"`{client.project}.{penguins}`"
    text = refused(capfd, table=penguins, output_table=spelt, model_base_path=pushed,
                   write_mode="replace")
    assert "is the table the rows are read from" in text
    assert count(penguins) == 344
    assert [f.name for f in client.get_table(penguins).schema] == columns


def test_an_existing_table_is_kept_unless_append_or_replace_is_asked_for(
        penguins, pushed, tmp_path, capfd):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)
    client = gcp.bigquery_client()
    unrelated = fresh_table()
    client.create_dataset("predict_test", exists_ok=True)
    client.query(f"CREATE TABLE {unrelated} AS SELECT 1 AS id, 'keep me' AS note").result()
    text = refused(capfd, table=penguins, output_table=unrelated, model_base_path=pushed)
    assert f"{client.project}.{unrelated} already exists and write_mode is 'create'" in text
    text = refused(capfd, table=penguins, output_table=unrelated, model_base_path=pushed,
                   write_mode="append")
    assert f"cannot append to {client.project}.{unrelated}" in text
    assert "note (STRING) is in the table, not in the output" in text
    assert "class_label (STRING) is not in the table" in text
    assert [dict(r) for r in client.query(f"SELECT * FROM {unrelated}").result()] == [
        {"id": 1, "note": "keep me"}]

    out = fresh_table()  # append to a table not there yet makes it (the README's example)
    for _ in range(2):
        batch_prediction.pipeline(table=penguins, output_table=out, model_base_path=pushed,
                                  passthrough=["species"], write_mode="append")
    assert count(out) == 2 * 344
    batch_prediction.pipeline(table=penguins, output_table=out, model_base_path=pushed,
                              passthrough=["species"], write_mode="replace")
    assert count(out) == 344


def test_a_passthrough_column_named_like_a_prediction_column_is_refused(
        penguins, pushed, tmp_path, capfd):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)
    out = fresh_table()
    text = refused(capfd, query=f"SELECT *, species AS Class_Label FROM {penguins}",
                   output_table=out, model_base_path=pushed, passthrough=["Class_Label"])
    assert ("passthrough column 'Class_Label' and prediction column 'class_label'") in text
    assert not [t for t in gcp.bigquery_client().list_tables("predict_test")
                if t.table_id == out.split(".")[1]]
