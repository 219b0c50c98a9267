"""The validate step: statistics, a Great Expectations suite, drift and skew over a Dataset.

`validate_dataset` reads each split once in chunks: the chunk updates the split's statistics and
is checked by the suite's expectations in the same pass. (With `statistics_source="bigquery"`,
or "auto" for a Dataset ingested from BigQuery, not an emulator, of at least
`conveyor.stats.bigquery.AUTO_MIN_ROWS` rows, the statistics come from one aggregate query in
BigQuery instead and the pass runs the expectations only.) Then it compares statistics: each
split against the baseline's same-named split (drift) and train against eval (skew). It writes
the statistics (`statistics.json`, and `statistics.pb`: TFDV's proto), the suite it used, a
machine-readable verdict (`validation.json` beside `statistics.json`) and an HTML report.

Two kinds of finding, kept apart:
- **breakage**: a rule of a user's suite, or an inferred suite's breakage rules (schema, null
  rates beyond a sample-size-aware limit, negatives in a non-negative column, NaN/inf where the
  baseline had none, no rows). With `policy="fail"` it raises `ValidationFailed` listing each
  one, after the outputs are written; with `policy="warn"` the result says `broken`.
- **drift**: distances past their thresholds against the baseline (and train/eval skew), and an
  inferred suite's `expected` ranges and category sets. Reported with figures ("mean 120 -> 180"),
  `drifted` in the verdict; it stops the run only with `drift_policy="fail"`.

`passed` (the component's `Output`) is: nothing broken and nothing drifted against the baseline.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.errors import ConveyorError, InputError
from conveyor.io.dataset import Dataset
from conveyor.model.layout import STATISTICS_FILE
from conveyor.stats import columns as stats
from conveyor.stats import tfdv
from conveyor.validate import checks, drift, labels, overview, report
from conveyor.validate import suite as suites
from conveyor.validate.drift import Distance
from conveyor.validate.policies import problem as policy_problem

#: Where the statistics come from: the Parquet rows (the reference), one aggregate query in
#: BigQuery (a Dataset ingested from BigQuery), or BigQuery above
#: `conveyor.stats.bigquery.AUTO_MIN_ROWS` rows when the Dataset came from it, else the rows.
STATISTICS_SOURCES = ("auto", "rows", "bigquery")
VERDICT_FILE = "validation.json"
VERDICT_FORMAT = "conveyor.validation/v1"


class ValidationFailed(ConveyorError):
    """The data broke its suite (or drifted, under drift_policy fail), under policy `fail`."""


@dataclasses.dataclass
class ValidationResult:
    passed: bool
    checks: list[checks.CheckResult]
    drift: list[tuple[str, Distance]]  # (split, its distance from the baseline's)
    skew: list[Distance]
    statistics: stats.DatasetStatistics
    suite: suites.Suite
    seconds: float
    figures: dict[str, dict[str, dict]] = dataclasses.field(default_factory=dict)  # split->col
    skew_figures: dict[str, dict] = dataclasses.field(default_factory=dict)
    baseline: str | None = None
    drift_policy: str = "warn"
    baseline_statistics: stats.DatasetStatistics | None = None  # for the report's charts
    statistics_source: str = "rows"  # where the statistics came from: rows or bigquery
    excluded: dict[str, str] = dataclasses.field(default_factory=dict)  # column -> why: no drift

    @property
    def broken(self) -> bool:
        return any(c.broken for c in self.checks)

    @property
    def drifted(self) -> bool:
        return any(d.exceeded for _, d in self.drift)

    @property
    def skewed(self) -> bool:
        return any(d.exceeded for d in self.skew)

    @property
    def breakage(self) -> list[str]:
        return [c.line() for c in self.checks if c.broken]

    @property
    def warnings(self) -> list[str]:
        """Findings that neither break nor drift (a rare label class): reported only."""
        return [c.line() for c in self.checks if c.warned]

    def _figure(self, split: str, column: str) -> str:
        summary = self.figures.get(split, {}).get(column, {}).get("summary")
        return f" ({summary})" if summary else ""

    @property
    def drift_lines(self) -> list[str]:
        """Drift past thresholds, train/eval skew and `expected` rules not met, with figures."""
        out = [f"[{s}] drift of {d.column!r}: {d.metric} {d.value:.4f} > {d.threshold} "
               f"(sampling noise {d.noise:.4f})"
               + self._figure(s, d.column) for s, d in self.drift if d.exceeded]
        out += [f"[train vs eval] skew of {d.column!r}: {d.metric} {d.value:.4f} > {d.threshold} "
                f"(sampling noise {d.noise:.4f})"
                + (f" ({self.skew_figures[d.column]['summary']})"
                   if self.skew_figures.get(d.column, {}).get("summary") else "")
                for d in self.skew if d.exceeded]
        out += [f"{c.line()} (drift, not a failure)" for c in self.checks if c.drifted]
        return out

    @property
    def failures(self) -> list[str]:
        """What stops the run under policy fail: breakage, and drift under drift_policy fail."""
        out = self.breakage
        if self.drift_policy == "fail":
            out += [line for line in self.drift_lines if "(drift, not a failure)" not in line]
        return out

    def metrics(self) -> dict[str, float]:
        total = len(self.checks)
        failed = sum(not c.success for c in self.checks)
        return {
            "passed": float(self.passed),
            "broken": float(self.broken),
            "drifted": float(self.drifted),
            "success_ratio": round((total - failed) / total, 6) if total else 1.0,
            "failed_expectations": sum(c.broken for c in self.checks),
            "drift_findings": sum(c.drifted for c in self.checks),
            "drifted_features": len({d.column for _, d in self.drift if d.exceeded}),
            "max_drift": round(max((d.value for _, d in self.drift), default=0.0), 6),
            "skewed_features": sum(d.exceeded for d in self.skew),
            "max_skew": round(max((d.value for d in self.skew), default=0.0), 6),
            "seconds": round(self.seconds, 3),
        }

    def verdict(self) -> dict[str, Any]:
        """The machine-readable verdict (`validation.json`): breakage and drift apart."""
        columns = []
        for split, d in self.drift:
            entry = {"split": split, **d.to_dict(), "drifted": d.exceeded}
            entry.update(self.figures.get(split, {}).get(d.column, {}))
            columns.append(entry)
        return {
            "format": VERDICT_FORMAT,
            "passed": self.passed,
            "broken": self.broken,
            "breakage": [c.to_dict() for c in self.checks if c.broken],
            "warnings": [c.to_dict() for c in self.checks if c.warned],
            "drift": {
                "drifted": self.drifted,
                "baseline": self.baseline,
                "drifted_columns": sorted({d.column for _, d in self.drift if d.exceeded}),
                "columns": columns,
                "expectations": [c.to_dict() for c in self.checks if c.drifted],
            },
            "skew": {
                "skewed": self.skewed,
                "columns": [{**d.to_dict(), **self.skew_figures.get(d.column, {})}
                            for d in self.skew],
            },
            "checks": {"total": len(self.checks),
                       "failed": sum(not c.success for c in self.checks)},
            "suite": self.suite.origin,
            "excluded": dict(self.excluded),
            "statistics_source": self.statistics_source,
        }


def _load_statistics(path: str | Path) -> stats.DatasetStatistics:
    path = Path(path)
    if path.is_dir():
        path = path / STATISTICS_FILE
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(
            f"baseline statistics: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"baseline statistics: {path} is not JSON: {exc}") from None
    return stats.DatasetStatistics.from_dict(data, str(path))




def _statistics_from_bigquery(dataset: Dataset, statistics_source: str) -> bool:
    """Whether `statistics_source` takes this Dataset's statistics from BigQuery."""
    from conveyor.stats import bigquery as bq_stats

    if statistics_source == "bigquery":
        return True
    from conveyor.gcp.clients import emulated

    return (statistics_source == "auto" and bq_stats.from_bigquery(dataset)
            and dataset.info.rows >= bq_stats.AUTO_MIN_ROWS
            and (bq_stats.AUTO_ON_EMULATOR or not emulated()))


