"""Shared on-disk formats. `conveyor.io.dataset` is the Dataset artifact contract;
`conveyor.io.parquet` other Parquet files; `conveyor.io.split` the hash split rule."""

from conveyor.io.dataset import Column, Dataset, DatasetInfo, DatasetWriter, SplitInfo

__all__ = ["Column", "Dataset", "DatasetInfo", "DatasetWriter", "SplitInfo"]
