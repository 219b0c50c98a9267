"""Evaluate an exported model on a Dataset split, against thresholds and a baseline model.

The SavedModel's `serving_default` signature is called exactly as serving calls it: raw features
in, batch after batch streamed from the split's Parquet shards. Metrics are computed overall and
per slice (each value of each named slice column), for the candidate and, on the same rows, for a
baseline model (given, or the newest version pushed under a model base path).

Thresholds, per metric::

    {"auc": {"min": 0.7},                              # absolute bounds: min / max
     "accuracy": {"min_improvement": -0.01},           # vs the baseline, along the metric's
     "log_loss": {"min_improvement_relative": 0.0}}    # direction (lower is better for losses)

Without thresholds, the task's primary metric (AUC, accuracy or RMSE) must beat the baseline
(`min_improvement` 1e-6), so a rerun on the same data does not push the same model again. Change
thresholds apply only when there is a baseline. The model is blessed when every check passes.

Every output of every call is checked as push's infra check checks it (one row per input row,
finite floats). When the process had not imported TensorFlow before this evaluation (so it cannot
be the process that saved the model), the result carries an infra `verdict` bound to the model's
file hashes, which push accepts instead of loading the model in yet another process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from conveyor.errors import InputError  # noqa: E402
from conveyor.evaluate.metrics import HIGHER_IS_BETTER, PRIMARY, accumulator  # noqa: E402
from conveyor.io.dataset import Dataset  # noqa: E402
from conveyor.push import infra  # noqa: E402
from conveyor.push.base_path import digest  # noqa: E402
from conveyor.transform.fit import Fitted  # noqa: E402

EVALUATION_FILE = "evaluation.json"
MAX_SLICE_VALUES = 100
_THRESHOLD_KEYS = {"min", "max", "min_improvement", "min_improvement_relative"}
DEFAULT_IMPROVEMENT = 1e-6


@dataclasses.dataclass
class Check:
    metric: str
    rule: str
    value: float
    baseline: float | None
    passed: bool

    def line(self) -> str:
        base = f" (baseline {self.baseline:.6g})" if self.baseline is not None else ""
        return f"{'ok  ' if self.passed else 'FAIL'} {self.metric} = {self.value:.6g}{base}: {self.rule}"


@dataclasses.dataclass
class EvaluationResult:
    task: str
    blessed: bool
    checks: list[Check]
    metrics: dict[str, dict[str, float]]  # slice -> metric -> value ("overall" first)
    baseline_metrics: dict[str, dict[str, float]] | None
    baseline_uri: str | None
    roc: dict[str, list[float]] | None
    confusion: list[list[int]] | None
    classes: list[str]
    seconds: float
    infra: dict | None = None  # the infra verdict push may reuse (see the module's docstring)
    infra_note: str = ""  # why there is none

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "checks": [dataclasses.asdict(c) for c in self.checks]}


class _Model:
    """A SavedModel's serving signature, and the features and labels it was trained with."""

    def __init__(self, path: str | Path):
        import tensorflow as tf

        self.path = str(path)
        extra = Path(path) / "assets.extra"
        if not (Path(path) / "saved_model.pb").exists():
            raise InputError(f"model: {path} is not a SavedModel (no saved_model.pb)")
        self.fitted = Fitted.load(extra)
        signatures = tf.saved_model.load(self.path).signatures
        if "serving_default" not in signatures:
            raise InputError(f"model: {path} has no serving_default signature (signatures: "
                             f"{sorted(signatures) or 'none'}); export it with conveyor.train")
        self.serve = signatures["serving_default"]
        self.inputs = self.serve.structured_input_signature[1]
        self.key = {"binary": "probability",
                    "multiclass": "probabilities"}.get(self.fitted.spec.task, "value")

    def answer(self, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
        """Every output of the serving signature for the batch's rows."""
        import tensorflow as tf

        from conveyor.train.data import model_inputs

        features = {n: tf.constant(a, dtype=self.inputs[n].dtype)
                    for n, a in model_inputs(batch, self.fitted).items()}
        return {k: v.numpy() for k, v in self.serve(**features).items()}

    def predict(self, batch: pa.RecordBatch) -> np.ndarray:
        return self.answer(batch)[self.key]


def parse_thresholds(thresholds: Mapping[str, Any] | None, task: str) -> dict[str, dict]:
    if not thresholds:
        return {PRIMARY[task]: {"min_improvement": DEFAULT_IMPROVEMENT}}
    out = {}
    for metric, rule in thresholds.items():
        if metric not in HIGHER_IS_BETTER:
            raise InputError(f"thresholds: unknown metric {metric!r} "
                             f"(known: {', '.join(sorted(HIGHER_IS_BETTER))})")
        if not isinstance(rule, Mapping) or not rule or set(rule) - _THRESHOLD_KEYS:
            raise InputError(f"thresholds: {metric!r} needs some of {sorted(_THRESHOLD_KEYS)}, "
                             f"got {rule!r}")
        out[metric] = {k: float(v) for k, v in rule.items()}
    return out


def _checks(rules: dict[str, dict], metrics: dict[str, float],
            baseline: dict[str, float] | None) -> list[Check]:
    out = []
    for metric, rule in rules.items():
        if metric not in metrics:
            raise InputError(f"thresholds: metric {metric!r} is not computed for this task "
                             f"(computed: {', '.join(sorted(metrics))})")
        value = metrics[metric]
        base = baseline.get(metric) if baseline else None
        if "min" in rule:
            out.append(Check(metric, f">= {rule['min']:g}", value, base, value >= rule["min"]))
        if "max" in rule:
            out.append(Check(metric, f"<= {rule['max']:g}", value, base, value <= rule["max"]))
        if base is None:
            continue
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        better = sign * (value - base)
        if "min_improvement" in rule:
            out.append(Check(metric, f"improves on the baseline by >= {rule['min_improvement']:g}",
                             value, base, better >= rule["min_improvement"]))
        if "min_improvement_relative" in rule:
            rel = better / abs(base) if base else float("inf") * np.sign(better)
            out.append(Check(metric, "improves on the baseline by >= "
                             f"{rule['min_improvement_relative']:.2%}", value, base,
                             rel >= rule["min_improvement_relative"]))
    return out


def _encode(fitted: Fitted, column, split: str) -> np.ndarray:
    from conveyor.train.data import LabelEncoder

    return LabelEncoder(fitted)(column, split)


def evaluate_model(
    model_path: str | Path,
    dataset_path: str | Path,
    *,
    split: str = "eval",
    slices: Sequence[str] = (),
    baseline_path: str | Path | None = None,
    baseline_uri: str | None = None,
    thresholds: Mapping[str, Any] | None = None,
    batch_rows: int = 16384,
) -> EvaluationResult:
    """Evaluate `model_path` (and the baseline) on `split` of the Dataset."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    start = time.monotonic()
    # A process that had no TensorFlow before loading the model cannot be the one that saved it.
    fresh = "tensorflow" not in sys.modules
    files = digest(model_path) if fresh else {}  # the files about to be loaded
    dataset = Dataset(dataset_path)
    dataset.split(split)
    model = _Model(model_path)
    fitted = model.fitted
    task = fitted.spec.task
    rules = parse_thresholds(thresholds, task)
    baseline = _Model(baseline_path) if baseline_path else None
    if baseline is not None and baseline.fitted.spec.task != task:
        raise InputError(f"baseline: the baseline model is {baseline.fitted.spec.task}, "
                         f"the candidate {task}")
    names = set(dataset.schema.names)
    for column in slices:
        if column not in names:
            raise InputError(f"slices: {column!r} is not a column of the dataset "
                             f"(columns: {', '.join(dataset.schema.names)})")
    needed = {fitted.spec.label, *fitted.features, *slices,
              *(baseline.fitted.features if baseline else ())}
    missing = sorted(needed - names)
    if missing:
        raise InputError(f"dataset: columns {missing} that the model needs are missing")
    classes = len(fitted.label_classes or [])
    acc: dict[str, Any] = {"overall": accumulator(task, classes)}
    base_acc: dict[str, Any] = {"overall": accumulator(task, classes)} if baseline else {}
    answered, shapes = 0, {}
    note = "" if fresh else "TensorFlow was imported before this evaluation started"
    for file in dataset.files(split):
        with pq.ParquetFile(file) as pf:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=sorted(needed)):
                labelled = pc.is_valid(batch.column(fitted.spec.label))
                batch = batch.filter(labelled)
                if not batch.num_rows:
                    continue
                y = _encode(fitted, batch.column(fitted.spec.label), split)
                out = model.answer(batch)
                p = out[model.key]
                if not note:
                    try:
                        shapes = infra.check_outputs(out, batch.num_rows)
                        answered += batch.num_rows
                    except ValueError as exc:
                        note = str(exc)
                groups = _groups(batch, slices, acc, task, classes)
                _update(acc, groups, y, p)
                if baseline is not None:
                    yb = _encode(baseline.fitted, batch.column(fitted.spec.label), split)
                    pb = baseline.predict(batch)
                    for key in groups:
                        base_acc.setdefault(key, accumulator(task, classes))
                    _update(base_acc, groups, yb, pb)
    metrics = {k: a.result() for k, a in acc.items()}
    base_metrics = {k: a.result() for k, a in base_acc.items()} if baseline else None
    checks = _checks(rules, metrics["overall"], base_metrics["overall"] if base_metrics else None)
    checks += [Check(name, "is a finite number", value, None, False)  # a NaN never blesses
               for name, value in metrics["overall"].items() if not np.isfinite(value)]
    overall = acc["overall"]
    return EvaluationResult(
        task=task, blessed=all(c.passed for c in checks), checks=checks, metrics=metrics,
        baseline_metrics=base_metrics, baseline_uri=baseline_uri or (str(baseline_path)
                                                                      if baseline_path else None),
        roc=overall.roc() if task == "binary" else None,
        confusion=(overall.confusion() if task == "binary" else
                   overall.matrix.tolist() if task == "multiclass" else None),
        classes=[str(c) for c in fitted.label_classes or []],
        seconds=time.monotonic() - start,
        infra=infra.verdict(files, answered, shapes) if answered and not note else None,
        infra_note=note or ("" if answered else "no labelled rows were evaluated"))


def _groups(batch, slices, acc, task, classes) -> dict[str, np.ndarray]:
    """Row masks per slice key ("overall", "column=value")."""
    out = {"overall": np.ones(batch.num_rows, dtype=bool)}
    for column in slices:
        values = batch.column(column).to_pylist()
        keys = np.array([f"{column}={'NULL' if v is None else v}" for v in values], dtype=object)
        for key in dict.fromkeys(keys.tolist()):
            if key not in acc:
                if sum(k.startswith(f"{column}=") for k in acc) >= MAX_SLICE_VALUES:
                    continue
                acc[key] = accumulator(task, classes)
            out[key] = keys == key
    return out


def _update(acc: dict, groups: dict[str, np.ndarray], y: np.ndarray, p: np.ndarray) -> None:
    for key, mask in groups.items():
        if key in acc and mask.any():
            acc[key].update(y[mask], p[mask])


def write_outputs(result: EvaluationResult, evaluation_dir: str | Path,
                  report_path: str | Path) -> None:
    folder = Path(evaluation_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / EVALUATION_FILE).write_text(json.dumps(result.to_dict(), indent=1, default=float))
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(markdown(result))


def markdown(result: EvaluationResult) -> str:
    lines = [f"# Evaluation: {'BLESSED' if result.blessed else 'NOT BLESSED'}", "",
             f"Task: {result.task}. Baseline: {result.baseline_uri or 'none'}.", "",
             (f"Infra check: {result.infra['rows']} rows answered by a process that loaded "
              "TensorFlow only for this model; push reuses this for the same files."
              if result.infra else f"Infra check: not recorded here ({result.infra_note}); push "
              "runs its own."), "",
             "## Checks", ""]
    lines += [f"- {c.line()}" for c in result.checks] or ["- none"]
    keys = sorted({k for m in result.metrics.values() for k in m} - {"examples"})
    lines += ["", "## Metrics by slice", "",
              "| slice | examples | " + " | ".join(keys) + " |",
              "|---|---:|" + "---:|" * len(keys)]
    for name, m in result.metrics.items():
        lines.append(f"| {name} | {int(m.get('examples', 0))} | "
                     + " | ".join(f"{m[k]:.4f}" if k in m else "" for k in keys) + " |")
    if result.baseline_metrics:
        lines += ["", "## Candidate vs baseline (overall)", "", "| metric | candidate | baseline | "
                  "change |", "|---|---:|---:|---:|"]
        cand, base = result.metrics["overall"], result.baseline_metrics["overall"]
        for k in keys:
            if k in cand and k in base:
                lines.append(f"| {k} | {cand[k]:.4f} | {base[k]:.4f} | {cand[k] - base[k]:+.4f} |")
    return "\n".join(lines) + "\n"
