"""The batch-prediction pipeline through kfp.local: every row predicted by the pushed model,
written to the emulated BigQuery with the model version."""

import pytest
from kfp import local

from conftest import write_dataset
from conveyor import gcp
from conveyor.local.seed import penguins as penguin_rows
from conveyor.pipelines import batch_prediction
from conveyor.push.base_path import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, stack):
    from conveyor.io import Dataset
    from conveyor.train.train import train
    from conveyor.transform.fit import fit
    from conveyor.transform.spec import propose_spec

    root = tmp_path_factory.mktemp("batch")
    ds = write_dataset(root / "ds", penguin_rows())
    types = {c.name: c.type for c in Dataset(ds).info.columns}
    fit(Dataset(ds), propose_spec(types, "species", {"a": 1, "b": 1, "c": 1})).write(root / "t")
    train(ds, root / "t", root / "model", hparams={"epochs": 8, "batch_size": 32,
                                                   "learning_rate": 0.01})
    client = gcp.storage_client()
    if not client.bucket("batch-test").exists():
        client.create_bucket("batch-test")
    base = ModelBasePath(f"gs://batch-test/{root.name}/penguins")
    base.publish(root / "model")
    base.publish(root / "model")
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
