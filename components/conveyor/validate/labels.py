"""The label's values, judged on the whole table, so that no row's split decides the verdict.

A rule inferred from the train split and checked on the eval split judges the luck of the hash
split as much as the data: one row of a new class failed validate when it hashed into eval and
went through when it hashed into train (issue 25, class 7); one label of 1e30 was refused, or
trained on and blessed, by where it landed (class 3). So the label's values are checked here
with every split's statistics at once, by rules that give the same verdict wherever a row lands:

- **classes** (a string or bool label, or an int64 label of at most `MAX_CLASS_CODES` values, as
  transform's task inference treats one): the label's classes are those of the whole table.
  Transform gives the model an output for each, even one no train row has (the model learns
  never to answer it; evaluate counts its rows as misses, honestly). A class with fewer than
  `RARE_CLASS_ROWS` rows in the table is a **warning** wherever its rows are: too few to learn
  or to judge. A class of at least that many rows, none of them in train, is **breakage** when a
  random split leaves so many rows out of train with probability below `SIGNIFICANCE` (all 68
  Chinstraps in eval is not luck: the split is not random for them, or the class is new in
  whole). One row, or a handful, never is.
- **values** (a float64 label, or an int64 one with more values): NaN, +-inf and values beyond
  float32's range are breakage in every split (the model computes in float32); so is a value
  more than `PRECISION` (2^24) interquartile ranges from the train split's median. Beyond that
  a float32 number cannot hold the value and the other labels' spread at once: the training loss
  and every squared-error metric (RMSE, R2) would measure that one row. The median and the
  quartiles hardly move when such a row lands in train, so the verdict does not depend on where
  it lands.

A suite validate infers from this dataset takes the label's rules from every split too
(`table_rules`: its classes `allowed`, its range): met by this run by construction, they hold
the next run that reuses the suite written out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from conveyor.io.dataset import Dataset
from conveyor.stats.columns import (
    CATEGORICAL,
    NUMERIC,
    ColumnStatistics,
    DatasetStatistics,
    SplitStatistics,
    split_statistics,
)
from conveyor.validate.checks import CheckResult
from conveyor.validate.suite import SIGNIFICANCE, ColumnRules, infer_spec

RARE_CLASS_ROWS = 10  # fewer rows in the whole table: too few to learn or judge (a warning)
MAX_CLASS_CODES = 20  # as transform.propose.MAX_CATEGORY_CODES: an int64 label of <= 20 values
PRECISION = 2.0 ** 24  # float32's significand: beyond, y and y + spread are one float32 number
FLOAT32_MAX = 3.4028234663852886e38
WARNING = "warning"  # a CheckResult severity: reported, never a failure, never drift
ALL_SPLITS = "all splits"  # the split of a check made on the whole table
_SPREADS = ((0.25, 0.75), (0.05, 0.95), (0.01, 0.99))  # the first non-zero one is the spread


def _name(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


@dataclasses.dataclass
class ClassCounts:
    """Rows per label class in each split (`per_split`: split -> class -> rows)."""

    per_split: Mapping[str, Mapping[Any, int]]
    train: str

    @property
    def classes(self) -> list:
        out: dict[Any, None] = {}
        for counts in self.per_split.values():
            out.update(dict.fromkeys(c for c, n in counts.items() if n))
        return list(out)

    def total(self, value: Any) -> int:
        return sum(int(counts.get(value, 0)) for counts in self.per_split.values())

    def in_train(self, value: Any) -> int:
        return int(self.per_split.get(self.train, {}).get(value, 0))

    @property
    def train_share(self) -> float:
        """The share of the labelled rows that train holds."""
        rows = sum(sum(counts.values()) for counts in self.per_split.values())
        return sum(self.per_split.get(self.train, {}).values()) / rows if rows else 0.0

    def chance_outside_train(self, value: Any) -> float:
        """The probability that a random split puts every row of `value` outside train."""
        return (1.0 - self.train_share) ** self.total(value)

    def rare(self) -> list:
        return [c for c in self.classes if self.total(c) < RARE_CLASS_ROWS]

    def unseen(self) -> list:
        """Classes with no train row."""
        return [c for c in self.classes if not self.in_train(c)]

    def not_by_chance(self) -> list:
        """Classes no train row has, which a random split would not leave out: refused."""
        return [c for c in self.unseen() if self.total(c) >= RARE_CLASS_ROWS
                and self.chance_outside_train(c) < SIGNIFICANCE]

    def where(self, value: Any) -> str:
        """'train 0, eval 1': the class's rows per split."""
        return ", ".join(f"{s} {int(counts.get(value, 0))}" for s, counts in self.per_split.items())

    def refusal(self, value: Any) -> str:
        """Why `value` (in `not_by_chance`) is refused, and what to do."""
        total = self.total(value)
        return (f"{_name(value)}: {total} rows, none in {self.train!r} ({self.where(value)}); a "
                f"random split leaves {total} rows out of {self.train!r} (which holds "
                f"{self.train_share:.0%} of the labelled rows) with probability "
                f"{self.chance_outside_train(value):.2g}: the split is not random for this class "
                "(a split key its rows share?) or the class is new in whole; the model could "
                "never predict it: split by another key, or drop or merge the class")


