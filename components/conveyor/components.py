"""Every conveyor KFP component, in one place: `from conveyor.components import validate`.

Importing this module imports kfp (and nothing heavier): each component's body imports the rest
of conveyor when it runs. Each is also compiled to `<step>/<name>.yaml` beside its definition.
"""

from conveyor.evaluate.component import evaluate
from conveyor.ingest.component import bigquery_ingest, gcs_ingest
from conveyor.monitor.component import monitor
from conveyor.predict.component import batch_predict
from conveyor.preflight.component import preflight
from conveyor.promote.component import promote, start_canary
from conveyor.push.component import push
from conveyor.train.component import train
from conveyor.transform.component import transform
from conveyor.validate.component import validate

__all__ = ["preflight", "bigquery_ingest", "gcs_ingest", "validate", "transform", "train",
           "evaluate", "push", "batch_predict", "monitor", "promote", "start_canary"]
