"""conveyor: reusable Kubeflow Pipelines v2 components for TensorFlow models on Google Cloud.

The KFP components are in `conveyor.components` (`from conveyor.components import
bigquery_ingest, validate`); the logic behind each is in its step's package (`conveyor.ingest`,
`conveyor.validate`, ...), plain Python usable without KFP.
"""

from conveyor.version import __version__

__all__ = ["__version__"]
