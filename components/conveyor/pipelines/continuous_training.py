"""Continuous training: the spec a recurring run launches.

Ingest the newest data and validate it against the training statistics of the model being
served (pushed with each version). Broken data stops the run. When the data drifted past its
threshold, or when `retrain_always` (a plain schedule), retrain, evaluate against the serving
model and push if better.
"""

from kfp import dsl

from conveyor.params import default, documented
from conveyor.pipelines.steps import preflight_and_ingest, tracked, train_evaluate_push
from conveyor.transform.component import transform
from conveyor.validate.component import validate

NAME = "conveyor-continuous-training"


@dsl.pipeline(name="retrain")
def retrain(dataset: dsl.Input[dsl.Dataset], statistics: dsl.Input[dsl.Artifact], label: str,
            task: str, feature_spec_uri: str, hyperparameters: dict, module_file: str,
            model_base_path: str, slices: list, thresholds: dict, train_gpus: int,
            train_accelerator: str, allow_breaking_signature: bool, tracking_uri: str = ""):
    """Transform (with the served version's feature spec unless one is given), train, evaluate
    against the serving model, push if blessed."""
    fitted = transform(dataset=dataset, statistics=statistics, label=label, task=task,
                       feature_spec_uri=feature_spec_uri,
                       spec_model_base_path=model_base_path).set_display_name("Transform")
    train_evaluate_push(
        dataset=dataset, preprocessing=fitted.outputs["preprocessing"], statistics=statistics,
        hyperparameters=hyperparameters, module_file=module_file,
        model_base_path=model_base_path, slices=slices, thresholds=thresholds, gpus=train_gpus,
        accelerator=train_accelerator, allow_breaking_signature=allow_breaking_signature,
        tracking_uri=tracking_uri,
    )


#: The docs of the parameters that play the same retraining role here and in monitoring (the
#: others: `conveyor.params`).
RETRAINING_DOCS = dict(
    task="binary, multiclass or regression; default: the served version's, else from the label.",
    feature_spec_uri="Feature spec (path or gs://); default: the served version's, else proposed.",
    hyperparameters="Model and training settings for the retraining; default: chosen from the "
                    "data.",
    thresholds="Evaluation thresholds; default: beat the serving model and the naive reference.",
    train_gpus="GPUs to retrain on; 0 trains on CPU with conveyor's CPU image.",
)


@dsl.pipeline(name=NAME, description="Check new data for drift against the serving model's "
                                     "training data; retrain, evaluate and push if better.")
@documented(
    "Validate new data against the served model's training data; retrain on drift.",
    **RETRAINING_DOCS,
    label="Label column.",
    model_base_path="Serving model base path (gs:// or local): baseline statistics and spec, "
                    "model and push target.",
    table="Table with the newest data, as project.dataset.table or dataset.table (or give "
          "query).",
    query="GoogleSQL query for the newest data, instead of table.",
    suite_uri="Suite to validate with (path or gs://); default: inferred from the served "
              "version's statistics.",
    policy="fail (stop on broken data) or warn (report and go on).",
    retrain_always="Retrain on every run, drifted or not (a plain schedule).",
)
def pipeline(
    label: str,
    model_base_path: str,
    table: str = default("table"),
    query: str = default("query"),
    task: str = default("task"),
    split_key: str = default("split_key"),
    split_ratios: dict = default("split_ratios"),
    project: str = default("project"),
    location: str = default("location"),
    read_streams: int = default("read_streams"),
    suite_uri: str = default("suite_uri"),
    policy: str = default("policy"),
    drift_threshold: float = default("drift_threshold"),
    retrain_always: bool = False,
    feature_spec_uri: str = default("feature_spec_uri"),
    hyperparameters: dict = default("hyperparameters"),
    module_file: str = default("module_file"),
    slices: list = default("slices"),
    thresholds: dict = default("thresholds"),
    allow_breaking_signature: bool = default("allow_breaking_signature"),
    train_gpus: int = default("train_gpus"),
    train_accelerator: str = default("train_accelerator"),
    tracking_uri: str = default("tracking_uri"),
):
    data = preflight_and_ingest(
        label=label, model_base_path=model_base_path, table=table, query=query,
        split_key=split_key, split_ratios=split_ratios, slices=slices,
        feature_spec_uri=feature_spec_uri, project=project, location=location,
        read_streams=read_streams)
    checked = validate(
        dataset=data.outputs["dataset"], suite_uri=suite_uri, policy=policy,
        baseline_model_base_path=model_base_path, drift_threshold=drift_threshold,
        drift_policy="warn", label_column=label, **tracked(tracking_uri),
    ).set_display_name("Validate and check drift")
    arguments = dict(dataset=data.outputs["dataset"], statistics=checked.outputs["statistics"],
                     label=label, task=task, feature_spec_uri=feature_spec_uri,
                     hyperparameters=hyperparameters, module_file=module_file,
                     model_base_path=model_base_path, slices=slices, thresholds=thresholds,
                     train_gpus=train_gpus, train_accelerator=train_accelerator,
                     allow_breaking_signature=allow_breaking_signature,
                     tracking_uri=tracking_uri)
    with dsl.If(retrain_always == True, name="scheduled"):  # noqa: E712
        retrain(**arguments).set_display_name("Retrain (scheduled)")
    with dsl.Elif(checked.outputs["Output"] == False, name="drifted"):  # noqa: E712
        retrain(**arguments).set_display_name("Retrain (drift)")
