"""The work behind the push KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

import json


def push(model, evaluation, dataset, pushed_model, summary, *, model_base_path: str,
         split: str = "eval", statistics=None, tracking_uri: str = "", pipeline_run: str = "",
         **targets):
    from conveyor.failfast import fail_once
    from conveyor.model.infra import sample_rows
    from conveyor.model.layout import ASSETS_EXTRA
    from conveyor.push.push import push as publish
    from conveyor.transform.fit import Fitted

    with fail_once(pushed_model.path, "push"):
        fitted = Fitted.load(f"{model.path}/{ASSETS_EXTRA}")
        sample = sample_rows(dataset.path, split, fitted)
        result = publish(model.path, evaluation.path, model_base_path, sample=sample,
                         statistics_dir=statistics.path if statistics is not None else None,
                         **targets)
    pushed_model.metadata.update({"version": result.version, "uri": result.uri,
                                  "target": result.target, "new": result.new,
                                  "skipped": ",".join(map(str, result.skipped)),
                                  "mode": result.mode, "labels": json.dumps(result.labels), **{
                                      k: str(v) for k, v in result.deployments.items()}})
    with open(summary.path, "w") as f:
        f.write(result.markdown())
    print(result.markdown(), flush=True)
    track(result, model_base_path, {"pushed_model": pushed_model, "summary": summary},
          tracking_uri, pipeline_run)
    return result


def track(result, model_base_path: str, outputs: dict, tracking_uri: str,
          pipeline_run: str) -> None:
    """The pushed version to the run (tag `conveyor.pushed_version`, its URI), then the base
    path's versions and labels to MLflow's model registry, when tracking is configured."""
    from conveyor import tracking
    from conveyor.tracking.runs import artifact_uri

    run_id = tracking.log_step(tracking.Step(
        "push", params={"mode": result.mode, "target": result.target},
        metrics={"version": result.version, "new": float(result.new)},
        tags={"pushed_version": result.version},
        artifacts={"version": result.uri,
                   **{name: artifact_uri(a) for name, a in outputs.items()}}),
        tracking_uri=tracking_uri, pipeline_run=pipeline_run)
    mirror(model_base_path, result.labels, {result.version}, tracking_uri, run_id)


def mirror(model_base_path: str, labels: dict, versions: set, tracking_uri: str,
           run_id: str | None = None) -> None:
    """`versions` and the labelled ones as MLflow model versions, the labels as aliases; without
    a `champion` label, the alias `champion` names the version served (the newest)."""
    from conveyor import tracking

    if not tracking.configured_uri(tracking_uri):
        return
    from conveyor.registry import ModelBasePath

    base = ModelBasePath(model_base_path)
    labels = dict(labels)
    if "champion" not in labels and (served := base.served()) is not None:
        labels["champion"] = served
    wanted = set(versions) | set(labels.values())
    tracking.mirror_versions(model_base_path, {v: base.version_uri(v) for v in wanted}, labels,
                             tracking_uri=tracking_uri, run_id=run_id)
