"""Demo and benchmark data for the local stack (or any BigQuery project you point conveyor at).

- `seed_penguins()`: the Palmer penguins (344 rows, shipped by the `palmerpenguins` package) into
  BigQuery `conveyor_demo.penguins`, and as CSV into `gs://conveyor-demo/penguins/penguins.csv`.
- `seed_reference(rows)`: the synthetic reference workload of the TFX baseline benchmark
  (../shared/bench/tfx-baseline/README.md: f0..f7 ~ N(0,1), c0 in a0..a4, c1 in b0..b49, a
  logistic label; seed 0) into `conveyor_bench.reference_<rows>`. The generator draws exactly what
  the baseline's `make_csv` draws; floats are rounded to 5 decimals as its CSV writes them.

Rows are loaded as Parquet in chunks, so a million rows take seconds and bounded memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conveyor import gcp

DEMO_DATASET = "conveyor_demo"
DEMO_TABLE = f"{DEMO_DATASET}.penguins"
DEMO_BUCKET = "conveyor-demo"
DEMO_CSV = f"gs://{DEMO_BUCKET}/penguins/penguins.csv"
BENCH_DATASET = "conveyor_bench"
_LOAD_CHUNK_ROWS = 250_000


def reference_table(rows: int) -> str:
    return f"{BENCH_DATASET}.reference_{rows}"


def reference_rows(rows: int, seed: int = 0) -> pa.Table:
    """The baseline's synthetic rows: columns f0..f7 (float64), c0, c1 (string), label (int64)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8)).astype("float32")
    c0 = rng.integers(0, 5, size=rows)
    c1 = rng.integers(0, 50, size=rows)
    w = np.array([1.5, -2.0, 0.7, 0.0, 0.3, -0.5, 1.0, 0.0], dtype="float32")
    logit = x @ w + (c0 - 2) * 0.6 + np.where(c1 % 7 == 0, 1.0, 0.0)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    columns = {f"f{i}": np.round(x[:, i].astype("float64"), 5) for i in range(8)}
    columns["c0"] = pa.array(np.char.add("a", c0.astype(str)))
    columns["c1"] = pa.array(np.char.add("b", c1.astype(str)))
    columns["label"] = y
    return pa.table(columns)


def penguins() -> pa.Table:
    """The Palmer penguins as shipped by the `palmerpenguins` package (NaN becomes NULL)."""
    from palmerpenguins import load_penguins

    frame = load_penguins()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.cast(pa.schema([
        pa.field(f.name, pa.float64() if pa.types.is_floating(f.type) else
                 pa.int64() if pa.types.is_integer(f.type) else pa.string())
        for f in table.schema
    ]))


def _chunks(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for offset in range(0, max(table.num_rows, 1), rows):
        yield table.slice(offset, rows)


def load_table(table: pa.Table, table_id: str, project: str | None = None) -> int:
    """Replace BigQuery table `dataset.table` with `table`'s rows; returns the row count."""
    from google.cloud import bigquery

    client = gcp.bigquery_client(project)
    dataset = table_id.split(".")[-2]
    client.create_dataset(dataset, exists_ok=True)
    schema = [bigquery.SchemaField(f.name, {pa.float64(): "FLOAT64", pa.int64(): "INT64",
                                            pa.string(): "STRING"}[f.type])
              for f in table.schema]
    disposition = bigquery.WriteDisposition.WRITE_TRUNCATE
    for chunk in _chunks(table, _LOAD_CHUNK_ROWS):
        buffer = io.BytesIO()
        pq.write_table(chunk, buffer)
        buffer.seek(0)
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                        schema=schema, write_disposition=disposition)
        client.load_table_from_file(buffer, table_id, job_config=config).result()
        disposition = bigquery.WriteDisposition.WRITE_APPEND
    return table.num_rows


def table_exists(table_id: str, project: str | None = None) -> bool:
    from google.api_core.exceptions import NotFound

    try:
        gcp.bigquery_client(project).get_table(table_id)
        return True
    except NotFound:
        return False


def seed_penguins(project: str | None = None) -> int:
    """Load the penguins into BigQuery and GCS (replacing them); returns the row count."""
    import pyarrow.csv as pcsv

    table = penguins()
    load_table(table, DEMO_TABLE, project)
    client = gcp.storage_client(project)
    bucket = client.bucket(DEMO_BUCKET)
    if not bucket.exists():
        client.create_bucket(DEMO_BUCKET)
    buffer = io.BytesIO()
    pcsv.write_csv(table, buffer)
    bucket.blob(DEMO_CSV.split("/", 3)[3]).upload_from_string(buffer.getvalue(),
                                                             content_type="text/csv")
    return table.num_rows


def seed_reference(rows: int, project: str | None = None) -> str:
    """Load `rows` reference-workload rows into `conveyor_bench.reference_<rows>`; its id."""
    table_id = reference_table(rows)
    load_table(reference_rows(rows), table_id, project)
    return table_id
