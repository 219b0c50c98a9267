"""The infra check: load a SavedModel in a fresh process and call its serving signature on sample
rows, as a server would. Run as `python -m conveyor.model.infra <model_dir> <rows.json | ->`
(`-`: the rows on stdin); exit 0 and a JSON line on success, else a non-zero exit and the error
on stderr.

A fresh process matters: a model can answer only in the process that saved it (a signature that
calls back into Python, `tf.py_function`). Evaluate usually is such a process: it loads the model
in a process that never had TensorFlow before and calls its signature on the whole eval split.
It then records a `verdict` bound to the model's file hashes, and push accepts that verdict
instead of starting another TensorFlow process (`reusable`). Whatever does not qualify (a process
that had TensorFlow already, other files, an output that failed) gets the check here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TypeGuard

from conveyor.errors import InputError

TIMEOUT = 300


class InfraCheckFailed(InputError):
    """The model did not load or answer in a fresh process."""


def sample_rows(dataset_path: str | Path, split: str, fitted, rows: int = 8) -> dict:
    """Up to `rows` rows of the model's features, columnar and keyed by model input, as
    JSON-ready lists of what the serving signature takes (`conveyor.model.inputs`)."""
    from conveyor.io.dataset import Dataset
    from conveyor.model.inputs import model_inputs

    batch = next(Dataset(dataset_path).iter_batches(split, columns=list(fitted.features),
                                                    batch_size=rows))
    return {name: values.tolist() for name, values in model_inputs(batch, fitted).items()}


def check_outputs(outputs: dict, rows: int) -> dict[str, list[int]]:
    """Each output of a serving call must have `rows` rows and, if floating, finite values;
    returns the outputs' shapes. Raises ValueError naming the output that fails."""
    import numpy as np

    shapes = {}
    for key, value in outputs.items():
        array = np.asarray(value)
        if array.shape[:1] != (rows,):
            raise ValueError(f"output {key!r} has shape {list(array.shape)} for {rows} inputs")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"output {key!r} is not finite: {array.tolist()[:4]}")
        shapes[key] = list(array.shape)
    return shapes


def verdict(files: dict[str, str], rows: int, shapes: dict[str, list[int]]) -> dict:
    """What evaluate records when the model answered `rows` rows in a process that loaded
    TensorFlow only for it: the files it loaded (`base_path.digest`, taken before loading) and
    the outputs' shapes for one row (so the record does not depend on how evaluate batched)."""
    return {"where": "evaluate", "rows": rows, "sha256": files,
            "outputs": {k: [1, *v[1:]] for k, v in shapes.items()}}


def reusable(recorded: dict | None, model_dir: str | Path) -> TypeGuard[dict]:
    """True when `recorded` (a verdict) is about exactly the files in `model_dir`."""
    from conveyor.io.digest import digest

    return bool(recorded and recorded.get("rows") and recorded.get("sha256")
                and recorded["sha256"] == digest(model_dir))


def check(model_dir: str | Path, rows: dict) -> dict:
    """Run the check in a fresh interpreter; returns the outputs' shapes. The rows go through
    the child's stdin: nothing is written beside the model (which may be read-only) or in TMPDIR."""
    try:
        run = subprocess.run([sys.executable, "-m", "conveyor.model.infra", str(model_dir), "-"],
                             input=json.dumps(rows), capture_output=True, text=True,
                             timeout=TIMEOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    except subprocess.TimeoutExpired:
        raise InfraCheckFailed(
            f"push: infra check of {model_dir} timed out after {TIMEOUT} s") from None
    if run.returncode:
        last = [line for line in run.stderr.strip().splitlines() if line.strip()][-1:] or ["?"]
        raise InfraCheckFailed(f"push: infra check failed: the model at {model_dir} does not "
                               f"load and answer in a fresh process: {last[0]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(model_dir: str, rows_file: str) -> None:
    import tensorflow as tf

    rows = json.loads(sys.stdin.read() if rows_file == "-" else Path(rows_file).read_text())
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    spec = serve.structured_input_signature[1]
    missing = sorted(set(spec) - set(rows))
    if missing:
        raise SystemExit(f"sample rows lack the model's inputs {missing}")
    out = serve(**{k: tf.constant(rows[k], dtype=spec[k].dtype) for k in spec})
    n = len(next(iter(rows.values())))
    try:
        shapes = check_outputs({k: v.numpy() for k, v in out.items()}, n)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(json.dumps({"where": "push", "rows": n, "outputs": shapes}))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except SystemExit:
        raise
    except Exception as exc:  # any failure fails the check, with its reason
        # One line for the parent to quote; TensorFlow puts the cause after a generic first
        # line ("Graph execution error:"), so keep every line, trimmed.
        detail = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"{type(exc).__name__}: {detail[:600]}", file=sys.stderr)
        sys.exit(1)
