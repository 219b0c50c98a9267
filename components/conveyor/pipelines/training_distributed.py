"""The training pipeline with training on two machines: a Vertex AI custom job whose worker
pool 0 is the chief and worker pool 1 one worker, both running conveyor's train
(`conveyor.pipelines.distributed`, docs/distributed-training-pipelines.md). Everything else is
`conveyor.pipelines.training`'s; compiled to pipelines/training_distributed/pipeline.yaml."""

from conveyor.pipelines.training import make_pipeline

#: Machines training runs on (1 chief + 1 worker).
TRAIN_REPLICAS = 2

pipeline = make_pipeline(train_replicas=TRAIN_REPLICAS)
