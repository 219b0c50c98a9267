"""Shared on-disk formats. `conveyor.io.dataset` is the Dataset artifact contract."""

from conveyor.io.dataset import Column, Dataset, DatasetInfo, DatasetWriter, SplitInfo

__all__ = ["Column", "Dataset", "DatasetInfo", "DatasetWriter", "SplitInfo"]
