"""Scoring on the evaluated split: the candidate, the naive reference and, on the same rows, the
first baseline that can be evaluated on them (`score`), streamed batch after batch from the
split's Parquet shards, overall and per slice.

The first pass over the split scores the candidate with the first baseline that loads; a
baseline that fails on the rows (or scores none of them) is skipped with its reason, and the
next one that loads gets a pass of its own, until one is scored or none is left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conveyor.errors import InputError
from conveyor.evaluate import baselines as bl
from conveyor.evaluate import floor as fl
from conveyor.evaluate import significance as sg
from conveyor.evaluate.loading import ServingModel, open_baseline
from conveyor.evaluate.metrics import MAX_CURVE_CLASSES, accumulator
from conveyor.io.dataset import Dataset
from conveyor.model import infra
from conveyor.model.inputs import LabelEncoder
from conveyor.model.predictions import PredictionStatistics
from conveyor.transform.fit import Fitted

MAX_SLICE_VALUES = 100
TRAIN_SPLIT = "train"  # where an old transform's missing prior is counted


@dataclasses.dataclass
class Run:
    """The fixed inputs of one evaluation: the split, how it is read, and the candidate."""

    dataset: Dataset
    split: str
    slices: Sequence[str]
    model: ServingModel
    batch_rows: int

    @property
    def fitted(self) -> Fitted:
        return self.model.fitted

    @property
    def task(self) -> str:
        return self.fitted.spec.task

    @property
    def classes(self) -> int:
        return len(self.fitted.label_classes or [])

    @property
    def names(self) -> set[str]:
        """The dataset's columns."""
        return set(self.dataset.schema.names)

    @property
    def needed(self) -> set[str]:
        """The columns the candidate and the slices read."""
        return {self.fitted.spec.label, *self.fitted.features, *self.slices}


@dataclasses.dataclass
class Search:
    """What trying the baselines found: those skipped and why, the URIs opened, and the newest
    base-path version whose signature loaded (the served one), as (uri, signature)."""

    skipped: list[dict[str, str]]
    served: tuple[str, dict] | None = None
    opened: set[str] = dataclasses.field(default_factory=set)

    def skip(self, uri: str, reason: str) -> None:
        self.skipped.append({"uri": uri, "reason": reason})


def score(run: Run, state: State, sources: Sequence[bl.Source],
          search: Search) -> ScoredBaseline | None:
    """Score the candidate into `state`, and the first of `sources` that can be evaluated on the
    split; returns that baseline, or None when none can (each one skipped is in `search`)."""
    pending = iter(sources)
    baseline = _scan(run, state, _next_baseline(run, pending, search), search, candidate=True)
    for source in pending:
        if baseline is not None:
            break
        loaded = load_baseline(run, source, search)
        if loaded is not None:
            baseline = _scan(run, state, loaded, search, candidate=False)
    return baseline


def load_baseline(run: Run, source: bl.Source, search: Search) -> ScoredBaseline | None:
    """`source` ready to be scored, or None when it cannot be (skipped, with the reason). The
    first base-path version that loads gives the served signature."""
    search.opened.add(source.uri)
    try:
        loaded = open_baseline(source)
        if search.served is None and source.version is not None:
            search.served = (source.uri, loaded.signature())
        bl.check_compatible(loaded, run.fitted, run.names, run.split)
        return ScoredBaseline(source, loaded, run.fitted, run.task)
    except bl.Unusable as why:
        search.skip(source.uri, str(why))
        return None


def _next_baseline(run: Run, pending: Iterator[bl.Source],
                   search: Search) -> ScoredBaseline | None:
    for source in pending:
        baseline = load_baseline(run, source, search)
        if baseline is not None:
            return baseline
    return None


def _scan(run: Run, state: State, baseline: ScoredBaseline | None, search: Search, *,
          candidate: bool) -> ScoredBaseline | None:
    """One pass over the split: the candidate's outputs (into `state` when `candidate`, the
    first pass) and `baseline` on the same rows. Returns the baseline, or None when it failed
    on the rows or scored none of them (skipped, with the reason)."""
    fitted, model = run.fitted, run.model
    label = fitted.spec.label
    columns = set(run.needed) | (set(baseline.model.fitted.features) if baseline else set())
    for batch in _batches(run.dataset, run.split, sorted(columns), label, run.batch_rows):
        y = _encode(fitted, batch.column(label), run.split)
        out = model.answer(batch)
        p = out[model.key]
        groups = _groups(batch, run.slices, state.acc, run.task, run.classes)
        if candidate:
            state.update(out, model.key, y, p, groups, batch.num_rows)
        if baseline is not None:
            try:
                baseline.update(batch, y, p, groups)
            except Exception as exc:  # skipped, never fatal
                search.skip(baseline.source.uri, (
                    str(exc) if isinstance(exc, bl.Unusable) else
                    f"it fails on split {run.split!r}: {bl.one_line(exc)}"))
                baseline = None
                if not candidate:
                    break
    if baseline is not None and not baseline.rows:
        search.skip(baseline.source.uri, (
            f"it knows none of the label classes of {label!r} in split "
            f"{run.split!r} (its classes: {list(baseline.model.fitted.label_classes or [])[:10]})"))
        baseline = None
    return baseline


