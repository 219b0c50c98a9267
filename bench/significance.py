#!/usr/bin/env python
"""The paired candidate-vs-baseline test of evaluate (`conveyor.evaluate.significance`): seconds
and peak memory it adds per metric at 1 M evaluation rows, fed in evaluate's 16,384-row batches.

Scores are synthetic (two logistic models of one signal with their own noise; regression: the
label plus noise), since only the arithmetic is measured here; the models' own answering time
is evaluate's and is measured by bench/serve.py.

    python bench/significance.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from conveyor.evaluate.significance import PairedComparison, metrics_for

BATCH = 16_384


def data(task: str, rows: int, rng: np.random.Generator):
    if task == "regression":
        y = rng.normal(size=rows)
        return y, y + rng.normal(0, 0.9, rows), y + rng.normal(0, 1.0, rows)
    y = rng.random(rows) < 0.4
    signal = np.where(y, 1.0, -1.0)
    a = 1 / (1 + np.exp(-(signal + rng.normal(0, 1.0, rows))))
    b = 1 / (1 + np.exp(-(signal + rng.normal(0, 1.1, rows))))
    if task == "binary":
        return y, a, b
    three = lambda p: np.column_stack([1 - p, p * 0.6, p * 0.4])  # noqa: E731
    return y.astype(np.int64), three(a), three(b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'task':<11} {'metric':<9} {'rows':>9} {'seconds':>8} {'peak MB':>8} "
          f"{'improvement':>12} {'p':>9}")
    for task in ("binary", "multiclass", "regression"):
        y, a, b = data(task, args.rows, rng)
        for metric in metrics_for(task):
            comparison = PairedComparison(task, metric)
            tracemalloc.start()
            started = time.perf_counter()
            for start in range(0, args.rows, BATCH):
                end = start + BATCH
                comparison.update(y[start:end], a[start:end], b[start:end])
            result = comparison.result()
            seconds = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
            print(f"{task:<11} {metric:<9} {args.rows:>9} {seconds:>8.2f} {peak:>8.1f} "
                  f"{result['improvement']:>+12.4g} {result['p_value']:>9.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
