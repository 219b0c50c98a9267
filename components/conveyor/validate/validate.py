"""The validate step: statistics, a Great Expectations suite, drift and skew over a Dataset.

`validate_dataset` reads each split once in chunks: the chunk updates the split's statistics and is
checked by the suite's expectations in the same pass. Then it compares statistics: each split
against the baseline's same-named split (drift) and train against eval (skew). It writes the
statistics, the suite it used, and an HTML report, and returns whether everything passed. With
`policy="fail"` a failure raises `ValidationFailed` listing each failed rule and drifted feature,
after the outputs are written; with `policy="warn"` it returns `passed=False`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from conveyor.errors import ConveyorError, InputError
from conveyor.io.dataset import Dataset
from conveyor.validate import checks, drift, report, stats, suite as suites

POLICIES = ("fail", "warn")


class ValidationFailed(ConveyorError):
    """The data broke its suite, drifted or skewed, under policy `fail`."""


@dataclasses.dataclass
class ValidationResult:
    passed: bool
    checks: list[checks.CheckResult]
    drift: list[tuple[str, drift.Distance]]
    skew: list[drift.Distance]
    statistics: stats.DatasetStatistics
    suite: suites.Suite
    seconds: float

    @property
    def failures(self) -> list[str]:
        out = [c.line() for c in self.checks if not c.success]
        out += [f"[{s}] drift of {d.column!r}: {d.metric} {d.value:.4f} > {d.threshold}"
                for s, d in self.drift if d.exceeded]
        out += [f"[train vs eval] skew of {d.column!r}: {d.metric} {d.value:.4f} > {d.threshold}"
                for d in self.skew if d.exceeded]
        return out

    def metrics(self) -> dict[str, float]:
        total = len(self.checks)
        failed = sum(not c.success for c in self.checks)
        return {
            "passed": float(self.passed),
            "success_ratio": round((total - failed) / total, 6) if total else 1.0,
            "failed_expectations": failed,
            "drifted_features": sum(d.exceeded for _, d in self.drift),
            "max_drift": round(max((d.value for _, d in self.drift), default=0.0), 6),
            "skewed_features": sum(d.exceeded for d in self.skew),
            "max_skew": round(max((d.value for d in self.skew), default=0.0), 6),
            "seconds": round(self.seconds, 3),
        }


def _load_statistics(path: str | Path) -> stats.DatasetStatistics:
    path = Path(path)
    if path.is_dir():
        path = path / STATISTICS_FILE
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"baseline statistics: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"baseline statistics: {path} is not JSON: {exc}") from None
    return stats.DatasetStatistics.from_dict(data, str(path))


STATISTICS_FILE = "statistics.json"


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
    drift_policy: str = "fail",
    feature_thresholds: Mapping[str, float] | None = None,
    skew_threshold: float = 0.2,
    label_column: str | None = None,
    infer_margin: float = 0.1,
    chunk_rows: int = checks.CHUNK_ROWS,
) -> ValidationResult:
    """Validate a Dataset; write `statistics_path` (a folder), `suite_path` (a folder) and
    `report_path` (an HTML file). See the module docstring for what is checked.

    With `drift_policy="warn"`, drift alone does not fail the task under `policy="fail"` (it
    still makes `passed` False): continuous training stops on broken data, retrains on drift."""
    start = time.monotonic()
    if policy not in POLICIES:
        raise InputError(f"policy: {policy!r} is not one of {POLICIES}")
    if drift_policy not in POLICIES:
        raise InputError(f"drift_policy: {drift_policy!r} is not one of {POLICIES}")
    for name, value in (("drift_threshold", drift_threshold), ("skew_threshold", skew_threshold)):
        if not 0 <= value <= 1:
            raise InputError(f"{name}: must be in [0, 1], got {value}")
    dataset = Dataset(dataset_path)
    chosen = list(splits) if splits else dataset.splits
    for name in chosen:
        dataset.split(name)  # InputError naming the split and the ones there are
    if label_column and label_column not in dataset.schema.names:
        raise InputError(f"label_column: {label_column!r} is not a column of the dataset "
                         f"(columns: {', '.join(dataset.schema.names)})")
    unknown = sorted(set(feature_thresholds or {}) - set(dataset.schema.names))
    if unknown:
        raise InputError(f"feature_thresholds: no column(s) {unknown} in the dataset")

    baseline_stats = _load_statistics(baseline_statistics) if baseline_statistics else None
    baseline_name = str(baseline_statistics) if baseline_statistics else None
    if baseline_dataset and baseline_stats is None:
        base = Dataset(baseline_dataset)
        baseline_stats = stats.compute_statistics(base)
        baseline_name = f"dataset {baseline_dataset}"

    # The suite: given, else inferred from the baseline, else from this dataset's train split.
    if suite:
        used = suites.load_suite(suite)
    else:
        source = baseline_stats
        origin = f"inferred from {baseline_name}" if source else "inferred from this dataset"
        if source is None:
            source = stats.compute_statistics(dataset, [_train(chosen)])
        spec = suites.infer_spec(source.split(_train(chosen)), margin=infer_margin)
        used = suites.Suite(suites.to_expectations(spec), spec, origin=origin)

    present = set(dataset.schema.names)
    runnable = [c for c in used.expectations
                if all(n in present for n in checks.columns_named(c))]
    types = {c.name: c.type for c in dataset.info.columns}
    results: list[checks.CheckResult] = []
    split_stats: dict[str, stats.SplitStatistics] = {}
    for name in chosen:
        results += _schema_checks(used, name, types)
        column_stats = {n: stats.ColumnStatistics(n, types[n]) for n in dataset.schema.names}
        counter = {"rows": 0}

        def update(batch, column_stats=column_stats, counter=counter) -> None:
            counter["rows"] += batch.num_rows
            for n, s in column_stats.items():
                s.update(batch.column(n))

        results += checks.run_expectations(dataset, name, runnable, chunk_rows=chunk_rows,
                                           on_batch=update)
        split_stats[name] = stats.SplitStatistics(counter["rows"], column_stats)
        if label_column and column_stats[label_column].count == 0:
            raise InputError(f"label_column: {label_column!r} is NULL in all "
                             f"{counter['rows']} rows of split {name!r}; nothing to learn from")
    statistics = stats.DatasetStatistics(split_stats, dataset.info.fingerprint)

    drifts: list[tuple[str, drift.Distance]] = []
    if baseline_stats is not None:
        for name, current in split_stats.items():
            for d in drift.compare(baseline_stats.split(name), current, drift_threshold,
                                   feature_thresholds):
                drifts.append((name, d))
    skews = (drift.compare(split_stats["train"], split_stats["eval"], skew_threshold,
                           feature_thresholds)
             if "train" in split_stats and "eval" in split_stats else [])

    result = ValidationResult(
        passed=(all(c.success for c in results) and not any(d.exceeded for _, d in drifts)
                and not any(d.exceeded for d in skews)),
        checks=results, drift=drifts, skew=skews, statistics=statistics, suite=used,
        seconds=time.monotonic() - start)

    Path(statistics_path).mkdir(parents=True, exist_ok=True)
    (Path(statistics_path) / STATISTICS_FILE).write_text(json.dumps(statistics.to_dict()) + "\n")
    suites.write_suite(used, suite_path)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(report.render(
        title=f"conveyor validate: {Path(dataset_path).name}", passed=result.passed,
        policy=policy, suite_origin=used.origin, checks=results, drift=drifts, skew=skews,
        stats=statistics, baseline=baseline_name))

    data_broken = not all(c.success for c in results) or any(d.exceeded for d in skews)
    drifted = any(d.exceeded for _, d in drifts)
    if policy == "fail" and (data_broken or (drifted and drift_policy == "fail")):
        listed = result.failures
        raise ValidationFailed(
            f"validation failed ({len(listed)} problem(s)); the report is at {report_path}:\n  "
            + "\n  ".join(listed[:50]) + ("\n  ..." if len(listed) > 50 else ""))
    return result


def _train(splits: Sequence[str]) -> str:
    return "train" if "train" in splits else splits[0]


def _schema_checks(used: suites.Suite, split: str, types: Mapping[str, str]) -> list:
    """Columns the suite names that the dataset lacks, and a spec's type rules."""
    out = []
    named: dict[str, None] = {}
    for config in used.expectations:
        for n in checks.columns_named(config):
            named.setdefault(n, None)
    if used.spec is not None:
        for n in used.spec.columns:
            named.setdefault(n, None)
    for n in named:
        if n not in types:
            out.append(checks.CheckResult(split, "schema", "column exists", n, False,
                                          f"missing from the dataset (columns: {', '.join(types)})"))
    if used.spec is not None:
        for n, rules in used.spec.columns.items():
            if rules.type and n in types:
                out.append(checks.CheckResult(split, "schema", f"type is {rules.type}", n,
                                              rules.type == types[n], f"type is {types[n]}"))
    return out