def _encode(fitted: Fitted, column, split: str) -> np.ndarray:
    return LabelEncoder(fitted)(column, split)


class ScoredBaseline:
    """A baseline being scored on the candidate's rows: its accumulators per slice, and the
    candidate's on the same rows (overall), in a shared class space."""

    def __init__(self, source: bl.Source, model: ServingModel, fitted: Fitted, task: str):
        self.source, self.model, self.task = source, model, task
        self.label = fitted.spec.label
        # a classification label's transform always has its classes
        self.map = (bl.ClassMap(fitted.label_classes or [], model.fitted.label_classes or [])
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

class State:
    """The candidate's and the naive reference's accumulators over the evaluated rows."""

    def __init__(self, task: str, classes: int, naive: fl.NaiveReference, slices,
                 curve_classes: Sequence[int] = ()):
        self.task, self.classes, self.naive_ref = task, classes, naive
        self.acc: dict[str, Any] = {"overall": accumulator(task, classes)}
        if task != "binary":  # binary curves come from the AUC's histograms
            self.acc["overall"].track(*([list(curve_classes)] if task == "multiclass" else []))
        self.naive: dict[str, Any] = {}
        self.paired = fl.PairedSquaredError() if task == "regression" else None
        # regression: the train median on the same rows (overall), a reference no few
        # extreme labels can drag (`conveyor.evaluate.floor`)
        self.median = accumulator(task) if naive.median is not None else None
        self.paired_median = fl.PairedSquaredError() if naive.median is not None else None
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
        if self.median is not None and self.paired_median is not None:
            m = np.full(rows, float(self.naive_ref.median or 0.0))
            self.median.update(y, m)
            self.paired_median.update(y, p, m)

    def row_stats(self) -> fl.RowStats:
        overall = self.acc["overall"]
        return fl.RowStats(self.rows, self.positives, self.paired, self.paired_median,
                           overall.sst if self.task == "regression" else None)

    def median_metrics(self) -> tuple[float, dict[str, float]] | None:
        """(the train median, its overall metrics on the evaluated rows), or None."""
        if self.median is None or self.naive_ref.median is None:
            return None
        return self.naive_ref.median, self.median.result()

    def floor_checks(self, floor: dict[str, float | None]
                     ) -> list[tuple[str, str, float, float, bool]]:
        """The naive floor's checks on the overall metrics (`conveyor.evaluate.floor`): vs the
        train prior or mean, vs the train median, and a regression's R2 > 0 (always on)."""
        overall = self.acc["overall"].result()
        stats = self.row_stats()
        out = fl.floor_checks(self.task, floor, overall, self.naive["overall"].result(), stats,
                              self.median_metrics())
        r2 = fl.r2_check(overall["r2"], stats) if self.task == "regression" else None
        return out + ([r2] if r2 is not None else [])


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




def _batches(dataset: Dataset, split: str, columns: Sequence[str], label: str, batch_rows: int):
    for batch in dataset.iter_batches(split, list(columns), batch_rows):
        batch = batch.filter(pc.is_valid(batch.column(label)))
        if batch.num_rows:
            yield batch


def fallback_prior(dataset: Dataset, split: str, fitted: Fitted):
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

def curve_classes(fitted: Fitted) -> list[int]:
    """The classes whose one-vs-rest curves are drawn: the most frequent in train (all when
    there are few), by index."""
    classes = len(fitted.label_classes or [])
    counts = fitted.label_counts if fitted.label_counts and len(fitted.label_counts) == classes \
        else [0] * classes
    order = sorted(range(classes), key=lambda i: (-counts[i], i))
    return order[:MAX_CURVE_CLASSES]


def result_curves(task: str, acc: Any, baseline: ScoredBaseline | None) -> dict | None:
    if task == "binary":
        out = {"candidate": acc.curves()}
        if baseline is not None:
            out["baseline"] = baseline.acc["overall"].curves()
        return out
    return acc.curves()

