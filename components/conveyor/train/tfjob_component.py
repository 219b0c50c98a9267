"""`train_tfjob`: conveyor's train on several machines as a Kubeflow TFJob, from a pipeline task.

A thin typed shell over `conveyor.train.tfjob_launch`: the task builds a TFJob of 1 Chief and
`train_replicas - 1` Workers that run train's own executor with this task's inputs, waits for
it, and publishes the chief's outputs as its own (docs/distributed-training-pipelines.md). The
task itself runs on conveyor's CPU image and needs no GPU; `image` is what the replicas run.
"""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def train_tfjob(
    dataset: dsl.Input[dsl.Dataset],
    preprocessing: dsl.Input[dsl.Artifact],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    tensorboard: dsl.Output[dsl.Artifact],
    hyperparameters: dict = {},
    module_file: str = "",
    log_dir_uri: str = "",
    train_split: str = "train",
    eval_split: str = "eval",
    train_replicas: int = 2,
    namespace: str = "",
    service_account: str = "pipeline-runner",
    image: str = "",
    cpu: str = "2",
    memory: str = "4G",
    gpus: int = 0,
    gpu_resource: str = "nvidia.com/gpu",
    timeout_seconds: int = 604800,
):
    """Train on several machines: a Kubeflow TFJob (1 chief, the rest workers) running train.

    Args:
        dataset: The Dataset to train on.
        preprocessing: The fitted preprocessing from transform.
        model: SavedModel; serving_default takes raw features of shape [None].
        metrics: Training and validation metrics at the best epoch, validation and training rows, examples per second, resumed epoch.
        tensorboard: TensorBoard logs.
        hyperparameters: model (dnn, wide_deep), hidden_units, embedding_dim, embedding_l2 (L2 on embeddings, in the training loss only; default -1: min(0.01, 1 / train rows)), oov_dropout (share of known values fed as out-of-vocabulary while training; default 0.005), learning_rate, batch_size, epochs, steps, early_stopping_patience, dropout, seed, shuffle_buffer, validation_rows (rows held out of train_split validated on after each epoch, a spread sample of a bigger holdout; default 1000000, 0: all).
        module_file: Path or gs:// URI of a module defining build_model(hparams, feature_spec).
        log_dir_uri: Extra TensorBoard log dir, e.g. gs:// for Vertex AI TensorBoard.
        train_split: Split to train on.
        eval_split: The split evaluate scores: never read by train, which validates (early stopping, best epoch, learning rate) on rows held out of train_split.
        train_replicas: Machines (pods) to train on: 1 chief and train_replicas - 1 workers.
        namespace: Namespace of the TFJob; default: this task's own.
        service_account: Kubernetes service account of the replicas' pods.
        image: Image the replicas run; default: conveyor's CPU image, or its GPU image with gpus.
        cpu: CPU request of each replica.
        memory: Memory request and limit of each replica.
        gpus: GPUs per replica (0: CPU only).
        gpu_resource: Kubernetes resource name of the GPUs, e.g. nvidia.com/gpu.
        timeout_seconds: Give up (and delete the job) after this long.
    """
    from conveyor.train import tfjob_launch

    tfjob_launch.task(dataset, preprocessing, model, metrics, tensorboard,
                      hyperparameters=hyperparameters, module_file=module_file,
                      log_dir_uri=log_dir_uri, train_split=train_split, eval_split=eval_split,
                      train_replicas=train_replicas, namespace=namespace,
                      service_account=service_account, image=image, cpu=cpu, memory=memory,
                      gpus=gpus, gpu_resource=gpu_resource, timeout_seconds=timeout_seconds)
