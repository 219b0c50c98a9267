"""Fresh cases for issue 25's class 1 (batch prediction never destroys data), written after the
fix and run once against it: through the batch-prediction pipeline under kfp.local."""

import uuid

import pytest
from kfp import local

from conveyor import gcp
from conveyor.pipelines import batch_prediction
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]


@pytest.fixture(scope="module")
def pushed(penguin_model, bucket):
    base = ModelBasePath(f"gs://{bucket('fresh-batch')}/{penguin_model.name}/penguins")
    base.publish(penguin_model / "model")
    return base.uri


def refused(capfd, **arguments) -> str:
    with pytest.raises(RuntimeError, match="batch-predict"):
        batch_prediction.pipeline(**arguments)
    logs = capfd.readouterr()
    return logs.out + logs.err


def rows(table: str) -> list[dict]:
    return [dict(r) for r in gcp.bigquery_client().query(f"SELECT * FROM {table}").result()]


def test_a_copy_of_the_input_read_through_a_join_is_never_the_output(
        penguins, pushed, tmp_path, capfd):
    """The output named in the query's JOIN (not its FROM), in the legacy `project:dataset`
    spelling: the rows come from it, so it is refused and keeps its rows."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)
    client = gcp.bigquery_client()
    client.create_dataset("fresh_out", exists_ok=True)
    side = f"fresh_out.side_{uuid.uuid4().hex[:8]}"
    client.query(f"CREATE TABLE {side} AS SELECT 'Biscoe' AS island, 1 AS n").result()
    query = (f"SELECT p.* FROM {penguins} AS p JOIN {side} AS s ON p.island = s.island")
    text = refused(capfd, query=query, output_table=f"{client.project}:{side}",
                   model_base_path=pushed, write_mode="replace")
    assert "InputError" in text
    assert rows(side) == [{"island": "Biscoe", "n": 1}]


def test_append_to_a_table_whose_column_has_another_type_is_refused_and_keeps_it(
        penguins, pushed, tmp_path, capfd):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)
    out = f"fresh_out.typed_{uuid.uuid4().hex[:8]}"
    batch_prediction.pipeline(table=penguins, output_table=out, model_base_path=pushed)
    client = gcp.bigquery_client()
    columns = {f.name: f.field_type for f in client.get_table(out).schema}
    kept = f"fresh_out.typed_{uuid.uuid4().hex[:8]}"
    casts = ", ".join(f"CAST(NULL AS INT64) AS {c}" if c == "model_version" else c
                      for c in columns)
    client.query(f"CREATE TABLE {kept} AS SELECT {casts} FROM {out} LIMIT 3").result()
    text = refused(capfd, table=penguins, output_table=kept, model_base_path=pushed,
                   write_mode="append")
    assert "model_version" in text, text[-2000:]
    assert len(rows(kept)) == 3
