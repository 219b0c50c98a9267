"""Demo and benchmark data for the local stack (or any BigQuery project you point conveyor at).

- `seed_penguins()`: the Palmer penguins (344 rows, shipped by the `palmerpenguins` package) into
  BigQuery `conveyor_demo.penguins`, and as CSV into `gs://conveyor-demo/penguins/penguins.csv`.
- `seed_reference(rows)`: the synthetic reference workload of the TFX baseline benchmark
  (../shared/bench/tfx-baseline/README.md: f0..f7 ~ N(0,1), c0 in a0..a4, c1 in b0..b49, a
  logistic label; seed 0) into `conveyor_bench.reference_<rows>`. The generator draws exactly what
  the baseline's `make_csv` draws; floats are rounded to 5 decimals as its CSV writes them.

- `houses(rows)`: a synthetic house-price table with what real tables throw at a pipeline:
  mixed-case, keyword, spaced and unicode column names, a bool, a DATE, an int-coded category,
  a high-cardinality string, an id, a constant, NULLs in numbers and strings, and a
  heavy-tailed positive label (`Price`) that is log-linear in the features.

Rows are loaded as Parquet in chunks, so a million rows take seconds and bounded memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from conveyor import gcp
from conveyor.io import parquet

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


def houses(rows: int = 50_000, seed: int = 0) -> pa.Table:
    """Houses sold 2015-2024: the columns below, `Price` to predict (log-linear plus noise)."""
    import datetime

    rng = np.random.default_rng(seed)
    area = np.exp(rng.normal(4.6, 0.45, rows))  # m², log-normal around 100
    rooms = np.clip(np.round(area / 25 + rng.normal(0, 0.8, rows)), 1, 12).astype("int64")
    zone = rng.integers(1, 21, rows)  # int-coded category: 20 zones
    zone_effect = np.linspace(-0.5, 0.5, 20)[rng.permutation(20)]
    garden = rng.random(rows) < 0.4
    sold = rng.integers(0, 3650, rows)  # days after 2015-01-01
    streets = np.array([f"{rng.choice(['Oak', 'Elm', 'Main', 'Mill', 'Lake'])} street "
                        f"{i}" for i in range(5000)])
    street_id = rng.zipf(1.3, rows) % 5000
    street_effect = rng.normal(0, 0.15, 5000)
    district = rng.choice(["north", "south", "east", "west", "centre"], rows,
                          p=[0.3, 0.25, 0.2, 0.15, 0.1])
    district_effect = {"north": 0.1, "south": -0.1, "east": 0.0, "west": 0.05, "centre": 0.35}
    age = rng.integers(0, 120, rows).astype("float64")
    log_price = (7.0 + 1.0 * np.log(area) + zone_effect[zone - 1] + 0.12 * garden
                 + street_effect[street_id] + np.vectorize(district_effect.get)(district)
                 + 0.04 * sold / 365 - 0.002 * age + 0.03 * rooms + rng.normal(0, 0.12, rows))
    price = np.round(np.exp(log_price), -2)

    def nulls(values, share):
        mask = rng.random(rows) < share
        return pa.array(values, mask=mask)

    epoch = datetime.date(2015, 1, 1)
    return pa.table({
        "Id": pa.array(np.arange(1, rows + 1, dtype="int64")),
        "Area_m2": nulls(np.round(area, 1), 0.03),
        "Rooms": pa.array(rooms),
        "class": pa.array(zone.astype("int64")),  # a Python keyword holding zone codes
        "HasGarden": nulls(garden, 0.02),
        "SoldOn": pa.array([epoch + datetime.timedelta(days=int(d)) for d in sold],
                           pa.date32()),
        "Street Name": nulls(streets[street_id], 0.01),
        "from": nulls(district, 0.05),  # the district the house is in; a keyword as a name
        "âge": nulls(age, 0.1),
        "Country": pa.array(["NL"] * rows),
        "Price": pa.array(price),
    })


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


def _bigquery_type(field: pa.Field) -> str:
    """The BigQuery column type of one of the seeded tables' Arrow columns."""
    simple = {pa.float64(): "FLOAT64", pa.int64(): "INT64", pa.string(): "STRING",
              pa.bool_(): "BOOL", pa.date32(): "DATE"}.get(field.type)
    if simple is not None:
        return simple
    if pa.types.is_timestamp(field.type):
        return "TIMESTAMP"
    raise ValueError(f"column {field.name}: no BigQuery type for Arrow type {field.type}")


def load_table(table: pa.Table, table_id: str, project: str | None = None) -> int:
    """Replace BigQuery table `dataset.table` with `table`'s rows; returns the row count."""
    from google.cloud import bigquery

    client = gcp.bigquery_client(project)
    dataset = table_id.split(".")[-2]
    client.create_dataset(dataset, exists_ok=True)
    schema = [bigquery.SchemaField(f.name, _bigquery_type(f)) for f in table.schema]
    disposition = bigquery.WriteDisposition.WRITE_TRUNCATE
    for chunk in _chunks(table, _LOAD_CHUNK_ROWS):
        buffer = parquet.buffer(chunk)
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