def merged(columns: Mapping[str, ColumnStatistics]) -> ColumnStatistics:
    """One column's statistics over several splits: counts, range, NaN/inf and values (what
    suite inference reads; no moments or sample)."""
    parts = list(columns.values())
    out = ColumnStatistics(parts[0].name, parts[0].type)
    for c in parts:
        out.count, out.nulls = out.count + c.count, out.nulls + c.nulls
        out.nan, out.inf, out.finite = out.nan + c.nan, out.inf + c.inf, out.finite + c.finite
        if c.min is not None:
            out.min = c.min if out.min is None else min(out.min, c.min)
            out.max = c.max if out.max is None else max(out.max, c.max)
        if c.values is not None:
            out.values = dict(out.values or {})
            for value, n in c.values.items():
                out.values[value] = out.values.get(value, 0) + n
            out.truncated = out.truncated or c.truncated
    return out


def per_split(dataset: Dataset, splits: Sequence[str], label: str,
              computed: DatasetStatistics | None) -> dict[str, ColumnStatistics]:
    """The label's statistics in each split: from `computed` (BigQuery's), else read (the label
    column alone, before validate's pass: the suite it infers needs them)."""
    if computed is not None:
        return {s: computed.splits[s].columns[label] for s in splits}
    types = {c.name: c.type for c in dataset.info.columns}
    schema = pa.schema([dataset.schema.field(label)])
    return {s: split_statistics(dataset.iter_batches(s, [label]), schema, types).columns[label]
            for s in splits}


def table_rules(columns: Mapping[str, ColumnStatistics], margin: float) -> ColumnRules:
    """The label's rules of a suite inferred from this dataset, from every split at once (its
    classes `allowed`): what the next run reusing the suite is held to."""
    label = merged(columns)
    spec = infer_spec(SplitStatistics(label.rows, {label.name: label}), margin=margin,
                      strict_values=(label.name,))
    return spec.columns[label.name]


def is_classes(columns: Mapping[str, ColumnStatistics]) -> bool:
    """Whether a label of these per-split statistics holds classes (as transform infers)."""
    first = next(iter(columns.values()))
    if first.kind == CATEGORICAL:
        return True
    if first.type != "int64" or any(c.values is None or c.truncated for c in columns.values()):
        return False
    distinct = set().union(*(set(c.values or {}) for c in columns.values()))
    return len(distinct) <= MAX_CLASS_CODES


def label_checks(split_stats: Mapping[str, SplitStatistics], label: str,
                 train: str) -> list[CheckResult]:
    """The label's class or value rules (module docstring) on every split's statistics."""
    columns = {name: s.columns[label] for name, s in split_stats.items()
               if label in s.columns}
    if not columns or train not in columns:
        return []
    if is_classes(columns):
        if any(c.values is None or c.truncated for c in columns.values()):
            return []  # more than 10,000 classes: not counted exactly, nothing to say
        return class_checks(ClassCounts({n: dict(c.values or {}) for n, c in columns.items()},
                                        train), label)
    if next(iter(columns.values())).kind == NUMERIC:
        return value_checks(columns, label, train)
    return []


