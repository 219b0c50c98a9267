"""Batch prediction: run a SavedModel's serving signature over a Dataset split in streaming
batches and write the predictions to a BigQuery table, with the model version in every row.

Rows are loaded into a staging table in Parquet chunks; only when every chunk is in does one
`CREATE OR REPLACE TABLE ... AS SELECT` publish them, so the output table never holds a partial
result. Output columns: the passthrough columns asked for, then the model's outputs (binary:
probability, class, class_label; multiclass: class_id, class_label and one probability_<class>
column per class; regression: value), then model_version.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from conveyor import gcp
from conveyor.gcp import retry
from conveyor.gcp.sql import parse_table_id
from conveyor.errors import InputError
from conveyor.io import parquet
from conveyor.io.dataset import Dataset

CHUNK_ROWS = 65536


@dataclasses.dataclass
class PredictionResult:
    table: str
    rows: int
    model_version: str
    seconds: float


def _column_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", str(value))


@retry.giving_up("batch prediction to BigQuery")
def predict_to_bigquery(model_dir: str | Path, dataset_path: str | Path, output_table: str, *,
                        model_version: str, split: str = "all",
                        passthrough: Sequence[str] = (), project: str | None = None,
                        location: str | None = None) -> PredictionResult:
    import tensorflow as tf
    from google.cloud import bigquery

    from conveyor.model.inputs import model_inputs
    from conveyor.model.layout import ASSETS_EXTRA
    from conveyor.transform.fit import Fitted

    start = time.monotonic()
    dataset = Dataset(dataset_path)
    dataset.split(split)
    fitted = Fitted.load(Path(model_dir) / ASSETS_EXTRA)
    names = set(dataset.schema.names)
    missing = sorted(set(fitted.features) - names)
    if missing:
        raise InputError(f"batch_predict: the dataset lacks the model's input column(s) {missing}")
    unknown = sorted(set(passthrough) - names)
    if unknown:
        raise InputError(f"passthrough: no column(s) {unknown} in the dataset")
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    inputs = serve.structured_input_signature[1]
    classes = [str(c) for c in fitted.label_classes or []]

    client = gcp.bigquery_client(project, location)
    target = parse_table_id(output_table, client.project, "output_table")
    client.create_dataset(f"{target.project}.{target.dataset}", exists_ok=True,
                          retry=retry.bigquery())
    staging = f"{target.project}.{target.dataset}.{target.table}__staging_{uuid.uuid4().hex[:12]}"
    rows, disposition = 0, bigquery.WriteDisposition.WRITE_TRUNCATE
    try:
        for batch in dataset.iter_batches(split, columns=sorted({*fitted.features, *passthrough}),
                                          batch_size=CHUNK_ROWS):
            out = serve(**{n: tf.constant(a, dtype=inputs[n].dtype)
                           for n, a in model_inputs(batch, fitted).items()})
            table = _output_table(batch, passthrough, out, fitted.spec.task, classes,
                                  model_version)
            client.load_table_from_file(parquet.buffer(table), staging, job_config=bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET, write_disposition=disposition,
                schema=_bq_schema(table.schema))).result(retry=retry.bigquery())
            disposition = bigquery.WriteDisposition.WRITE_APPEND
            rows += table.num_rows
        client.query(f"CREATE OR REPLACE TABLE {target.sql} AS SELECT * FROM `{staging}`",
                     retry=retry.bigquery(), job_retry=retry.bigquery_job()).result(
                         retry=retry.bigquery(), job_retry=retry.bigquery_job())
    finally:
        client.delete_table(staging, not_found_ok=True, retry=retry.bigquery().with_timeout(10))
    return PredictionResult(str(target), rows, model_version, time.monotonic() - start)


def _output_table(batch: pa.RecordBatch, passthrough: Sequence[str], out: dict, task: str,
                  classes: list[str], version: str) -> pa.Table:
    columns = {name: batch.column(name) for name in passthrough}
    if task == "binary":
        columns["probability"] = pa.array(out["probability"].numpy().astype(np.float64))
        columns["class"] = pa.array(out["class"].numpy().astype(np.int64))
        columns["class_label"] = pa.array([v.decode() for v in out["class_label"].numpy()])
    elif task == "multiclass":
        columns["class_id"] = pa.array(out["class_id"].numpy().astype(np.int64))
        columns["class_label"] = pa.array([v.decode() for v in out["class_label"].numpy()])
        probabilities = out["probabilities"].numpy().astype(np.float64)
        for i, name in enumerate(classes):
            columns[f"probability_{_column_name(name)}"] = pa.array(probabilities[:, i])
    else:
        columns["value"] = pa.array(out["value"].numpy().astype(np.float64))
    columns["model_version"] = pa.array([version] * batch.num_rows, pa.string())
    return pa.table(columns)


def _bq_schema(schema: pa.Schema) -> list:
    from google.cloud import bigquery

    types = {pa.int64(): "INT64", pa.float64(): "FLOAT64", pa.string(): "STRING",
             pa.bool_(): "BOOL", pa.date32(): "DATE"}
    out = []
    for f in schema:
        kind = "TIMESTAMP" if pa.types.is_timestamp(f.type) else types.get(f.type, "STRING")
        out.append(bigquery.SchemaField(f.name, kind))
    return out
