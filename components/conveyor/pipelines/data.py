"""Ingest a BigQuery table or query into a split Dataset, then validate it (the data gate)."""

from kfp import dsl

from conveyor.ingest.component import bigquery_ingest
from conveyor.validate.component import validate

NAME = "conveyor-data"


@dsl.pipeline(name=NAME, description="Ingest a BigQuery table or query and validate it.")
def pipeline(
    table: str = "conveyor_demo.penguins",
    query: str = "",
    split_key: str = "",
    split_ratios: dict = {"train": 0.8, "eval": 0.2},
    project: str = "",
    location: str = "",
    suite_uri: str = "",
    policy: str = "fail",
    label_column: str = "",
) -> dsl.Dataset:
    """Ingest a BigQuery table or query into a split Dataset, then validate it.

    Args:
        table: Table to read, as project.dataset.table or dataset.table (or give query).
        query: GoogleSQL query whose result is read, instead of table.
        split_key: INT64 or STRING column that decides each row's split (default: the row).
        split_ratios: Split names and their shares of rows, summing to 1.
        project: Project that runs the BigQuery jobs; default from the environment.
        location: BigQuery location, e.g. US or EU.
        suite_uri: Suite to validate with (path or gs://); default: inferred from the data.
        policy: fail (stop on any problem) or warn (report and go on).
        label_column: Label column; a split where it is all NULL is an error.

    Returns:
        The Dataset artifact.
    """
    ingest = bigquery_ingest(
        table=table, query=query, split_key=split_key, split_ratios=split_ratios,
        project=project, location=location,
    ).set_display_name("Ingest from BigQuery")
    ingest.set_retry(num_retries=2, backoff_duration="30s", backoff_factor=2.0)
    validate(
        dataset=ingest.outputs["dataset"], suite_uri=suite_uri, policy=policy,
        label_column=label_column,
    ).set_display_name("Validate")
    return ingest.outputs["dataset"]