def dataset_statistics(dataset: Dataset, splits: Sequence[str] | None = None,
                       statistics_source: str = "auto") -> tuple[stats.DatasetStatistics, str]:
    """The statistics of `splits` (default all) and where they came from ("bigquery" or
    "rows"). `bigquery` raises what `conveyor.stats.bigquery.bigquery_statistics` raises (not
    from BigQuery, source changed, query rejected); `auto` then reads the rows instead, saying
    why."""
    if statistics_source not in STATISTICS_SOURCES:
        raise InputError(f"statistics_source: {statistics_source!r} is not one of "
                         f"{STATISTICS_SOURCES}")
    if _statistics_from_bigquery(dataset, statistics_source):
        from conveyor.stats.bigquery import bigquery_statistics

        try:
            return bigquery_statistics(dataset, splits), "bigquery"
        except InputError as exc:
            if statistics_source == "bigquery":
                raise
            print(f"statistics_source auto: reading the rows instead of BigQuery: {exc}",
                  flush=True)
    return stats.compute_statistics(dataset, splits), "rows"


def validate_dataset(
    dataset_path: str | Path,
    *,
    report_path: str | Path,
    statistics_path: str | Path,
    suite_path: str | Path,
    suite: str | Path | None = None,
    baseline_statistics: str | Path | None = None,
    baseline_dataset: str | Path | None = None,
    splits: Sequence[str] | None = None,
    policy: str = "fail",
    drift_threshold: float = 0.1,
    drift_policy: str = "warn",
    feature_thresholds: Mapping[str, float] | None = None,
    skew_threshold: float = 0.2,
    label_column: str | None = None,
    infer_margin: float = 0.1,
    chunk_rows: int | None = None,
    baseline_name: str | None = None,
    statistics_source: str = "auto",
) -> ValidationResult:
    """Validate a Dataset; write `statistics_path` (a folder: statistics.json, validation.json),
    `suite_path` (a folder) and `report_path` (an HTML file). See the module docstring.

    Under `policy="fail"` breakage raises `ValidationFailed`; drift and skew do so only with
    `drift_policy="fail"` (default `warn`: continuous training stops on broken data and retrains
    on drift). `baseline_name` is how the verdict and report name the baseline (its URI; default
    the path given). `statistics_source` (`STATISTICS_SOURCES`): the statistics from the Parquet
    rows in the same pass as the expectations (`rows`, the reference), from one aggregate query
    over the Dataset's BigQuery source (`bigquery`), or `auto`: BigQuery for a Dataset ingested
    from BigQuery of at least `conveyor.stats.bigquery.AUTO_MIN_ROWS` rows, else the rows. The
    statistics are written twice: `statistics.json` (conveyor's, for drift later) and
    `statistics.pb` (TFDV's `DatasetFeatureStatisticsList`)."""
    start = time.monotonic()
    _check_options(statistics_source, policy, drift_policy, drift_threshold, skew_threshold)
    dataset = Dataset(dataset_path)
    chosen = list(splits) if splits else dataset.splits
    _check_columns(dataset, chosen, label_column, feature_thresholds)
    baseline_stats, baseline_name = _baseline(baseline_statistics, baseline_dataset,
                                              baseline_name, statistics_source)
    computed: stats.DatasetStatistics | None = None
    used_source = "rows"
    if _statistics_from_bigquery(dataset, statistics_source):
        computed, used_source = dataset_statistics(dataset, chosen, statistics_source)
        if used_source == "rows":
            computed = None  # auto fell back: the rows are read below, with the expectations
    used = _suite(suite, dataset, chosen, baseline_stats, baseline_name, computed, label_column,
                  infer_margin)

    results: list[checks.CheckResult] = []
    split_stats: dict[str, stats.SplitStatistics] = {}
    for name in chosen:
        split_results, split_stats[name] = _check_split(dataset, name, used, computed,
                                                         label_column, chunk_rows)
        results += split_results
    if label_column:  # on every split at once: no row's split decides (conveyor.validate.labels)
        results += labels.label_checks(split_stats, label_column, _train(chosen))
    statistics = stats.DatasetStatistics(split_stats, dataset.info.fingerprint)
    excluded = suites.excluded_columns(used, split_stats[_train(chosen)], label_column)
    drifts, figures = _drift(split_stats, baseline_stats, drift_threshold, feature_thresholds,
                             excluded)
    skews, skew_figures = _skew(split_stats, skew_threshold, feature_thresholds, excluded)

    result = ValidationResult(
        passed=False, checks=results, drift=drifts, skew=skews, statistics=statistics,
        suite=used, seconds=time.monotonic() - start, figures=figures,
        skew_figures=skew_figures, baseline=baseline_name, drift_policy=drift_policy,
        baseline_statistics=baseline_stats, statistics_source=used_source, excluded=excluded)
    result.passed = not result.broken and not result.drifted
    _write_outputs(result, dataset, report_path, statistics_path, suite_path, policy)

    if policy == "fail" and result.failures:
        listed = result.failures
        raise ValidationFailed(
            f"validation failed ({len(listed)} problem(s)); the report is at {report_path}:\n  "
            + "\n  ".join(listed[:50]) + ("\n  ..." if len(listed) > 50 else ""))
    return result


