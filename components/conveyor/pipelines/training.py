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

from conveyor.ingest.component import bigquery_ingest
from conveyor.preflight.component import preflight
from conveyor.pipelines import distributed
from conveyor.pipelines.steps import DEFAULT_ACCELERATOR, check_cluster, train_evaluate_push
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
    check_replicas(train_replicas)
    check_cluster(cluster)
    if train_replicas == 1:
        name, description = NAME, DESCRIPTION
    elif cluster == "kubeflow":
        name = f"{NAME}-kubeflow-distributed"
        description = (DESCRIPTION[:-1] + f"; training runs as a Kubeflow TFJob of "
                       f"{train_replicas} pods (1 chief, {train_replicas - 1} worker(s)).")
    else:
        check_text("train_machine_type", train_machine_type)
        name = f"{NAME}-distributed"
        description = (DESCRIPTION[:-1] + f"; training runs as a Vertex AI custom job on "
                       f"{train_replicas} {train_machine_type} machines (1 chief, "
                       f"{train_replicas - 1} worker(s)).")

    @dsl.pipeline(name=name, description=description)
    def pipeline(
        label: str,
        model_base_path: str,
        table: str = "",
        query: str = "",
        task: str = "",
        split_key: str = "",
        split_ratios: dict = {"train": 0.8, "eval": 0.2},
        project: str = "",
        location: str = "",
        read_streams: int = 1,
        suite_uri: str = "",
        policy: str = "fail",
        feature_spec_uri: str = "",
        hyperparameters: dict = {},
        module_file: str = "",
        slices: list = [],
        thresholds: dict = {},
        allow_breaking_signature: bool = False,
        train_gpus: int = 0,
        train_accelerator: str = DEFAULT_ACCELERATOR,
    ):
        """Ingest, validate, transform, train, evaluate against the serving model, push if better.

        Args:
            label: Label column (used to propose a feature spec when none is given).
            model_base_path: Serving model base path (gs:// or local): baseline and push target.
            table: Table to read, as project.dataset.table or dataset.table (or give query).
            query: GoogleSQL query whose result is read, instead of table.
            task: binary, multiclass or regression; default: from the label's values.
            split_key: INT64 or STRING column that decides each row's split (default: the row).
            split_ratios: Split names and their shares of rows, summing to 1.
            project: Project that runs the BigQuery jobs; default from the environment.
            location: BigQuery location, e.g. US or EU.
            read_streams: BigQuery Storage Read streams ingest reads at once (more for big tables; the Dataset is the same whatever the number).
            suite_uri: Suite to validate with (path or gs://); default: inferred from the data.
            policy: fail (stop on any data problem) or warn (report and go on).
            feature_spec_uri: Feature spec (path or gs://); default: proposed from the schema.
            hyperparameters: Model and training settings, e.g. {"model": "wide_deep"}; default: chosen from the data (early stopping).
            module_file: Module defining build_model(hparams, feature_spec), instead of a built-in model.
            slices: Columns whose values slice the evaluation metrics.
            thresholds: Per metric: min, max, min_improvement(_relative); default: beat the baseline and the naive reference.
            allow_breaking_signature: Bless a model whose serving signature breaks the served version's clients (inputs or outputs removed, added or changed).
            train_gpus: GPUs to train on; 0 trains on CPU with conveyor's CPU image.
            train_accelerator: Accelerator type when train_gpus > 0 (Vertex AI: NVIDIA_L4, ...; GKE: nvidia.com/gpu).
        """
        checked_first = preflight(
            label=label, model_base_path=model_base_path, table=table, query=query,
            split_key=split_key, split_ratios=split_ratios, slices=slices,
            feature_spec_uri=feature_spec_uri, project=project, location=location,
        ).set_display_name("Preflight")
        checked_first.set_caching_options(False)  # the bucket and the table may change
        ingest = bigquery_ingest(
            table=table, query=query, split_key=split_key, split_ratios=split_ratios,
            project=project, location=location, read_streams=read_streams,
        ).set_display_name("Ingest from BigQuery").after(checked_first)
        ingest.set_retry(num_retries=2, backoff_duration="2s", backoff_factor=2.0)
        ingest.set_caching_options(False)  # the table changes under the same parameters
        checked = validate(
            dataset=ingest.outputs["dataset"], suite_uri=suite_uri, policy=policy,
            label_column=label,
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
        )

    return pipeline


pipeline = make_pipeline()
