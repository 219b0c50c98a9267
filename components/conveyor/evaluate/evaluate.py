"""Evaluate an exported model on a Dataset split: against a naive floor, a baseline model that
can be evaluated on this data, thresholds, and the served version's serving contract.

The SavedModel's `serving_default` signature is called exactly as serving calls it: raw features
in, batch after batch streamed from the split's Parquet shards. Metrics are computed overall and
per slice (each value of each named slice column), for the candidate, for the naive reference,
and, on the same rows, for a baseline model.

Naive floor (`conveyor.evaluate.floor`): the train class prior (classification) or train mean
(regression) predicted for every row. By default a model that does not beat it by a clear margin
is not blessed, with or without a baseline: binary AUC >= 0.55 and 2 standard errors above 0.5,
and log loss below the prior's; multiclass accuracy 10% of the way from the majority share to 1
and 2 standard errors above it, and log loss below the prior's; regression RMSE 5% and 2 paired
standard errors below the naive RMSE. Reported as `naive_metrics` (evaluation.json), beside the
candidate and baseline in the report, and as `naive_<metric>` in the metrics artifact.

Baseline (`conveyor.evaluate.baselines`): the one given, else the newest of the 5 newest versions
under the model base path that can be evaluated on this data; each version that cannot (a
corrupt or hand-written folder, an old format, a dropped column, a label class it never saw...)
is skipped and listed in `skipped_baselines` as {uri, reason}, never failing the run. With no
baseline left, the naive floor alone judges. A multiclass baseline that never saw some eval
class is scored on the rows it knows, and compared with the candidate on exactly those rows.

Thresholds, per metric::

    {"auc": {"min": 0.7},                              # absolute bounds: min / max
     "accuracy": {"min_improvement": -0.01},           # vs the baseline, along the metric's
     "log_loss": {"min_improvement_relative": 0.0},    # direction (lower is better for losses)
     "rmse": {"min_improvement_over_naive": 0.5},      # vs the naive reference (replaces the
     "naive_floor": False}                             # default floor); False: no floor

Without min/max/min_improvement rules, the task's primary metric (AUC, accuracy or RMSE) must
beat the baseline (`min_improvement` 1e-6), so a rerun on the same data does not push the same
model again. Change thresholds apply only when there is a baseline. A metric that is not finite
never blesses, and no metric is written to KFP as NaN (non-finite ones are left out).

Serving contract: the candidate's signature is diffed against the served version's (the newest
whose signature loads) as `signature_diff` {added, removed, changed inputs and outputs,
breaking, reasons}. A breaking change (an input added, removed or changed; an output removed or
changed) is not blessed unless `allow_breaking_signature` (see `baselines` for why an added
input breaks clients of TF Serving's row format).

The model is blessed when every check passes. `newest_version_uri` is the newest published
version when evaluate looked (compared or skipped): a push must find it still the newest.

Every output of every call is checked as push's infra check checks it (one row per input row,
finite floats). When the process had not imported TensorFlow before this evaluation (so it cannot
be the process that saved the model), the result carries an infra `verdict` bound to the model's
file hashes, which push accepts instead of loading the model in yet another process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from conveyor.errors import InputError  # noqa: E402
from conveyor.evaluate import baselines as bl  # noqa: E402
from conveyor.evaluate import floor as fl  # noqa: E402
from conveyor.evaluate import significance as sg  # noqa: E402
from conveyor.evaluate import thresholds as th  # noqa: E402
from conveyor.evaluate.metrics import (HIGHER_IS_BETTER, MAX_CURVE_CLASSES, PRIMARY,  # noqa: E402
                                       accumulator)
from conveyor.io.dataset import Dataset  # noqa: E402
from conveyor.io.digest import digest  # noqa: E402
from conveyor.model import infra  # noqa: E402
from conveyor.model.inputs import LabelEncoder, model_inputs  # noqa: E402
from conveyor.model.layout import (ASSETS_EXTRA, EVALUATION_FILE, PREDICTIONS_FILE,  # noqa: E402
                                   TRANSFORM_FILE)
from conveyor.model.predictions import PredictionStatistics  # noqa: E402
from conveyor.reports.html import spec_text  # noqa: E402
from conveyor.transform.fit import Fitted  # noqa: E402

MAX_SLICE_VALUES = 100
_BASELINE_KEYS = th.BASELINE_KEYS
_THRESHOLD_KEYS = th.RULE_KEYS
DEFAULT_IMPROVEMENT = 1e-6
# Without thresholds, a candidate must beat the baseline on the task's primary metric by more
# than the eval rows' noise: a one-sided paired test at this level (`significance`). A push is a
# deploy; on a 60-row eval split a "better" AUC by 1e-6 is a coin toss.
DEFAULT_SIGNIFICANCE = 0.05
TRAIN_SPLIT = "train"  # where an old transform's missing prior is counted


@dataclasses.dataclass
class Check:
    metric: str
    rule: str
    value: float
    baseline: float | None
    passed: bool
    reference: str = "baseline"  # what `baseline` holds: the baseline's value, or the naive one

    def line(self) -> str:
        base = (f" ({self.reference} {self.baseline:.6g})" if self.baseline is not None else "")
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
    naive_metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    naive: str = ""  # what the naive reference predicts, and from what
    skipped_baselines: list[dict[str, str]] = dataclasses.field(default_factory=list)
    baseline_version: int | None = None
    newest_version_uri: str | None = None  # newest published version when evaluate looked
    baseline_note: str = ""  # e.g. the rows a baseline could not score, and why
    candidate_on_baseline_rows: dict[str, float] | None = None  # when they are not all rows
    signature_diff: dict | None = None
    signature: dict | None = None  # the candidate's serving signature
    # Candidate vs baseline on the same rows, per metric with a paired test
    # (`conveyor.evaluate.significance`): improvement, interval, one-sided p-value, method.
    comparison: dict[str, dict] | None = None
    # For the report's charts, bounded whatever the rows (`conveyor.evaluate.metrics`): binary
    # ROC/PR/calibration of the candidate (and "baseline"); multiclass one-vs-rest curves of up to
    # 10 classes (the most frequent in train) and top-label calibration; regression a uniform
    # sample of (actual, predicted) pairs.
    curves: dict | None = None
    # Statistics of the candidate's predictions (class_label or value) over the evaluated rows,
    # as `conveyor.monitor` reads them: written as predictions.json, copied by push into the
    # version's assets.extra, so the monitor compares serving predictions with eval-time ones.
    predictions: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "checks": [dataclasses.asdict(c) for c in self.checks]}


class _Model:
    """A SavedModel's serving signature, and the features and labels it was trained with."""

    def __init__(self, path: str | Path):
        import tensorflow as tf

        self.path = str(path)
        extra = Path(path) / ASSETS_EXTRA
        if not (Path(path) / "saved_model.pb").exists():
            raise InputError(f"model: {path} is not a SavedModel (no saved_model.pb)")
        self.fitted = Fitted.load(extra)
        signatures = tf.saved_model.load(self.path).signatures
        if "serving_default" not in signatures:
            raise InputError(f"model: {path} has no serving_default signature (signatures: "
                             f"{sorted(signatures) or 'none'}); export it with conveyor.train")
        self.serve = signatures["serving_default"]
        self.inputs = self.serve.structured_input_signature[1]
        self.outputs = self.serve.structured_outputs
        self.key = {"binary": "probability",
                    "multiclass": "probabilities"}.get(self.fitted.spec.task, "value")

    def answer(self, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
        """Every output of the serving signature for the batch's rows."""
        import tensorflow as tf

        features = {n: tf.constant(a, dtype=self.inputs[n].dtype)
                    for n, a in model_inputs(batch, self.fitted).items()}
        return {k: v.numpy() for k, v in self.serve(**features).items()}

    def predict(self, batch: pa.RecordBatch) -> np.ndarray:
        return self.answer(batch)[self.key]

    def signature(self) -> dict:
        return bl.signature_of(self.serve)


def parse_thresholds(thresholds: Mapping[str, Any] | None, task: str) -> dict[str, dict]:
    """Metric rules vs bounds and the baseline (the naive floor's keys: `floor.parse_floor`)."""
    out = {}
    for metric, rule in (thresholds or {}).items():
        if metric == fl.NAIVE_FLOOR:
            continue
        if metric not in HIGHER_IS_BETTER:
            raise InputError(th.unknown_metric(metric))
        if not isinstance(rule, Mapping) or not rule or set(rule) - _THRESHOLD_KEYS:
            raise InputError(f"thresholds: {metric!r} needs some of {sorted(_THRESHOLD_KEYS)}, "
                             f"got {rule!r}")
        for key, value in rule.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise InputError(f"thresholds: {metric!r} {key} must be a finite number, "
                                 f"got {value!r}")
        if "significance" in rule:
            if not 0 < rule["significance"] < 0.5:
                raise InputError(f"thresholds: {metric!r} significance is the level of a "
                                 "one-sided test of 'no better than the baseline', between 0 "
                                 f"and 0.5 (e.g. 0.05), got {rule['significance']!r}")
            if not sg.supported(task, metric):
                raise InputError(f"thresholds: {metric!r} significance: no paired test of "
                                 f"{metric} for a {task} model (tests: "
                                 f"{', '.join(sg.metrics_for(task))})")
        kept = {k: float(v) for k, v in rule.items() if k in _BASELINE_KEYS}
        if kept:
            out[metric] = kept
    if not out:
        return {PRIMARY[task]: {"min_improvement": DEFAULT_IMPROVEMENT,
                                "significance": DEFAULT_SIGNIFICANCE}}
    return out


def _significance_checks(rules: dict[str, dict], comparisons: dict[str, dict],
                         metrics: dict[str, float], baseline: dict[str, float]) -> list[Check]:
    out = []
    for metric, rule in rules.items():
        if "significance" not in rule:
            continue
        found = comparisons[metric]
        level, p = rule["significance"], found["p_value"]
        low, high = found["interval"]
        out.append(Check(
            metric, f"improves on the baseline significantly: one-sided p {p:.3g} < {level:g} "
                    f"({found['method']}, {found['rows']} paired rows; {found['level']:.0%} "
                    f"interval of the improvement [{low:.4g}, {high:.4g}])",
            metrics[metric], baseline.get(metric), bool(math.isfinite(p) and p < level)))
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
                             value, base, bool(better >= rule["min_improvement"])))
        if "min_improvement_relative" in rule:
            rel = better / abs(base) if base else float("inf") * np.sign(better)
            out.append(Check(metric, "improves on the baseline by >= "
                             f"{rule['min_improvement_relative']:.2%}", value, base,
                             bool(rel >= rule["min_improvement_relative"])))
    return out


