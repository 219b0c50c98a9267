"""The batch-prediction pipeline through kfp.local: every row predicted by the pushed model,
written to the emulated BigQuery with the model version."""

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


def test_batch_prediction_writes_every_row_with_the_model_version(penguins, pushed, tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)
    batch_prediction.pipeline(table=penguins, output_table="predict_test.penguins_out",
                              model_base_path=pushed, passthrough=["species"])
    rows = list(gcp.bigquery_client().query(
        "SELECT * FROM predict_test.penguins_out").result())
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
