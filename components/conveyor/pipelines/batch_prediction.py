"""Batch prediction: read a BigQuery table, predict it with the served model, write a table."""

from kfp import dsl

from conveyor.ingest.component import bigquery_ingest
from conveyor.params import default, documented
from conveyor.predict.component import batch_predict

NAME = "conveyor-batch-prediction"


@dsl.pipeline(name=NAME, description="Predict a BigQuery table with the newest pushed model "
                                     "and write the predictions to another table.")
@documented(
    "Predict every row of a table or query and write the predictions to BigQuery.",
    output_table="Table for the predictions, each row with the model version.",
    model_base_path="Serving model base path (gs:// or local); its newest version predicts.",
    table="Table to predict, as project.dataset.table or dataset.table (or give query).",
    query="GoogleSQL query whose rows are predicted, instead of table.",
    passthrough="Input columns copied into the output rows (e.g. a key); empty: the split_key "
                "and the columns the model left out as row identifiers, so rows join back.",
    split_key="The input's key column (INT64 or STRING), carried into every output row unless "
              "passthrough names other columns.",
    write_mode="When output_table exists: create (default) refuses it, append adds the rows if "
               "its columns match, replace replaces it. The input table is never written.",
)
def pipeline(
    output_table: str,
    model_base_path: str,
    table: str = default("table"),
    query: str = default("query"),
    passthrough: list = [],
    split_key: str = default("split_key"),
    project: str = default("project"),
    location: str = default("location"),
    write_mode: str = "create",
):
    rows = bigquery_ingest(table=table, query=query, split_ratios={"all": 1.0}, project=project,
                           location=location, split_key=split_key,
                           ).set_display_name("Read rows from BigQuery")
    rows.set_caching_options(False)  # the table changes under the same parameters
    batch_predict(dataset=rows.outputs["dataset"], output_table=output_table,
                  model_base_path=model_base_path, passthrough=passthrough, project=project,
                  location=location, write_mode=write_mode,
                  ).set_display_name("Predict and write to BigQuery").set_caching_options(False)