def _encode(fitted: Fitted, column, split: str) -> np.ndarray:
    return LabelEncoder(fitted)(column, split)


class _Baseline:
    """A baseline being scored on the candidate's rows: its accumulators per slice, and the
    candidate's on the same rows (overall), in a shared class space."""

    def __init__(self, source: bl.Source, model: _Model, fitted: Fitted, task: str):
        self.source, self.model, self.task = source, model, task
        self.label = fitted.spec.label
        self.map = (bl.ClassMap(fitted.label_classes, model.fitted.label_classes)
                    if task == "multiclass" else None)
        width = self.map.width if self.map else 0
        self.width = width
        self.acc: dict[str, Any] = {"overall": accumulator(task, width)}
        self.candidate = accumulator(task, width)  # the candidate on the rows scored here
        # Candidate vs baseline row by row, for every metric a paired test exists for.
        self.paired = {m: sg.PairedComparison(task, m) for m in sg.metrics_for(task)}
        self.rows = 0
        self.unknown = np.zeros(len(fitted.label_classes or []), dtype=np.int64)

    def update(self, batch, y: np.ndarray, p: np.ndarray, groups: dict[str, np.ndarray]) -> None:
        out = self.model.answer(batch)
        try:
            infra.check_outputs(out, batch.num_rows)
        except ValueError as exc:
            raise bl.Unusable(f"it answers badly on these rows: {exc}") from None
        pb = out[self.model.key]
        if self.map is not None:
            known = self.map.known[y]
            self.unknown += np.bincount(y[~known], minlength=len(self.unknown))
            pb, p = self.map.baseline_probabilities(pb), self.map.candidate_probabilities(p)
        else:
            known = np.ones(len(y), dtype=bool)
        if not known.any():
            return
        self.rows += int(known.sum())
        self.candidate.update(y[known], p[known])
        for paired in self.paired.values():
            paired.update(y[known], p[known], pb[known])
        for key, mask in groups.items():
            mask = mask & known
            if mask.any():
                self.acc.setdefault(key, accumulator(self.task, self.width))
                self.acc[key].update(y[mask], pb[mask])

    def note(self, classes: list, total: int) -> str:
        if self.rows == total:
            return ""
        missing = [f"{classes[i]!r} ({int(n)} rows)" for i, n in enumerate(self.unknown) if n]
        return (f"{self.source.uri} was scored on {self.rows} of {total} rows: it never saw "
                f"label class(es) {', '.join(missing[:10])} of {self.label!r}")


