"""Column statistics of a Dataset: a room of their own, shared by validate, transform, the
monitor and evaluate.

- `conveyor.stats.columns`: the statistics structure and the reference computation, one
  streaming pass over a Dataset's Parquet rows (`compute_statistics`);
- `conveyor.stats.bigquery`: the same statistics from one aggregate query inside BigQuery, for
  a Dataset that came from BigQuery (`bigquery_statistics`);
- `conveyor.stats.tfdv`: conveyor's statistics as TFDV's `DatasetFeatureStatisticsList`
  (tensorflow-metadata), readable by Facets, TFDV and BigQuery ML's `ML.TFDV_VALIDATE`.
"""

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
    compute_statistics,
    split_statistics,
)
