"""The train KFP components: thin typed shells over `conveyor.train.tasks`.

`train` runs on conveyor's CPU image; `train_gpu` is the same component on the GPU image (give it
an accelerator with `set_accelerator_type` / `set_accelerator_limit`). The training code picks its
distribution strategy from the devices it sees, so the body is the same.
"""

from kfp import dsl

from conveyor import images


@dsl.component(base_image=images.image(), install_kfp_package=False)
def train(
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
    tracking_uri: str = "",
    pipeline_run: str = "",
):
    """Train a Keras model (preprocessing inside) and export a serving-ready SavedModel.

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
        tracking_uri: MLflow tracking server the run's figures and output URIs are logged to; default: MLFLOW_TRACKING_URI of the task's environment, else none.
        pipeline_run: The pipeline run's name: every step of a run logs to the one MLflow run tagged with it.
    """
    from conveyor.train import tasks

    tasks.train(dataset, preprocessing, model, metrics, tensorboard,
                hyperparameters=hyperparameters, module_file=module_file,
                log_dir_uri=log_dir_uri, train_split=train_split, eval_split=eval_split,
                tracking_uri=tracking_uri, pipeline_run=pipeline_run)


#: `train` on the GPU image (`<registry>/conveyor:<version>-gpu`).
train_gpu = dsl.component(train.python_func, base_image=images.image(variant="gpu"),
                          install_kfp_package=False)
