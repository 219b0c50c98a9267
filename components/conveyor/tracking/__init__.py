"""Run tracking: each step of a conveyor run logs what it computed to an MLflow tracking server,
and pushes and promotions are mirrored to MLflow's model registry (versions and aliases).

Configured by the `tracking_uri` pipeline parameter, else the environment variable
MLFLOW_TRACKING_URI (MLflow's own); with neither, nothing is logged and mlflow is not imported.
Tracking never fails a run: any error is one warning line on stderr and the step goes on.
Plain functions, called by the steps' tasks at the end with what they already computed.
"""

from conveyor.tracking.models import mirror_versions
from conveyor.tracking.runs import Step, configured_uri, log_step

__all__ = ["Step", "configured_uri", "log_step", "mirror_versions"]
