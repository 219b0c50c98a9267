"""The batch_predict KFP component: a thin typed shell over `conveyor.predict.tasks`."""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def batch_predict(
    dataset: dsl.Input[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    output_table: str,
    model: dsl.Input[dsl.Model] = None,
    model_base_path: str = "",
    split: str = "all",
    passthrough: list = [],
    project: str = "",
    location: str = "",
    write_mode: str = "create",
):
    """Predict every row of a Dataset split with a SavedModel and write them to BigQuery.

    Args:
        dataset: The rows to predict (a Dataset, e.g. from bigquery_ingest with one split).
        metrics: Rows written and seconds.
        output_table: BigQuery table for the predictions, published when all rows are in; never
            the input table.
        model: The SavedModel to use; default: the newest version under model_base_path.
        model_base_path: Serving model base path (local or gs://).
        split: Split of the dataset to predict.
        passthrough: Columns copied from the input rows into the output, e.g. a key. Empty
            (the default): the dataset's split key and the columns the model's feature spec
            left out as row identifiers, so every output row joins back to its input row.
        project: Project for the BigQuery jobs; default from the environment.
        location: BigQuery location.
        write_mode: When output_table exists: "create" (default) refuses it, "append" adds the
            rows if its columns are the output's (else refuses, naming the columns that
            differ), "replace" replaces it. A passthrough column named like an output column
            is refused in every mode.
    """
    from conveyor.predict import tasks

    tasks.batch_predict(dataset, metrics, output_table=output_table, model=model,
                        model_base_path=model_base_path, split=split, passthrough=passthrough,
                        project=project, location=location, write_mode=write_mode)
