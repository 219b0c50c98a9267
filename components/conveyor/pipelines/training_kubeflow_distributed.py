"""The training pipeline with training on two pods of Kubeflow on GKE: its train task launches
a Kubeflow Training Operator TFJob of 1 chief + 1 worker running conveyor's train, waits for it
and publishes the chief's outputs (`conveyor.train.tfjob_component`,
docs/distributed-training-pipelines.md). Everything else is `conveyor.pipelines.training`'s;
compiled to pipelines/training_kubeflow_distributed/pipeline.yaml."""

from conveyor.pipelines.training import make_pipeline

#: Pods training runs on (1 chief + 1 worker).
TRAIN_REPLICAS = 2

pipeline = make_pipeline(train_replicas=TRAIN_REPLICAS, cluster="kubeflow")
