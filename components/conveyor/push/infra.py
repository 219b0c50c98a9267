"""The infra check: load a SavedModel in a fresh process and call its serving signature on sample
rows, as a server would. Run as `python -m conveyor.push.infra <model_dir> <rows.json>`; exit 0
and a JSON line on success, else a non-zero exit and the error on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conveyor.errors import InputError

TIMEOUT = 300


class InfraCheckFailed(InputError):
    """The model did not load or answer in a fresh process."""


def sample_rows(dataset_path: str | Path, split: str, features: list[str], rows: int = 8) -> dict:
    """Up to `rows` rows of the named columns, columnar, as JSON-ready lists (NaN for NULL)."""
    from conveyor.io.dataset import Dataset

    batch = next(Dataset(dataset_path).iter_batches(split, columns=features, batch_size=rows))
    out = {}
    for name in features:
        column = batch.column(name)
        values = column.to_pylist()
        if column.type.equals(__import__("pyarrow").string()):
            out[name] = ["" if v is None else v for v in values]
        else:
            out[name] = [float("nan") if v is None else v for v in values]
    return out


def check(model_dir: str | Path, rows: dict) -> dict:
    """Run the check in a fresh interpreter; returns the outputs' shapes."""
    payload = Path(model_dir).with_name(Path(model_dir).name + ".infra-rows.json")
    payload.write_text(json.dumps(rows))
    try:
        run = subprocess.run([sys.executable, "-m", "conveyor.push.infra", str(model_dir),
                              str(payload)], capture_output=True, text=True, timeout=TIMEOUT,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    except subprocess.TimeoutExpired:
        raise InfraCheckFailed(
            f"push: infra check of {model_dir} timed out after {TIMEOUT} s") from None
    finally:
        payload.unlink(missing_ok=True)
    if run.returncode:
        last = [line for line in run.stderr.strip().splitlines() if line.strip()][-1:] or ["?"]
        raise InfraCheckFailed(f"push: infra check failed: the model at {model_dir} does not "
                               f"load and answer in a fresh process: {last[0]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(model_dir: str, rows_file: str) -> None:
    import numpy as np
    import tensorflow as tf

    rows = json.loads(Path(rows_file).read_text())
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    spec = serve.structured_input_signature[1]
    missing = sorted(set(spec) - set(rows))
    if missing:
        raise SystemExit(f"sample rows lack the model's inputs {missing}")
    out = serve(**{k: tf.constant(rows[k], dtype=spec[k].dtype) for k in spec})
    n = len(next(iter(rows.values())))
    shapes = {}
    for key, value in out.items():
        array = value.numpy()
        if array.shape[0] != n:
            raise SystemExit(f"output {key!r} has {array.shape[0]} rows for {n} inputs")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise SystemExit(f"output {key!r} is not finite: {array.tolist()[:4]}")
        shapes[key] = list(array.shape)
    print(json.dumps({"rows": n, "outputs": shapes}))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001  (any failure fails the check, with its reason)
        # One line for the parent to quote; TensorFlow puts the cause after a generic first
        # line ("Graph execution error:"), so keep every line, trimmed.
        detail = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"{type(exc).__name__}: {detail[:600]}", file=sys.stderr)
        sys.exit(1)
