"""conveyor: reusable Kubeflow Pipelines v2 components for TensorFlow models on Google Cloud."""

from conveyor.version import __version__

__all__ = ["__version__"]