def _sources(baseline_path, baseline_uri, model_base_path, scratch: str,
             max_baselines: int) -> tuple[list[bl.Source], Any, list[int]]:
    """Baselines to try, in order (explicit first, then the served version: the champion when
    versions are labelled, then the other newest versions), the base path (or None) and its
    published versions. A rolled-back challenger is newer than the champion, never first."""
    sources = []
    if baseline_path:
        path = Path(baseline_path)
        sources.append(bl.Source(baseline_uri or str(baseline_path), lambda: path))
    if not model_base_path:
        return sources, None, []
    from conveyor.registry import ModelBasePath

    base = ModelBasePath(model_base_path)
    versions = base.versions()
    try:
        served = base.served()
    except InputError as exc:  # unreadable labels: the newest versions, as without labels
        print(f"evaluate: {exc}; trying the newest versions as baselines", flush=True)
        served = None
    order = list(reversed(versions[-max_baselines:]))
    if served in versions:
        order = [served, *[v for v in order if v != served]][:max_baselines]
    for version in order:
        sources.append(bl.Source(base.version_uri(version),
                                 lambda v=version: Path(base.fetch(v, scratch)), version))
    return sources, base, versions


def _open(source: bl.Source) -> _Model:
    """Load a baseline; anything that goes wrong becomes `Unusable` with its one line."""
    try:
        return _Model(source.local())
    except Exception as exc:  # noqa: BLE001 (a baseline that does not load is skipped, never fatal)
        raise bl.Unusable(_why_not_loaded(exc)) from None