def _check_options(statistics_source: str, policy: str, drift_policy: str,
                   drift_threshold: float, skew_threshold: float) -> None:
    """Refuse an unknown source or policy, or a threshold outside [0, 1], before any read."""
    if statistics_source not in STATISTICS_SOURCES:
        raise InputError(f"statistics_source: {statistics_source!r} is not one of "
                         f"{STATISTICS_SOURCES}")
    for name, value in (("policy", policy), ("drift_policy", drift_policy)):
        if policy_problem(name, value):
            raise InputError(policy_problem(name, value))
    for option, threshold in (("drift_threshold", drift_threshold),
                              ("skew_threshold", skew_threshold)):
        if not 0 <= threshold <= 1:
            raise InputError(f"{option}: must be in [0, 1], got {threshold}")


def _check_columns(dataset: Dataset, chosen: Sequence[str], label_column: str | None,
                   feature_thresholds: Mapping[str, float] | None) -> None:
    """The splits, label column and per-feature thresholds named must be in the dataset."""
    for name in chosen:
        dataset.split(name)  # InputError naming the split and the ones there are
    if label_column and label_column not in dataset.schema.names:
        raise InputError(f"label_column: {label_column!r} is not a column of the dataset "
                         f"(columns: {', '.join(dataset.schema.names)})")
    unknown = sorted(set(feature_thresholds or {}) - set(dataset.schema.names))
    if unknown:
        raise InputError(f"feature_thresholds: no column(s) {unknown} in the dataset")


