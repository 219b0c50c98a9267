"""Reference pipelines built from conveyor's components.

Each is compiled to `pipelines/<name>/pipeline.yaml` at the top of the repository
(`conveyor compile`). `PIPELINES` maps each name to the module defining its `pipeline`.
"""

PIPELINES: dict[str, str] = {
    "training": "conveyor.pipelines.training",
    "continuous_training": "conveyor.pipelines.continuous_training",
    "batch_prediction": "conveyor.pipelines.batch_prediction",
    "monitoring": "conveyor.pipelines.monitoring",
    "training_distributed": "conveyor.pipelines.training_distributed",
    "training_kubeflow_distributed": "conveyor.pipelines.training_kubeflow_distributed",
}
