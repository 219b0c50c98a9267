"""The embedded default: real BigQuery and GCS emulators on this machine, and their demo data.

    from conveyor.local import LocalStack
    info = LocalStack().up()      # or: conveyor local up
    info.activate()               # conveyor clients (and kfp.local tasks) now use the emulators

    from conveyor import local
    result = local.run("training", table="mydata.shops", label="Price",
                       model_base_path="gs://my-bucket/models/shops")   # or: conveyor run --local
"""

from conveyor.local.run import PipelineFailed, RunResult, TaskResult, run
from conveyor.local.stack import LocalStack, StackInfo, default_root

__all__ = ["LocalStack", "PipelineFailed", "RunResult", "StackInfo", "TaskResult",
           "default_root", "run"]
