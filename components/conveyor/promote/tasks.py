"""The work behind the promote KFP components, in terms of their artifacts and parameters."""

from __future__ import annotations


def promote(dataset, promotion, summary, *, model_base_path: str, split: str = "eval",
            significance: float = 0.05, vertex_endpoint: str = "", vertex_model: str = "",
            kserve_service: str = "") -> str:
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
    return result.action


def start_canary(model_base_path: str, enabled: bool = True) -> str:
    import json

    from conveyor.promote.promote import start_canary as work
    from conveyor.registry import ModelBasePath

    labels = work(model_base_path) if enabled else ModelBasePath(model_base_path).labels()
    print(f"labels of {model_base_path}: {json.dumps(labels)}", flush=True)
    return json.dumps(labels, sort_keys=True)
