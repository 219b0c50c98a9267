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
standard errors below the naive RMSE, and below the train median's likewise (one extreme label
drags the mean, not the median), and R2 > 0 on the eval rows, even with the floor off: a
regression model never clears the floor by being less absurd than a poisoned mean. Reported as
`naive_metrics` (evaluation.json), beside the candidate and baseline in the report, and as
`naive_<metric>` in the metrics artifact.

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
import datetime
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.errors import InputError
from conveyor.evaluate import baselines as bl
from conveyor.evaluate import floor as fl
from conveyor.evaluate import scoring as sc
from conveyor.evaluate.loading import ServingModel, baseline_sources, served_signature
from conveyor.evaluate.result import Check, EvaluationResult
from conveyor.evaluate.verdict import (
    parse_thresholds,
    rule_checks,
    signature_check,
    significance_checks,
)
from conveyor.io.dataset import Dataset
from conveyor.io.digest import digest
from conveyor.model import infra


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
    model_uri: str | None = None,
) -> EvaluationResult:
    """Evaluate `model_path` on `split` of the Dataset against the naive floor, the baseline
    (`baseline_path`, else the newest usable version under `model_base_path`) and thresholds.
    `model_uri`: the candidate as the reports name it (default `model_path`)."""
    start = time.monotonic()
    # A process that had no TensorFlow before loading the model cannot be the one that saved it.
    fresh = "tensorflow" not in sys.modules
    files = digest(model_path) if fresh else {}  # the files about to be loaded
    run = _load_candidate(model_path, dataset_path, split, slices, batch_rows)
    rules = parse_thresholds(thresholds, run.task)
    floor = fl.parse_floor(thresholds, run.task)
    _check_columns(run)
    naive = fl.naive_reference(run.task, run.fitted.label_counts, run.fitted.label_stats,
                               lambda: sc.fallback_prior(run.dataset, split, run.fitted))
    candidate_signature = run.model.signature()
    state = sc.State(run.task, run.classes, naive, slices, sc.curve_classes(run.fitted))
    with tempfile.TemporaryDirectory(prefix="conveyor-baseline-") as scratch:
        sources, base, versions = baseline_sources(baseline_path, baseline_uri, model_base_path,
                                                   scratch, max_baselines)
        search = sc.Search(bl.foreign_folders(base, versions) if base is not None else [])
        baseline = sc.score(run, state, sources, search)
        if search.served is None and base is not None:  # read what is served from the untried
            search.served = served_signature([s for s in sources if s.uri not in search.opened])
    if not state.rows:
        raise InputError(f"dataset: split {split!r} has no row with a label "
                         f"{run.fitted.spec.label!r}; nothing to evaluate")
    verdict = _judge(run, state, baseline, rules, floor, candidate_signature, search.served,
                     allow_breaking_signature)
    result = _result(run, state, baseline, verdict, search, naive, fresh, files, start,
                     newest_version_uri=base.version_uri(versions[-1])
                     if base is not None and versions else None)
    result.model = identity(run, model_uri or str(model_path), base, versions, search.served)
    return result


def identity(run: sc.Run, uri: str, base: Any, versions: Sequence[int],
             served: tuple[str, dict] | None) -> dict[str, Any]:
    """What the reports' header names: the model (the model base path's last folder, None
    without one), the candidate's URI and its version when it is a published one, the newest
    published version, the served one, the label and task, and when evaluate ran (UTC)."""
    name = base.uri.rstrip("/").rpartition("/")[2] or base.uri if base is not None else None
    return {"name": name, "uri": uri, "base_path": base.uri if base is not None else None,
            "version": base.version_of(uri) if base is not None else None,
            "newest_version": versions[-1] if versions else None,
            "served_version": base.version_of(served[0]) if base is not None and served
            else None,
            "label": run.fitted.spec.label, "task": run.task, "split": run.split,
            "evaluated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def _load_candidate(model_path: str | Path, dataset_path: str | Path, split: str,
                    slices: Sequence[str], batch_rows: int) -> sc.Run:
    """The Dataset (with `split`) and the candidate model, loaded as serving loads it."""
    dataset = Dataset(dataset_path)
    dataset.split(split)
    return sc.Run(dataset, split, slices, ServingModel(model_path), batch_rows)


def _check_columns(run: sc.Run) -> None:
    """Every slice is a column, and every column the candidate reads is there."""
    names = run.names
    for column in run.slices:
        if column not in names:
            raise InputError(f"slices: {column!r} is not a column of the dataset "
                             f"(columns: {', '.join(run.dataset.schema.names)})")
    missing = sorted(run.needed - names)
    if missing:
        raise InputError(f"dataset: columns {missing} that the model needs are missing")