def _why_not_loaded(exc: Exception) -> str:
    text = bl.one_line(exc)
    if isinstance(exc, InputError) and "transform" in text:
        return ("it is not a conveyor model of this format (no readable "
                f"{ASSETS_EXTRA}/{TRANSFORM_FILE}): {text}")
    return f"it does not load: {text}"


def _batches(dataset: Dataset, split: str, columns: Sequence[str], label: str, batch_rows: int):
    for batch in dataset.iter_batches(split, list(columns), batch_rows):
        batch = batch.filter(pc.is_valid(batch.column(label)))
        if batch.num_rows:
            yield batch


def _fallback_prior(dataset: Dataset, split: str, fitted: Fitted):
    """The prior (counts) or mean from data, for a transform that predates recording them."""
    source = TRAIN_SPLIT if TRAIN_SPLIT in dataset.splits and TRAIN_SPLIT != split else split
    label, task = fitted.spec.label, fitted.spec.task
    counts = np.zeros(len(fitted.label_classes or []), dtype=np.float64)
    total, n = 0.0, 0
    for batch in _batches(dataset, source, [label], label, 1 << 16):
        column = batch.column(0)
        if task == "regression":
            values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
            total, n = total + float(values.sum()), n + len(values)
        else:
            index = pc.index_in(column, value_set=pa.array(fitted.label_classes))
            index = pc.drop_null(index).to_numpy(zero_copy_only=False)
            counts += np.bincount(index, minlength=len(counts))
    where = (f"counted on split {source!r}" if source != split else
             f"counted on the evaluated split {source!r} itself (no {TRAIN_SPLIT!r} split)")
    where += "; the transform predates recording it"
    if task == "regression":
        if not n:
            raise InputError(f"evaluate: no labelled row in split {source!r} for the naive mean")
        return total / n, where
    return counts.tolist(), where


