"""KFP components for ingest: thin typed shells over `conveyor.ingest.tasks`.

Each runs in conveyor's image (`conveyor.images`), which has the package installed; locally,
`kfp.local` runs the same function in the current interpreter. A parameter left at "" is not set.
"""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def bigquery_ingest(
    dataset: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    table: str = "",
    query: str = "",
    query_parameters: dict = {},
    project: str = "",
    location: str = "",
    split_key: str = "",
    split_ratios: dict = {"train": 0.8, "eval": 0.2},
    staging_dataset: str = "conveyor_staging",
    read_method: str = "storage",
    read_streams: int = 1,
):
    """Ingest a BigQuery table or query result into a split Dataset artifact.

    The split is computed inside BigQuery (ABS(MOD(FARM_FINGERPRINT(key), 10000)) over bucket
    ranges), materialized in a staging table, and streamed back as Parquet shards.

    Args:
        dataset: The Dataset artifact: <split>/part-*.parquet and dataset.json.
        metrics: Row counts per split, bytes read and seconds.
        table: Table to read, as project.dataset.table or dataset.table. Give this or query.
        query: GoogleSQL query whose result is read. Give this or table.
        query_parameters: Named query parameters (@name) and their values.
        project: Project that runs the jobs; default from the environment.
        location: BigQuery location of the jobs and staging dataset, e.g. US or EU.
        split_key: INT64 or STRING column that decides each row's split (default: the row).
        split_ratios: Split names and their shares of rows, summing to 1.
        staging_dataset: Dataset for the temporary split table, created if missing.
        read_method: storage (BigQuery Storage Read API, fast) or rest (tabledata.list).
        read_streams: Storage Read streams read at once, each into its own shards (BigQuery may give fewer); the Dataset is the same whatever the number.
    """
    from conveyor.ingest import tasks

    tasks.bigquery_ingest(
        dataset, metrics, table=table, query=query, query_parameters=query_parameters,
        project=project, location=location, split_key=split_key, split_ratios=split_ratios,
        staging_dataset=staging_dataset, read_method=read_method, read_streams=read_streams,
    )


@dsl.component(base_image=images.image(), install_kfp_package=False)
def gcs_ingest(
    dataset: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    uris: str,
    file_format: str = "auto",
    project: str = "",
    split_key: str = "",
    split_ratios: dict = {"train": 0.8, "eval": 0.2},
    csv_delimiter: str = ",",
):
    """Ingest CSV or Parquet files from Cloud Storage into a split Dataset artifact.

    Rows are split by the same rule as bigquery_ingest, so the same split_key puts a row in the
    same split either way.

    Args:
        dataset: The Dataset artifact: <split>/part-*.parquet and dataset.json.
        metrics: Row counts per split, bytes read and seconds.
        uris: gs:// URIs or globs, separated by commas, e.g. gs://bucket/data/*.csv.
        file_format: auto (from the file names), csv or parquet.
        project: Project for Cloud Storage requests; default from the environment.
        split_key: Integer or string column that decides each row's split (default: the row).
        split_ratios: Split names and their shares of rows, summing to 1.
        csv_delimiter: Field delimiter of CSV files.
    """
    from conveyor.ingest import tasks

    tasks.gcs_ingest(
        dataset, metrics, uris=uris, file_format=file_format, project=project,
        split_key=split_key, split_ratios=split_ratios, csv_delimiter=csv_delimiter,
    )
