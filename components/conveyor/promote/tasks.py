"""The work behind the promote KFP components, in terms of their artifacts and parameters."""

from __future__ import annotations


def promote(dataset, promotion, summary, *, model_base_path: str, split: str = "eval",
            significance: float = 0.05, vertex_endpoint: str = "", vertex_model: str = "",
            kserve_service: str = "", tracking_uri: str = "", pipeline_run: str = "") -> str:
    from conveyor.failfast import fail_once
    from conveyor.promote import promote as work

    with fail_once(promotion.path, "promote"):
        result = work.promote(model_base_path, dataset.path, split=split,
                              significance=significance,
                              vertex_endpoint=vertex_endpoint, vertex_model=vertex_model,
                              kserve_service=kserve_service)
    work.write_outputs(result, promotion.path)
    promotion.metadata.update({"action": result.action, "champion": result.served or 0,
                               "challenger": result.challenger or 0, "rows": result.rows})
    with open(summary.path, "w") as f:
        f.write(result.markdown())
    print(result.markdown(), flush=True)
    _track(result, model_base_path, promotion, tracking_uri, pipeline_run)
    return result.action


def _track(result, model_base_path: str, promotion, tracking_uri: str,
           pipeline_run: str) -> None:
    """The decision to the run (tag `conveyor.promotion`), then the labels to MLflow's model
    registry as aliases, when tracking is configured (`conveyor.tracking`)."""
    from conveyor import tracking
    from conveyor.push.tasks import mirror
    from conveyor.tracking.runs import artifact_uri

    run_id = tracking.log_step(tracking.Step(
        "promote", metrics={"rows": result.rows},
        tags={"promotion": result.action, "champion": result.served or "none"},
        artifacts={"promotion": artifact_uri(promotion)}),
        tracking_uri=tracking_uri, pipeline_run=pipeline_run)
    involved = {v for v in (result.champion, result.challenger) if v is not None}
    mirror(model_base_path, result.labels, involved, tracking_uri, run_id)


def start_canary(model_base_path: str, enabled: bool = True) -> str:
    import json

    from conveyor.promote.promote import start_canary as work
    from conveyor.registry import ModelBasePath

    labels = work(model_base_path) if enabled else ModelBasePath(model_base_path).labels()
    print(f"labels of {model_base_path}: {json.dumps(labels)}", flush=True)
    return json.dumps(labels, sort_keys=True)