def evaluate_model(
    model_path: str | Path,
    dataset_path: str | Path,
    *,
    split: str = "eval",
    slices: Sequence[str] = (),
    baseline_path: str | Path | None = None,
    baseline_uri: str | None = None,
    model_base_path: str | None = None,
    thresholds: Mapping[str, Any] | None = None,
    allow_breaking_signature: bool = False,
    batch_rows: int = 16384,
    max_baselines: int = bl.MAX_BASELINES,
) -> EvaluationResult:
    """Evaluate `model_path` on `split` of the Dataset against the naive floor, the baseline
    (`baseline_path`, else the newest usable version under `model_base_path`) and thresholds."""
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
    floor = fl.parse_floor(thresholds, task)
    names = set(dataset.schema.names)
    for column in slices:
        if column not in names:
            raise InputError(f"slices: {column!r} is not a column of the dataset "
                             f"(columns: {', '.join(dataset.schema.names)})")
    needed = {fitted.spec.label, *fitted.features, *slices}
    missing = sorted(needed - names)
    if missing:
        raise InputError(f"dataset: columns {missing} that the model needs are missing")
    naive = fl.naive_reference(task, fitted.label_counts, fitted.label_stats,
                               lambda: _fallback_prior(dataset, split, fitted))
    classes = len(fitted.label_classes or [])
    candidate_signature = model.signature()
    with tempfile.TemporaryDirectory(prefix="conveyor-baseline-") as scratch:
        sources, base, versions = _sources(baseline_path, baseline_uri, model_base_path,
                                           scratch, max_baselines)
        skipped: list[dict[str, str]] = (bl.foreign_folders(base, versions)
                                         if base is not None else [])
        served: tuple[str, dict] | None = None
        pending = list(sources)
        opened: set[str] = set()

        def next_baseline() -> _Baseline | None:
            nonlocal served
            while pending:
                source = pending.pop(0)
                opened.add(source.uri)
                try:
                    loaded = _open(source)
                    if served is None and source.version is not None:
                        served = (source.uri, loaded.signature())
                    bl.check_compatible(loaded, fitted, names, split)
                    return _Baseline(source, loaded, fitted, task)
                except bl.Unusable as why:
                    skipped.append({"uri": source.uri, "reason": str(why)})
            return None

        state = _State(task, classes, naive, slices, _curve_classes(fitted))
        baseline = next_baseline()
        first = True
        while True:
            columns = set(needed) | (set(baseline.model.fitted.features) if baseline else set())
            try:
                for batch in _batches(dataset, split, sorted(columns), fitted.spec.label,
                                      batch_rows):
                    y = _encode(fitted, batch.column(fitted.spec.label), split)
                    out = model.answer(batch)
                    p = out[model.key]
                    groups = _groups(batch, slices, state.acc, task, classes)
                    if first:
                        state.update(out, model.key, y, p, groups, batch.num_rows)
                    if baseline is not None:
                        try:
                            baseline.update(batch, y, p, groups)
                        except Exception as exc:  # noqa: BLE001 (skipped, never fatal)
                            skipped.append({"uri": baseline.source.uri, "reason": (
                                str(exc) if isinstance(exc, bl.Unusable) else
                                f"it fails on split {split!r}: {bl.one_line(exc)}")})
                            baseline = None
                            if not first:
                                break
            finally:
                first = False
            if baseline is not None and not baseline.rows:
                skipped.append({"uri": baseline.source.uri, "reason": (
                    f"it knows none of the label classes of {fitted.spec.label!r} in split "
                    f"{split!r} (its classes: {list(baseline.model.fitted.label_classes)[:10]})")})
                baseline = None
            if baseline is not None or not pending:
                break
            baseline = next_baseline()
            if baseline is None:
                break
        if served is None and base is not None:  # read what is served from the untried ones
            served = _served_signature([s for s in sources if s.uri not in opened])
    if not state.rows:
        raise InputError(f"dataset: split {split!r} has no row with a label "
                         f"{fitted.spec.label!r}; nothing to evaluate")
    metrics = {k: a.result() for k, a in state.acc.items()}
    naive_metrics = {k: a.result() for k, a in state.naive.items()}
    overall = metrics["overall"]
    base_metrics = cand_common = None
    note = ""
    if baseline is not None:
        base_metrics = {k: a.result() for k, a in baseline.acc.items()}
        common = baseline.candidate.result()
        note = baseline.note(fitted.label_classes or [], state.rows)
        cand_common = common if note else None
    checks = _checks(rules, cand_common or overall,
                     base_metrics["overall"] if base_metrics else None)
    comparison = None
    if baseline is not None:
        comparison = {m: paired.result() for m, paired in baseline.paired.items()}
        checks += _significance_checks(rules, comparison, cand_common or overall,
                                       base_metrics["overall"])
    checks += [Check(*row, reference="naive") for row in fl.floor_checks(
        task, floor, overall, naive_metrics["overall"], state.row_stats())]
    checks += [Check(name, "is a finite number", value, None, False)  # a NaN never blesses
               for name, value in overall.items() if not np.isfinite(value)]
    diff = None
    if served is not None:
        diff = bl.signature_diff(served[1], candidate_signature, served[0])
        if diff["breaking"]:
            allowed = bool(allow_breaking_signature)
            checks.append(Check(
                "signature", ("breaking changes vs the served " + served[0] + " allowed "
                              "(allow_breaking_signature)" if allowed else
                              "no breaking change vs the served " + served[0] + ": "
                              + "; ".join(diff["reasons"][:5])
                              + " (set allow_breaking_signature to accept)"),
                float(len(diff["reasons"])), None, allowed))
    acc = state.acc["overall"]
    return EvaluationResult(
        task=task, blessed=all(c.passed for c in checks), checks=checks, metrics=metrics,
        baseline_metrics=base_metrics,
        baseline_uri=baseline.source.uri if baseline is not None else None,
        roc=acc.roc() if task == "binary" else None,
        confusion=(acc.confusion() if task == "binary" else
                   acc.matrix.tolist() if task == "multiclass" else None),
        classes=[str(c) for c in fitted.label_classes or []],
        seconds=time.monotonic() - start,
        infra=(infra.verdict(files, state.answered, state.shapes)
               if state.answered and not state.infra_note and fresh else None),
        infra_note=("TensorFlow was imported before this evaluation started" if not fresh
                    else state.infra_note or ("" if state.answered else
                                              "no labelled rows were evaluated")),
        naive_metrics=naive_metrics, naive=naive.describe([str(c) for c in
                                                           fitted.label_classes or []]),
        skipped_baselines=skipped,
        baseline_version=baseline.source.version if baseline is not None else None,
        newest_version_uri=base.version_uri(versions[-1]) if base is not None and versions
        else None,
        baseline_note=note, candidate_on_baseline_rows=cand_common,
        signature_diff=diff, signature=candidate_signature, comparison=comparison,
        curves=_result_curves(task, acc, baseline),
        predictions=(state.predictions.record() if state.predictions.statistics.rows == state.rows
                     else None))