def class_checks(counts: ClassCounts, label: str) -> list[CheckResult]:
    """A warning listing the rare classes; breakage for each class refused (`not_by_chance`)."""
    out = []
    for value in counts.not_by_chance():
        where = ",".join(s for s, c in counts.per_split.items() if c.get(value))
        out.append(CheckResult(
            where, "values", f"label classes are in split {counts.train!r} (or could have "
            f"missed it by the split's luck, p >= {SIGNIFICANCE:g})", label, False,
            counts.refusal(value), counts.total(value), [value]))
    rare = counts.rare()
    if rare:
        unseen = set(counts.unseen())
        shown = "; ".join(f"{_name(c)} {counts.total(c)} row(s) ({counts.where(c)})"
                          for c in rare[:10])
        more = f"; ... {len(rare)} in all" if len(rare) > 10 else ""
        note = ("; a class no train row has gets an output the model learns never to give, "
                "and evaluate counts its rows as misses" if unseen & set(rare) else "")
        out.append(CheckResult(
            ALL_SPLITS, "values", f"label classes have >= {RARE_CLASS_ROWS} rows in the table "
            "(wherever they land)", label, False,
            f"{len(rare)} rare class(es): {shown}{more}: too few rows to learn or judge them"
            + note, sum(counts.total(c) for c in rare), rare[:10], severity=WARNING))
    return out


def _spread(c: ColumnStatistics) -> tuple[float, float, str] | None:
    """(median, spread, what the spread is) of the finite values; None without any, or when
    every quantile range is 0 (a nearly constant label: no spread to measure a value by)."""
    if not c.finite or c.sample is None:
        return None
    median = c.quantile(0.5)
    assert median is not None  # finite values: a sample
    for low, high in _SPREADS:
        width = c.sampled().quantile(high) - c.sampled().quantile(low)
        if width > 0:
            name = ("interquartile range" if low == 0.25 else
                    f"p{round(low * 100)}-p{round(high * 100)} range")
            return median, width, name
    return None


def value_checks(columns: Mapping[str, ColumnStatistics], label: str,
                 train: str) -> list[CheckResult]:
    """Per split: the label's values are finite, within float32 and within `PRECISION`
    spreads of train's median (module docstring)."""
    reference = _spread(columns[train])
    rule = ("label values are finite, within float32's range" +
            (f" and within 2^24 {reference[2]}s of the median of split {train!r}"
             if reference else ""))
    out = []
    for split, c in columns.items():
        faults, examples = [], []
        if c.nan or c.inf:
            faults.append(f"{c.nan} NaN and {c.inf} infinite of {c.count} values")
            examples += [float("nan")] * bool(c.nan) + [float("inf")] * bool(c.inf)
        extremes = [v for v in (c.min, c.max) if v is not None and math.isfinite(v)]
        beyond = [v for v in extremes if abs(v) > FLOAT32_MAX]
        if beyond:
            faults.append(f"{max(beyond, key=abs):.3g} is beyond float32's range "
                          f"(|y| > {FLOAT32_MAX:.3g})")
            examples += beyond
        elif reference is not None and extremes:
            median, spread, name = reference
            far = max(extremes, key=lambda v: abs(v - median))
            ratio = abs(far - median) / spread
            if ratio > PRECISION:
                faults.append(
                    f"{far:.6g} is {ratio:.3g} {name}s ({spread:.6g}) from the median "
                    f"({median:.6g}) of split {train!r}: no float32 scale holds it and the other "
                    "labels' spread at once, so the training loss and every squared-error "
                    "metric (RMSE, R2) would measure this value alone")
                examples.append(far)
        observed = ("; ".join(faults) + "; a label must be a number a model can learn and be "
                    "judged on: fix or drop those rows in the query (a NULL label is skipped)"
                    if faults else f"{c.finite} finite values, min {c.min}, max {c.max}")
        out.append(CheckResult(split, "values", rule, label, not faults, observed,
                               c.nan + c.inf + len(examples) - bool(c.nan) - bool(c.inf),
                               examples))
    return out
