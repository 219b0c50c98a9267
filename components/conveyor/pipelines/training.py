"""The training pipeline: ingest -> validate -> transform -> train -> evaluate -> push.

The push runs only when evaluate blessed the model (`dsl.If`), and push itself refuses an
unblessed model too. The baseline is the newest version under `model_base_path`, so a rerun
pushes a new version only when the new model is better. Training runs on GPUs when
`train_gpus` > 0 (see `conveyor.pipelines.steps`).

`make_pipeline(train_replicas=N)` builds the same pipeline with training on N machines (a
Vertex AI custom job with worker pools, `conveyor.pipelines.distributed`; with
`cluster="kubeflow"`, a TFJob on Kubeflow on GKE); `pipeline` is `make_pipeline()`, one
machine, `conveyor.pipelines.training_distributed` is N = 2 on Vertex AI and
`conveyor.pipelines.training_kubeflow_distributed` N = 2 on Kubeflow.
"""

from kfp import dsl

from conveyor.params import default, documented
from conveyor.pipelines import distributed
from conveyor.pipelines.steps import (
    check_cluster,
    preflight_and_ingest,
    tracked,
    train_evaluate_push,
)
from conveyor.train.tfjob import check_replicas, check_text
from conveyor.transform.component import transform
from conveyor.validate.component import validate

NAME = "conveyor-training"
DESCRIPTION = ("Ingest from BigQuery, validate, transform, train, evaluate against the serving "
               "model, push if better.")


def make_pipeline(train_replicas: int = 1,
                  train_machine_type: str = distributed.DEFAULT_MACHINE_TYPE,
                  cluster: str = "vertex"):
    """The training pipeline, training on `train_replicas` machines of `train_machine_type`
    (Vertex AI machine type, used only above 1) on `cluster` ("vertex": a Vertex AI custom job;
    "kubeflow": a TFJob of that many pods). All are compile-time choices: 1 gives exactly the
    `pipeline` spec on either cluster; InputError for anything but an int >= 1 or a known
    cluster."""
    name, description = _name_and_description(train_replicas, train_machine_type, cluster)

    @dsl.pipeline(name=name, description=description)
    @documented("Ingest, validate, transform, train, evaluate against the serving model, "
                "push if better.")
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
        ingest = preflight_and_ingest(
            label=label, model_base_path=model_base_path, table=table, query=query,
            split_key=split_key, split_ratios=split_ratios, slices=slices,
            feature_spec_uri=feature_spec_uri, project=project, location=location,
            read_streams=read_streams)
        checked = validate(
            dataset=ingest.outputs["dataset"], suite_uri=suite_uri, policy=policy,
            label_column=label, **tracked(tracking_uri),
        ).set_display_name("Validate")
        fitted = transform(  # fits on validate's statistics: no second pass over the rows
            dataset=ingest.outputs["dataset"], statistics=checked.outputs["statistics"],
            label=label, task=task, feature_spec_uri=feature_spec_uri,
        ).set_display_name("Transform")
        train_evaluate_push(
            dataset=ingest.outputs["dataset"], preprocessing=fitted.outputs["preprocessing"],
            statistics=checked.outputs["statistics"], hyperparameters=hyperparameters,
            module_file=module_file, model_base_path=model_base_path, slices=slices,
            thresholds=thresholds, gpus=train_gpus, accelerator=train_accelerator,
            allow_breaking_signature=allow_breaking_signature,
            train_replicas=train_replicas, machine_type=train_machine_type, cluster=cluster,
            tracking_uri=tracking_uri,
        )

    return pipeline


def _name_and_description(train_replicas: int, train_machine_type: str,
                          cluster: str) -> tuple[str, str]:
    """The pipeline's name and description for its training setup (checked: InputError)."""
    check_replicas(train_replicas)
    check_cluster(cluster)
    if train_replicas == 1:
        return NAME, DESCRIPTION
    if cluster == "kubeflow":
        return (f"{NAME}-kubeflow-distributed",
                DESCRIPTION[:-1] + f"; training runs as a Kubeflow TFJob of "
                f"{train_replicas} pods (1 chief, {train_replicas - 1} worker(s)).")
    check_text("train_machine_type", train_machine_type)
    return (f"{NAME}-distributed",
            DESCRIPTION[:-1] + f"; training runs as a Vertex AI custom job on "
            f"{train_replicas} {train_machine_type} machines (1 chief, "
            f"{train_replicas - 1} worker(s)).")


pipeline = make_pipeline()