def _baseline(baseline_statistics: str | Path | None, baseline_dataset: str | Path | None,
              given_name: str | None, statistics_source: str
              ) -> tuple[stats.DatasetStatistics | None, str | None]:
    """(the baseline's statistics, how the verdict names it): read from `baseline_statistics`,
    else computed from `baseline_dataset`, else (None, None)."""
    baseline_stats = _load_statistics(baseline_statistics) if baseline_statistics else None
    baseline_name = given_name or (str(baseline_statistics) if baseline_statistics else None)
    if baseline_dataset and baseline_stats is None:
        base = Dataset(baseline_dataset)
        from conveyor.stats.bigquery import from_bigquery

        # `bigquery` asks it of this dataset; a baseline from files is read as ever
        base_source = ("rows" if statistics_source == "bigquery" and not from_bigquery(base)
                       else statistics_source)
        baseline_stats, _ = dataset_statistics(base, None, base_source)
        baseline_name = given_name or f"dataset {baseline_dataset}"
    return baseline_stats, baseline_name


def _suite(suite: str | Path | None, dataset: Dataset, chosen: Sequence[str],
           baseline_stats: stats.DatasetStatistics | None, baseline_name: str | None,
           computed: stats.DatasetStatistics | None, label_column: str | None,
           infer_margin: float) -> suites.Suite:
    """The suite: given, else inferred from the baseline, else from this dataset's train split,
    the label's rules from every split (`conveyor.validate.labels.table_rules`: a rule of
    train's checked on eval would judge the split's luck). Against a baseline a new class is
    drift (retrain)."""
    if suite:
        return suites.load_suite(suite)
    source = baseline_stats
    origin = f"inferred from {baseline_name}" if source else "inferred from this dataset"
    own = source is None
    if source is None:
        source = computed or stats.compute_statistics(dataset, [_train(chosen)])
    spec = suites.infer_spec(source.split(_train(chosen)), margin=infer_margin)
    if own and label_column:
        spec.columns[label_column] = labels.table_rules(
            labels.per_split(dataset, chosen, label_column, computed), infer_margin)
    return suites.Suite(suites.to_expectations(spec), spec, origin=origin)


