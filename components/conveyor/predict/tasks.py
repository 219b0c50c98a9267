"""The work behind the batch_predict KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

import tempfile


def batch_predict(dataset, metrics, **kwargs):
    """`_batch_predict` under `conveyor.failfast.fail_once`: after an attempt that failed on bad
    input, a retry fails at once with the same error (marker beside the `metrics` output)."""
    from conveyor.failfast import fail_once

    with fail_once(metrics.path, "batch_predict"):
        return _batch_predict(dataset, metrics, **kwargs)


def _batch_predict(dataset, metrics, *, output_table: str, model=None, model_base_path: str = "",
                  split: str = "all", passthrough: list | None = None, project: str = "",
                  location: str = "", write_mode: str = "create"):
    from conveyor.errors import InputError
    from conveyor.predict.batch import predict_to_bigquery
    from conveyor.predict.output import check_write_mode

    problems = check_write_mode(write_mode)
    if problems:  # before the model is fetched
        raise InputError(problems[0])
    with tempfile.TemporaryDirectory(prefix="conveyor-predict-") as scratch:
        if model is not None:
            model_dir, version = model.path, str(model.metadata.get("version", "artifact"))
        elif model_base_path:
            from conveyor.registry import served_version

            served = served_version(model_base_path)  # the champion when versions are labelled
            if served is None:
                raise InputError(f"model_base_path: no pushed version under {model_base_path}")
            model_dir, version = served.folder(scratch), str(served.version)
        else:
            raise InputError("batch_predict: give model or model_base_path")
        result = predict_to_bigquery(model_dir, dataset.path, output_table,
                                     model_version=version, split=split,
                                     passthrough=passthrough or (), project=project or None,
                                     location=location or None, write_mode=write_mode)
    metrics.log_metric("rows", result.rows)
    metrics.log_metric("seconds", round(result.seconds, 3))
    carried = (f" with {', '.join(result.passthrough)} from the input" if result.passthrough
               else " without an input column (no key: give passthrough=[...] to join back)")
    print(f"wrote {result.rows} predictions of model version {version} to {result.table}"
          f"{carried}")
    return result
