"""Batch predictions join back (issue 28): with no passthrough asked for, the output carries the
columns the model's feature spec left out as row identifiers, so every prediction row finds its
input row; asked-for passthrough columns replace them. Against the BigQuery emulator."""

from __future__ import annotations

import uuid

import pytest

from conveyor import gcp
from conveyor.predict.output import key_columns


def test_key_columns_are_the_excluded_identifiers_present_and_not_clashing():
    excluded = {"order_id": "300 distinct values in 300 rows: identifies rows",
                "note": "constant: one value in every row",
                "Value": "300 distinct values in 300 rows: identifies rows",
                "gone": "300 distinct values in 300 rows: identifies rows"}
    assert key_columns(excluded, ["order_id", "note", "Value", "x"], "regression", []) == \
        ["order_id"]  # 'Value' would clash with the prediction column 'value'
    assert key_columns(excluded, ["order_id", "Value"], "binary", ["a", "b"]) == \
        ["order_id", "Value"]


@pytest.mark.local
def test_predictions_carry_the_row_key_by_default(stack, tmp_path):
    import pyarrow as pa
    from support import train_model, write_dataset

    from conveyor.io import Dataset
    from conveyor.predict.batch import predict_to_bigquery
    from conveyor.transform.fit import fit
    from conveyor.transform.propose import propose_spec

    n = 240
    table = pa.table({"order_id": [f"o-{i:05d}" for i in range(n)],
                      "size": [float(i % 13) for i in range(n)],
                      "shop": ["north" if i % 3 else "south" for i in range(n)],
                      "big": [int(i % 13 > 6) for i in range(n)]})
    write_dataset(tmp_path / "ds", table)
    types = {c.name: c.type for c in Dataset(tmp_path / "ds").info.columns}
    spec = propose_spec(types, "big", {0: 1, 1: 1}, task="binary")
    del spec.features["order_id"]  # as transform proposes it from the statistics
    spec.excluded["order_id"] = f"{n} distinct values in {n} rows: identifies rows"
    fit(Dataset(tmp_path / "ds"), spec).write(tmp_path / "t")
    model = train_model(tmp_path / "ds", tmp_path / "t", tmp_path / "model",
                        {"epochs": 1, "batch_size": 64})
    out = f"predict_keys.out_{uuid.uuid4().hex[:10]}"
    result = predict_to_bigquery(model, tmp_path / "ds", out, model_version="1", split="eval")
    assert result.passthrough == ("order_id",)
    rows = list(gcp.bigquery_client().query(f"SELECT * FROM {out}").result())

    wanted = Dataset(tmp_path / "ds").read_table("eval", ["order_id"]).column(0).to_pylist()
    assert sorted(r["order_id"] for r in rows) == sorted(wanted)
    asked = predict_to_bigquery(model, tmp_path / "ds", out + "_2", model_version="1",
                                split="eval", passthrough=["shop"])
    assert asked.passthrough == ("shop",)
    # rows ingested with a split key (batch_prediction's split_key): that column is carried too
    keyed = table.append_column("ticket", pa.array(range(1000, 1000 + n), pa.int64()))
    write_dataset(tmp_path / "keyed", keyed, source={"type": "test", "split": {"key": "ticket"}})
    by_key = predict_to_bigquery(model, tmp_path / "keyed", out + "_3", model_version="1",
                                 split="eval")
    assert by_key.passthrough == ("order_id", "ticket")