@dataclasses.dataclass
class _Verdict:
    """The checks, and what they compared: the baseline's metrics, the candidate's on the rows
    the baseline scored (when not all), the paired comparison and the signature diff."""

    checks: list[Check]
    metrics: dict[str, dict[str, float]]
    naive_metrics: dict[str, dict[str, float]]
    signature: dict  # the candidate's serving signature
    baseline_metrics: dict[str, dict[str, float]] | None = None
    candidate_on_baseline_rows: dict[str, float] | None = None
    baseline_note: str = ""
    comparison: dict[str, dict] | None = None
    signature_diff: dict | None = None

    @property
    def blessed(self) -> bool:
        return all(c.passed for c in self.checks)


def _judge(run: sc.Run, state: sc.State, baseline: sc.ScoredBaseline | None,
           rules: dict[str, dict], floor: Any, signature: dict,
           served: tuple[str, dict] | None, allow_breaking_signature: bool) -> _Verdict:
    """Every check: thresholds and the baseline, the paired tests, the naive floor, finite
    metrics, and the serving contract vs the served version."""
    found = _Verdict([], {k: a.result() for k, a in state.acc.items()},
                     {k: a.result() for k, a in state.naive.items()}, signature)
    overall = found.metrics["overall"]
    if baseline is not None:
        found.baseline_metrics = {k: a.result() for k, a in baseline.acc.items()}
        found.baseline_note = baseline.note(run.fitted.label_classes or [], state.rows)
        found.candidate_on_baseline_rows = (baseline.candidate.result()
                                            if found.baseline_note else None)
    candidate = found.candidate_on_baseline_rows or overall
    base_overall = found.baseline_metrics["overall"] if found.baseline_metrics else None
    checks = rule_checks(rules, candidate, base_overall)
    if baseline is not None:
        found.comparison = {m: paired.result() for m, paired in baseline.paired.items()}
        checks += significance_checks(rules, found.comparison, candidate, base_overall)
    checks += [Check(*row, reference="naive") for row in state.floor_checks(floor)]
    checks += [Check(name, "is a finite number", value, None, False)  # a NaN never blesses
               for name, value in overall.items() if not np.isfinite(value)]
    if served is not None:
        found.signature_diff = bl.signature_diff(served[1], signature, served[0])
        breaking = signature_check(found.signature_diff, served[0], allow_breaking_signature)
        checks += [breaking] if breaking is not None else []
    found.checks = checks
    return found


def _result(run: sc.Run, state: sc.State, baseline: sc.ScoredBaseline | None,
            verdict: _Verdict, search: sc.Search, naive: fl.NaiveReference, fresh: bool,
            files: dict, start: float, newest_version_uri: str | None) -> EvaluationResult:
    """The result evaluate writes: the verdict, the charts' curves, the infra verdict push may
    reuse (when this process loaded TensorFlow only for this model) and the predictions."""
    task, acc = run.task, state.acc["overall"]
    classes = [str(c) for c in run.fitted.label_classes or []]
    return EvaluationResult(
        task=task, blessed=verdict.blessed, checks=verdict.checks, metrics=verdict.metrics,
        baseline_metrics=verdict.baseline_metrics,
        baseline_uri=baseline.source.uri if baseline is not None else None,
        roc=acc.roc() if task == "binary" else None,
        confusion=(acc.confusion() if task == "binary" else
                   acc.matrix.tolist() if task == "multiclass" else None),
        classes=classes,
        seconds=time.monotonic() - start,
        infra=(infra.verdict(files, state.answered, state.shapes)
               if state.answered and not state.infra_note and fresh else None),
        infra_note=("TensorFlow was imported before this evaluation started" if not fresh
                    else state.infra_note or ("" if state.answered else
                                              "no labelled rows were evaluated")),
        naive_metrics=verdict.naive_metrics, naive=naive.describe(classes),
        skipped_baselines=search.skipped,
        baseline_version=baseline.source.version if baseline is not None else None,
        newest_version_uri=newest_version_uri,
        baseline_note=verdict.baseline_note,
        candidate_on_baseline_rows=verdict.candidate_on_baseline_rows,
        signature_diff=verdict.signature_diff, signature=verdict.signature,
        comparison=verdict.comparison,
        curves=sc.result_curves(task, acc, baseline),
        decision=acc.decision() if task == "binary" else None,
        predictions=(state.predictions.record() if state.predictions.statistics.rows == state.rows
                     else None))
