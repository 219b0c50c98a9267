"""Continuous training: the spec a recurring run launches.

Ingest the newest data and validate it against the training statistics of the model being
served (pushed with each version). Broken data stops the run. When the data drifted past its
threshold, or when `retrain_always` (a plain schedule), retrain, evaluate against the serving
model and push if better.
"""

from kfp import dsl

from conveyor.ingest.component import bigquery_ingest
from conveyor.pipelines.steps import DEFAULT_ACCELERATOR, train_evaluate_push
from conveyor.transform.component import transform
from conveyor.validate.component import validate

NAME = "conveyor-continuous-training"


@dsl.pipeline(name="retrain")
def retrain(dataset: dsl.Input[dsl.Dataset], statistics: dsl.Input[dsl.Artifact], label: str,
            hyperparameters: dict, model_base_path: str, thresholds: dict, train_gpus: int,
            train_accelerator: str):
    """Transform, train, evaluate against the serving model, push if blessed."""
    fitted = transform(dataset=dataset, label=label).set_display_name("Transform")
    train_evaluate_push(
        dataset=dataset, preprocessing=fitted.outputs["preprocessing"], statistics=statistics,
        hyperparameters=hyperparameters, module_file="", model_base_path=model_base_path,
        slices=[], thresholds=thresholds, gpus=train_gpus, accelerator=train_accelerator,
    )


@dsl.pipeline(name=NAME, description="Check new data for drift against the serving model's "
                                     "training data; retrain, evaluate and push if better.")
def pipeline(
    table: str = "conveyor_demo.penguins",
    query: str = "",
    label: str = "species",
    model_base_path: str = "gs://conveyor-demo/models/penguins",
    drift_threshold: float = 0.1,
    retrain_always: bool = False,
    hyperparameters: dict = {"epochs": 10, "batch_size": 32},
    thresholds: dict = {},
    train_gpus: int = 0,
    train_accelerator: str = DEFAULT_ACCELERATOR,
):
    """Validate new data against the served model's training data; retrain on drift.

    Args:
        table: Table with the newest data, as project.dataset.table or dataset.table.
        query: GoogleSQL query for the newest data, instead of table.
        label: Label column.
        model_base_path: Serving model base path (gs:// or local): baseline statistics, model and push target.
        drift_threshold: Drift (Jensen-Shannon or L-infinity) above which the model is retrained.
        retrain_always: Retrain on every run, drifted or not (a plain schedule).
        hyperparameters: Model and training settings for the retraining.
        thresholds: Evaluation thresholds; default: beat the serving model.
        train_gpus: GPUs to retrain on; 0 trains on CPU with conveyor's CPU image.
        train_accelerator: Accelerator type when train_gpus > 0 (Vertex AI: NVIDIA_L4, ...; GKE: nvidia.com/gpu).
    """
    data = bigquery_ingest(table=table, query=query).set_display_name("Ingest from BigQuery")
    data.set_retry(num_retries=2, backoff_duration="30s", backoff_factor=2.0)
    data.set_caching_options(False)  # the table changes under the same parameters
    checked = validate(
        dataset=data.outputs["dataset"], baseline_model_base_path=model_base_path,
        drift_threshold=drift_threshold, drift_policy="warn", label_column=label,
    ).set_display_name("Validate and check drift")
    arguments = dict(dataset=data.outputs["dataset"], statistics=checked.outputs["statistics"],
                     label=label, hyperparameters=hyperparameters,
                     model_base_path=model_base_path, thresholds=thresholds,
                     train_gpus=train_gpus, train_accelerator=train_accelerator)
    with dsl.If(retrain_always == True, name="scheduled"):  # noqa: E712
        retrain(**arguments).set_display_name("Retrain (scheduled)")
    with dsl.Elif(checked.outputs["Output"] == False, name="drifted"):  # noqa: E712
        retrain(**arguments).set_display_name("Retrain (drift)")