def _curve_classes(fitted: Fitted) -> list[int]:
    """The classes whose one-vs-rest curves are drawn: the most frequent in train (all when
    there are few), by index."""
    classes = len(fitted.label_classes or [])
    counts = fitted.label_counts if fitted.label_counts and len(fitted.label_counts) == classes \
        else [0] * classes
    order = sorted(range(classes), key=lambda i: (-counts[i], i))
    return order[:MAX_CURVE_CLASSES]


def _result_curves(task: str, acc: Any, baseline: "_Baseline | None") -> dict | None:
    if task == "binary":
        out = {"candidate": acc.curves()}
        if baseline is not None:
            out["baseline"] = baseline.acc["overall"].curves()
        return out
    return acc.curves()


def _served_signature(sources: list[bl.Source]):
    """The newest base-path version of `sources` whose signature loads."""
    for source in sources:
        if source.version is None:
            continue
        try:
            return source.uri, _open(source).signature()
        except bl.Unusable:
            continue
    return None


class _State:
    """The candidate's and the naive reference's accumulators over the evaluated rows."""

    def __init__(self, task: str, classes: int, naive: fl.NaiveReference, slices,
                 curve_classes: Sequence[int] = ()):
        self.task, self.classes, self.naive_ref = task, classes, naive
        self.acc: dict[str, Any] = {"overall": accumulator(task, classes)}
        if task != "binary":  # binary curves come from the AUC's histograms
            self.acc["overall"].track(*([list(curve_classes)] if task == "multiclass" else []))
        self.naive: dict[str, Any] = {}
        self.paired = fl.PairedSquaredError() if task == "regression" else None
        self.rows = self.positives = self.answered = 0
        self.shapes: dict = {}
        self.infra_note = ""
        self.predictions = PredictionStatistics(task)

    def update(self, out, key, y, p, groups, rows) -> None:
        if self.predictions.output in out:
            self.predictions.update(np.asarray(out[self.predictions.output]).reshape(-1))
        if not self.infra_note:
            try:
                self.shapes = infra.check_outputs(out, rows)
                self.answered += rows
            except ValueError as exc:
                self.infra_note = str(exc)
        q = self.naive_ref.predict(rows)
        _update(self.acc, groups, y, p)
        for k in groups:
            if k in self.acc:
                self.naive.setdefault(k, accumulator(self.task, self.classes))
        _update(self.naive, groups, y, q)
        self.rows += rows
        if self.task == "binary":
            self.positives += int(np.sum(y > 0.5))
        if self.paired is not None:
            self.paired.update(y, p, q)

    def row_stats(self) -> fl.RowStats:
        return fl.RowStats(self.rows, self.positives, self.paired)


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
                  report_path: str | Path, html_report_path: str | Path | None = None) -> None:
    """evaluation.json in `evaluation_dir`, the Markdown report, and (given a path) the HTML
    report with charts (`conveyor.reports.evaluate`)."""
    folder = Path(evaluation_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / EVALUATION_FILE).write_text(json.dumps(result.to_dict(), indent=1, default=float))
    if result.predictions is not None:
        (folder / PREDICTIONS_FILE).write_text(json.dumps(result.predictions, default=float))
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(markdown(result))
    if html_report_path is not None:
        from conveyor.reports.evaluate import render

        path = Path(html_report_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(render(result), encoding="utf-8")
        partial.replace(path)


def _cell(metrics: Mapping[str, float] | None, key: str) -> str:
    if not metrics or key not in metrics:
        return ""
    value = metrics[key]
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def markdown(result: EvaluationResult) -> str:
    lines = [f"# Evaluation: {'BLESSED' if result.blessed else 'NOT BLESSED'}", "",
             f"Task: {result.task}. Baseline: {result.baseline_uri or 'none'}"
             + ("" if result.baseline_uri else " (judged against the naive reference alone)")
             + ".", "",
             f"Naive reference: {result.naive}.", "",
             (f"Infra check: {result.infra['rows']} rows answered by a process that loaded "
              "TensorFlow only for this model; push reuses this for the same files."
              if result.infra else f"Infra check: not recorded here ({result.infra_note}); push "
              "runs its own."), "",
             "## Checks", ""]
    lines += [f"- {c.line()}" for c in result.checks] or ["- none"]
    if result.comparison:
        lines += ["", "## Improvement over the baseline, paired on the same rows", "",
                  "| metric | candidate | baseline | improvement | interval | one-sided p | "
                  "test |", "|---|---:|---:|---:|---|---:|---|"]
        for metric, c in result.comparison.items():
            low, high = c["interval"]
            lines.append(f"| {metric} | {c['candidate']:.4g} | {c['baseline']:.4g} | "
                         f"{c['improvement']:+.4g} | {c['level']:.0%}: [{low:.4g}, {high:.4g}] | "
                         f"{c['p_value']:.3g} | {c['method']}" + (f"; {c['note']}" if c["note"]
                                                                  else "") + " |")
    if result.skipped_baselines or result.baseline_note:
        lines += ["", "## Baselines skipped", ""]
        lines += [f"- {s['uri']}: {s['reason']}" for s in result.skipped_baselines]
        if result.baseline_note:
            lines += [f"- {result.baseline_note}; the candidate is compared with it on those "
                      "rows"]
    lines += ["", "## Serving signature", ""]
    diff = result.signature_diff
    if diff is None:
        lines.append("No served version to compare with.")
    elif not any(diff[p][k] for p in ("inputs", "outputs") for k in ("added", "removed",
                                                                       "changed")):
        lines.append(f"Same inputs and outputs as the served {diff['against']}.")
    else:
        lines.append(f"Against the served {diff['against']}: "
                     + ("**breaking**" if diff["breaking"] else "not breaking") + ".")
        lines.append("")
        for part in ("inputs", "outputs"):
            for kind in ("added", "removed"):
                if diff[part][kind]:
                    lines.append(f"- {part} {kind}: "
                                 + ", ".join(f"`{n}`" for n in diff[part][kind]))
            for c in diff[part]["changed"]:
                lines.append(f"- {part[:-1]} `{c['name']}` changed: {spec_text(c['before'])} -> "
                             f"{spec_text(c['after'])}")
        lines += [f"- breaking: {r}" for r in diff["reasons"]]
    keys = sorted({k for m in result.metrics.values() for k in m} - {"examples"})
    lines += ["", "## Metrics by slice", "",
              "| slice | examples | " + " | ".join(keys) + " |",
              "|---|---:|" + "---:|" * len(keys)]
    for name, m in result.metrics.items():
        lines.append(f"| {name} | {int(m.get('examples', 0))} | "
                     + " | ".join(_cell(m, k) for k in keys) + " |")
    cand = result.metrics["overall"]
    naive = result.naive_metrics.get("overall", {})
    base = (result.baseline_metrics or {}).get("overall")
    common = result.candidate_on_baseline_rows
    title = "Candidate vs baseline vs naive (overall)" if base else "Candidate vs naive (overall)"
    header = "| metric | candidate | " + ("baseline | change | " if base else "") + "naive |"
    if common:
        header = header.replace("| baseline", "| candidate on baseline rows | baseline")
    lines += ["", f"## {title}", "", header, "|---|" + "---:|" * (header.count("|") - 2)]
    for k in keys:
        row = f"| {k} | {_cell(cand, k)} | "
        if base:
            ref = common or cand
            change = (f"{ref[k] - base[k]:+.4f}" if k in ref and k in base
                      and math.isfinite(ref[k] - base[k]) else "")
            row += (f"{_cell(common, k)} | " if common else "") + f"{_cell(base, k)} | {change} | "
        lines.append(row + f"{_cell(naive, k)} |")
    return "\n".join(lines) + "\n"
