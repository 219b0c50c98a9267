"""The column statistics validate uses; they live in `conveyor.stats` (shared by validate,
transform, monitor and evaluate). This module re-exports them, so `conveyor.validate.stats`
keeps working for the code and tests that import it."""

from conveyor.stats.columns import (  # noqa: F401
    CATEGORICAL,
    FORMAT,
    KIND_OF_TYPE,
    MAX_TRACKED_VALUES,
    NUMERIC,
    QUANTILES,
    SAMPLE_SIZE,
    TEMPORAL,
    TOP_K,
    ColumnStatistics,
    DatasetStatistics,
    Sample,
    SplitStatistics,
    _days,
    compute_statistics,
    split_statistics,
)
