"""The one version string of conveyor.

It drives the package version (setup.py reads it), the image tags (`conveyor.images`) and,
through them, every compiled component and pipeline spec.
"""

__version__ = "0.1.0"
