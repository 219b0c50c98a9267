#!/usr/bin/env python
"""Transform and train on the reference workload: fit time, training examples/s, peak memory.

The reference workload (../shared/bench/tfx-baseline/README.md: seed 0, 2:1 split, z-score for
f0..f7, vocabulary + 1 OOV bucket for c0/c1) as a conveyor Dataset, and the baseline's model:
Embedding(vocab+1, 4) per categorical, Dense(16, relu), Dense(1, sigmoid), Adam(1e-2), 200 steps
x batch 256. Each measurement runs in a fresh process:

- `transform`: fitting the preprocessing (one streaming pass, no TensorFlow);
- `parquet`: conveyor's training of the reference job (200 steps), batches streamed from the
  Parquet shards, then export; `seconds` is train() after imports;
- `parquet-2000`, `memory-2000`: the same model for 2000 steps, fed from the Parquet shards
  (conveyor's input pipeline) or from the train split loaded into in-memory tensors
  (shuffled once, `from_tensor_slices().batch()`), the yardstick for the input pipeline.

examples/s is steady training throughput: the steps after the first (which traces the model),
validation excluded.

    python bench/train.py                          # 200k and 1M rows, 3 repeats
    python bench/train.py --rows 200000 --repeat 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import child_figures, machine, median_table, reference_dataset, run_child

HERE = Path(__file__).resolve().parent
HPARAMS = {"hidden_units": [16], "embedding_dim": 4, "learning_rate": 0.01, "batch_size": 256,
           "steps": 200, "epochs": 1, "shuffle_buffer": 65536}
#: The same model and batches for longer, to measure steady training throughput.
LONG = {**HPARAMS, "steps": 2000}
SPEC = {"label": "label", "task": "binary",
        "features": {**{f"f{i}": {"kind": "numeric", "transform": "zscore"} for i in range(8)},
                     "c0": {"kind": "categorical", "oov_buckets": 1},
                     "c1": {"kind": "categorical", "oov_buckets": 1}}}


def one(rows: int, mode: str, folder: str) -> None:
    base = Path(folder)
    start = time.monotonic()
    if mode == "transform":
        from conveyor.io import Dataset
        from conveyor.transform.fit import fit
        from conveyor.transform.spec import FeatureSpec

        fit(Dataset(base / "ds"), FeatureSpec.from_dict(SPEC)).write(base / f"transform-{rows}")
        return child_figures(rows=rows, mode=mode, seconds=round(time.monotonic() - start, 2),
                             examples_per_s=0)
    import tensorflow as tf  # noqa: F401

    from conveyor.train import train as training

    imported = time.monotonic()
    if mode.startswith("parquet"):
        result = training.train(base / "ds", base / f"transform-{rows}", base / "model",
                                hparams=LONG if mode.endswith("2000") else HPARAMS)
        eps, auc = result.steady_examples_per_second, result.metrics.get("val_auc", 0.0)
    else:
        eps, auc = _in_memory(base, rows)
    child_figures(rows=rows, mode=mode, seconds=round(time.monotonic() - imported, 2),
                  import_s=round(imported - start, 2), examples_per_s=round(eps), val_auc=auc)


def _in_memory(base: Path, rows: int) -> tuple[float, float]:
    """The same model and steps, from tensors already in memory (the fastest feed we know)."""
    import numpy as np
    import tensorflow as tf

    from conveyor.io import Dataset
    from conveyor.train.hyperparameters import Hyperparameters
    from conveyor.train.model import build_model
    from conveyor.train.train import _compile, _Progress
    from conveyor.transform.fit import Fitted

    hp = Hyperparameters.from_dict(LONG)
    fitted = Fitted.load(base / f"transform-{rows}")
    table = Dataset(base / "ds").read_table("train")
    x = {n: (table.column(n).to_numpy().astype("float32") if f["kind"] == "numeric"
             else table.column(n).to_numpy(zero_copy_only=False).astype(object))
         for n, f in fitted.features.items()}
    y = table.column("label").to_numpy().astype("float32")
    order = np.random.default_rng(0).permutation(len(y))  # shuffled once, up front
    x, y = {n: a[order] for n, a in x.items()}, y[order]
    data = (tf.data.Dataset.from_tensor_slices((x, y)).batch(hp.batch_size).repeat()
            .prefetch(tf.data.AUTOTUNE))
    model = build_model(fitted, hp)
    _compile(model, fitted, hp)
    progress = _Progress()
    model.fit(data, epochs=hp.epochs, steps_per_epoch=hp.steps // hp.epochs,
              callbacks=[progress], verbose=0)
    return progress.steady_steps_per_second() * hp.batch_size, 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="default: 200000 and 1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "out" / "train"))
    parser.add_argument("--one", nargs=3, metavar=("ROWS", "MODE", "FOLDER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(int(args.one[0]), args.one[1], args.one[2])
    row_counts = args.rows or [200_000, 1_000_000]
    results = []
    for rows in row_counts:
        folder = Path(args.out) / str(rows)
        reference_dataset(rows, folder / "ds")
    for _ in range(args.repeat):
        for rows in row_counts:
            folder = str(Path(args.out) / str(rows))
            for mode in ("transform", "parquet", "parquet-2000", "memory-2000"):
                results.append(run_child(__file__, str(rows), mode, folder))
    print("\n" + machine(args.repeat) + "\n")
    print(median_table(results, ["rows", "mode"], [
        ("seconds (after imports)", "seconds"), ("examples/s", "examples_per_s"),
        ("peak RSS MB", "peak_rss_mb"), ("CPU s", "cpu_s")]))


if __name__ == "__main__":
    main()
