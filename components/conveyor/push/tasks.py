"""The work behind the push KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

import json


def push(model, evaluation, dataset, pushed_model, summary, *, model_base_path: str,
         split: str = "eval", statistics=None, **targets):
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
    return result
