"""The work behind the ingest KFP components, in terms of their artifacts and parameters.

The KFP wrappers (`conveyor.ingest.component`) only import this module and call it. Here KFP's
conventions become plain arguments ("" means not set) and the results become outputs: the
Dataset artifact's metadata (shown in the Kubeflow UI) and the Metrics artifact.
"""

from __future__ import annotations

from typing import Any, Protocol

from conveyor.ingest.core import IngestResult


class _Artifact(Protocol):  # what KFP hands a component: dsl.Dataset, dsl.Metrics, ...
    path: str
    metadata: dict


def publish(result: IngestResult, dataset: _Artifact, metrics: Any) -> None:
    """Record an ingest's summary on its Dataset artifact and its figures as KFP metrics."""
    info = result.info
    dataset.metadata.update({
        "format": info.format,
        "rows": info.rows,
        "splits": {name: s.rows for name, s in info.splits.items()},
        "columns": [f"{c.name}:{c.type}" for c in info.columns],
        "fingerprint": info.fingerprint,
    })
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    print(info.summary(), flush=True)


def bigquery_ingest(dataset: _Artifact, metrics: Any, **params: Any) -> IngestResult:
    from conveyor.failfast import fail_once

    with fail_once(dataset.path, "bigquery_ingest"):
        from conveyor.ingest.bigquery import ingest_bigquery

        result = ingest_bigquery(dataset.path, **_unset_empty(params))
    publish(result, dataset, metrics)
    return result


def gcs_ingest(dataset: _Artifact, metrics: Any, **params: Any) -> IngestResult:
    from conveyor.failfast import fail_once

    with fail_once(dataset.path, "gcs_ingest"):
        from conveyor.ingest.gcs import ingest_gcs

        result = ingest_gcs(dataset.path, **_unset_empty(params))
    publish(result, dataset, metrics)
    return result


def _unset_empty(params: dict[str, Any]) -> dict[str, Any]:
    """Drop parameters left at "" (KFP's "not set"), so the logic's own defaults apply."""
    return {k: v for k, v in params.items() if v != ""}
