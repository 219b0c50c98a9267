"""Batch prediction: run a SavedModel's serving signature over a Dataset split in streaming
batches and write the predictions to a BigQuery table, with the model version in every row.

Rows are loaded into a staging table in Parquet chunks; only when every chunk is in does one
statement publish them, so the output table never holds a partial result: `CREATE TABLE ... AS
SELECT` (write_mode "create", the default: the table must not exist), `INSERT INTO` (write_mode
"append": into an existing table with the same columns) or `CREATE OR REPLACE TABLE` (write_mode
"replace", only when asked). What may be written where is `conveyor.predict.output`, checked
before the model is loaded: never the input table, never over a table unasked, never two
columns of one name. Output columns: the passthrough columns asked for (none asked: the key
columns, those the model's feature spec left out because they identify rows and the input's
split key, so each output row joins back to its input row; `output.key_columns`), then the
model's
outputs (binary: probability, class, class_label; multiclass: class_id, class_label and one
probability_<class> column per class; regression: value), then model_version.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from conveyor import gcp
from conveyor.errors import InputError
from conveyor.gcp import retry
from conveyor.gcp.sql import parse_table_id, quote_column
from conveyor.io import parquet
from conveyor.io.dataset import Dataset
from conveyor.predict import output

CHUNK_ROWS = 65536


@dataclasses.dataclass
class PredictionResult:
    table: str
    rows: int
    model_version: str
    seconds: float
    passthrough: tuple[str, ...] = ()  # the input columns carried into the output


@retry.giving_up("batch prediction to BigQuery")
def predict_to_bigquery(model_dir: str | Path, dataset_path: str | Path, output_table: str, *,
                        model_version: str, split: str = "all",
                        passthrough: Sequence[str] = (), project: str | None = None,
                        location: str | None = None,
                        write_mode: str = "create") -> PredictionResult:
    """Predict `split` of the Dataset with the SavedModel and publish the rows to
    `output_table` as `write_mode` allows (`conveyor.predict.output`: "create", "append",
    "replace"); every refusal comes before the model is loaded."""
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
    classes = [str(c) for c in fitted.label_classes or []]
    if not passthrough:
        ingested = dataset.info.source.get("split") or {}
        passthrough = output.key_columns(
            {**fitted.spec.excluded, str(ingested.get("key")): "the split key: identifies rows"},
            dataset.schema.names, fitted.spec.task, classes)
    output.check_columns(passthrough, fitted.spec.task, classes)
    schema = _output_schema(dataset.schema, passthrough, fitted.spec.task, classes)

    client = gcp.bigquery_client(project, location)
    target = parse_table_id(output_table, client.project, "output_table")
    output.check_not_input(target, dataset.info.source, client.project)
    existing = _existing_table(client, target)
    output.check_existing(existing, target, write_mode, _bq_schema(schema))
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    inputs = serve.structured_input_signature[1]
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
                                  model_version).cast(schema)
            client.load_table_from_file(
                parquet.buffer(table), staging, job_config=bigquery.LoadJobConfig(
                    source_format=bigquery.SourceFormat.PARQUET, write_disposition=disposition,
                    schema=_bq_schema(table.schema))).result(retry=retry.bigquery())
            disposition = bigquery.WriteDisposition.WRITE_APPEND
            rows += table.num_rows
        # append to a table not there yet: make it, as BigQuery's WRITE_APPEND would
        publish = "create" if write_mode == "append" and existing is None else write_mode
        client.query(_publish_sql(target, staging, schema.names, publish),
                     retry=retry.bigquery(), job_retry=retry.bigquery_job()).result(
                         retry=retry.bigquery(), job_retry=retry.bigquery_job())
    finally:
        client.delete_table(staging, not_found_ok=True, retry=retry.bigquery().with_timeout(10))
    return PredictionResult(str(target), rows, model_version, time.monotonic() - start,
                            tuple(passthrough))


def _existing_table(client, target):
    """The output table as BigQuery has it, or None when there is none."""
    from google.api_core.exceptions import NotFound

    try:
        return client.get_table(str(target), retry=retry.bigquery())
    except NotFound:
        return None


def _publish_sql(target, staging: str, names: Sequence[str], write_mode: str) -> str:
    """The one statement that publishes the staged rows as `write_mode` says."""
    if write_mode == "append":
        columns = ", ".join(quote_column(n, "output column") for n in names)
        return f"INSERT INTO {target.sql} ({columns}) SELECT {columns} FROM `{staging}`"
    verb = "CREATE OR REPLACE TABLE" if write_mode == "replace" else "CREATE TABLE"
    return f"{verb} {target.sql} AS SELECT * FROM `{staging}`"


def _output_schema(source: pa.Schema, passthrough: Sequence[str], task: str,
                   classes: list[str]) -> pa.Schema:
    """The output rows' Arrow schema, known before any prediction (for the checks of an
    existing table)."""
    kinds = {"probability": pa.float64(), "class": pa.int64(), "class_id": pa.int64(),
             "class_label": pa.string(), "value": pa.float64(), "model_version": pa.string()}
    fields = [source.field(name) for name in passthrough]
    fields += [pa.field(name, kinds.get(name, pa.float64()))
               for name, _ in output.prediction_columns(task, classes)]
    return pa.schema(fields)


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
            columns[f"probability_{output.column_name(name)}"] = pa.array(probabilities[:, i])
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