def _check_split(dataset: Dataset, name: str, used: suites.Suite,
                 computed: stats.DatasetStatistics | None, label_column: str | None,
                 chunk_rows: int | None) -> tuple[list[checks.CheckResult], stats.SplitStatistics]:
    """Split `name`'s checks and statistics, in one pass over its rows: the schema checks, the
    suite's expectations and `finite` rules; the statistics are updated by the same chunks
    (unless `computed`, from BigQuery, has them)."""
    present = set(dataset.schema.names)
    types = {c.name: c.type for c in dataset.info.columns}
    results = checks.schema_checks(used, name, types)
    runnable = [c for c in used.expectations_for(dataset.split(name).rows)
                if all(n in present for n in checks.columns_named(c))]
    if computed is not None:  # from BigQuery: the pass below runs the expectations only
        column_stats = computed.splits[name].columns
        counter = {"rows": computed.splits[name].rows}
        update = None
    else:
        column_stats = {n: stats.ColumnStatistics(n, types[n]) for n in dataset.schema.names}
        counter = {"rows": 0}

        def update(batch) -> None:
            counter["rows"] += batch.num_rows
            for n, s in column_stats.items():
                s.update(batch.column(n))

    results += checks.run_expectations(dataset, name, runnable, chunk_rows=chunk_rows,
                                       on_batch=update)
    results += checks.finite_checks(used, name, column_stats)
    if label_column and column_stats[label_column].count == 0:
        raise InputError(f"label_column: {label_column!r} is NULL in all "
                         f"{counter['rows']} rows of split {name!r}; nothing to learn from")
    return results, stats.SplitStatistics(counter["rows"], column_stats)


def _drift(split_stats: Mapping[str, stats.SplitStatistics],
           baseline_stats: stats.DatasetStatistics | None, drift_threshold: float,
           feature_thresholds: Mapping[str, float] | None, excluded: Collection[str] = ()
           ) -> tuple[list[tuple[str, drift.Distance]], dict[str, dict[str, dict]]]:
    """(each split's distances to the baseline's same-named split, the figures of every column
    of the same kind in both, per split; none for an `excluded` column); nothing without a
    baseline."""
    drifts: list[tuple[str, drift.Distance]] = []
    figures: dict[str, dict[str, dict]] = {}
    if baseline_stats is None:
        return drifts, figures
    for name, current in split_stats.items():
        base_split = baseline_stats.split(name)
        for d in drift.compare(base_split, current, drift_threshold, feature_thresholds,
                               skip=excluded):
            drifts.append((name, d))
        figures[name] = {c: drift.figures(base_split.columns[c], current.columns[c])
                         for c in current.columns
                         if c in base_split.columns and c not in excluded
                         and base_split.columns[c].kind == current.columns[c].kind}
    return drifts, figures


def _skew(split_stats: Mapping[str, stats.SplitStatistics], skew_threshold: float,
          feature_thresholds: Mapping[str, float] | None, excluded: Collection[str] = ()
          ) -> tuple[list[drift.Distance], dict[str, dict]]:
    """(train/eval distances, the figures of each column compared; none for an `excluded`
    column); nothing without both."""
    if "train" not in split_stats or "eval" not in split_stats:
        return [], {}
    train, evaluation = split_stats["train"], split_stats["eval"]
    skews = drift.compare(train, evaluation, skew_threshold, feature_thresholds, skip=excluded)
    return skews, {d.column: drift.figures(train.columns[d.column], evaluation.columns[d.column])
                   for d in skews}


def _write_outputs(result: ValidationResult, dataset: Dataset,
                   report_path: str | Path, statistics_path: str | Path,
                   suite_path: str | Path, policy: str) -> None:
    """The statistics (JSON and TFDV's proto), the verdict, the suite and the report, each
    written completely (beside its final name, then renamed) before any verdict is acted on."""
    statistics = result.statistics
    statistics_dir = Path(statistics_path)
    statistics_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(statistics_dir / STATISTICS_FILE, json.dumps(statistics.to_dict()) + "\n")
    tfdv.write(statistics, statistics_dir / tfdv.STATISTICS_PB)
    _write_atomic(statistics_dir / VERDICT_FILE,
                  json.dumps(result.verdict(), indent=1, ensure_ascii=False, default=str) + "\n")
    suites.write_suite(result.suite, suite_path)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(Path(report_path), report.render(
        title=f"conveyor validate: {overview.source_name(dataset.info.source, dataset.path)}",
        result=result, policy=policy, stats=statistics, source=dataset.info.source,
        dataset_path=dataset.path))


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _train(splits: Sequence[str]) -> str:
    return "train" if "train" in splits else splits[0]
