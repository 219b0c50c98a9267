"""Shared on-disk formats and storage. `conveyor.io.dataset` is the Dataset artifact contract
(written by `conveyor.io.dataset_writer`); `conveyor.io.parquet` other Parquet files;
`conveyor.io.split` the hash split rule; `conveyor.io.location` a local-or-gs:// file;
`conveyor.io.digest` file hashes of a folder."""

from conveyor.io.dataset import Column, Dataset, DatasetInfo, SplitInfo
from conveyor.io.dataset_writer import DatasetWriter
from conveyor.io.digest import digest, manifest_hash
from conveyor.io.location import Location, PreconditionError

__all__ = ["Column", "Dataset", "DatasetInfo", "DatasetWriter", "Location", "PreconditionError",
           "SplitInfo", "digest", "manifest_hash"]
