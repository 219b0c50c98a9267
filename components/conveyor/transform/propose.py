"""The proposed feature spec: what a careful data scientist would start from, given only a
Dataset's schema, its label and the train split's statistics; every decision with its reason.
The spec's data model and its loading are `conveyor.transform.spec`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from conveyor.errors import SchemaError
from conveyor.stats.columns import MIN_ID_ROWS, id_reason, identifies_rows
from conveyor.transform.names import distinct_inputs
from conveyor.transform.spec import (
    CATEGORICAL_TYPES,
    DATETIME_TYPES,
    NUMERIC_TYPES,
    Feature,
    FeatureSpec,
    check_inputs,
)

# -- thresholds ------------------------------------------------------------------------------
MAX_CATEGORY_CODES = 20  # an integer column with at most this many values is a set of codes
MAX_VOCABULARY = 10_000  # larger string columns are hashed
#: distinct values per non-null row above which a string is name-like (each value seen on
#: average fewer than twice): too rare to learn from
NAME_DISTINCT_SHARE = 0.5
MIN_COUNT = 5  # training rows a value needs for a vector of its own (fewer for small tables)
SKEW_FOR_LOG = 2.0  # skewness of a non-negative column above which it is log-transformed
#: integer parts of a cycle: name pattern (lower case), the ranges allowed, the period
CYCLIC = (("hour of day", re.compile(r"hour|(^|[^a-z])hrs?([^a-z]|$)"), ((0, 23),), 24),
          ("month", re.compile(r"month|(^|[^a-z])mnth([^a-z]|$)"), ((1, 12), (0, 11)), 12),
          ("day of week", re.compile(r"weekday|day_?of_?week|(^|[^a-z])(dow|wday)([^a-z]|$)"),
           ((0, 6), (1, 7)), 7))


def infer_task(label_type: str, distinct: int) -> tuple[str, str]:
    """The task a label calls for, and why."""
    if label_type == "float64":
        return "regression", "the label is a float"
    if label_type == "int64" and distinct > MAX_CATEGORY_CODES:
        return "regression", f"the label is an integer with {distinct} distinct values"
    if label_type == "bool" or distinct == 2:
        return "binary", f"the label has 2 values ({label_type})"
    return "multiclass", f"the label has {distinct} values ({label_type})"


def propose_spec(types: Mapping[str, str], label: str,
                 label_values: Mapping[Any, int] | None = None, task: str | None = None,
                 stats: Mapping[str, Any] | None = None) -> FeatureSpec:
    """A spec a careful data scientist would start from, each decision with its reason.

    With the train split's statistics (`stats`: column -> `ColumnStatistics`, as
    `conveyor.transform.fit.column_statistics` computes them):
    - columns without a value, or with a single one, are left out (nothing to learn);
    - string and integer columns with a distinct value in (nearly) every row identify rows: left
      out (an id learns the training rows by heart);
    - name-like strings, whose values are seen on average fewer than twice (more than half as
      many distinct values as non-null rows), are left out too: no value is seen often enough
      to learn from;
    - a value needs `min_count` training rows (5, fewer below 1,000 rows) for a vector of its
      own; rarer ones share the out-of-vocabulary vector, which is thereby trained and serves
      the values training never saw;
    - integer columns with at most 20 values are codes, counts or levels: both a z-scored
      number (their order) and a category (a vector per value); a flag (two values, no NULL)
      is a number only. An integer whose name and
      range say hour of day (0-23), month (1-12) or day of week (0-6, 1-7) is a category too,
      and its sin and cos on that cycle are added, so that 23 h is next to 0 h;
    - strings with up to 10,000 values get a vocabulary of those seen `min_count` times; more
      are hashed into a power of two of buckets about twice their count;
    - non-negative numbers whose skewness exceeds 2 (and drops when logged) are log-transformed,
      other numbers z-scored; NULL becomes the training mean;
    - bool columns are two-valued categories, DATE and TIMESTAMP columns datetime features
      (days since 1970, and month, weekday, hour as categories and as sin/cos on their cycle);
    - a regression label is standardized inside training, and log-transformed when it is
      non-negative and heavy-tailed; the model's output is mapped back to label units.
    Without statistics, numbers are z-scored and strings take a vocabulary of 1,000 values.
    """
    if label not in types:
        raise SchemaError(f"label: {label!r} is not a column (columns: {', '.join(types)})")
    label_stats = stats.get(label) if stats else None
    why: dict[str, str] = {}
    if label_values is None and label_stats is not None and label_stats.values is not None:
        label_values = label_stats.values
    if task is None:
        task, why["task"] = infer_task(types[label], len(label_values or {}))
    else:
        why["task"] = "given"
    features: dict[str, Feature] = {}
    excluded: dict[str, str] = {}
    for name, ctype in types.items():
        if name == label:
            continue
        s = stats.get(name) if stats else None
        feature, reason = _propose(name, ctype, s)
        if feature is None:
            excluded[name] = reason
        else:
            feature.why = reason
            features[name] = feature
    if not features:
        raise SchemaError(f"no column besides the label {label!r} can be a feature: "
                          + "; ".join(f"{n}: {r}" for n, r in excluded.items()))
    label_transform = "none"
    if task == "regression" and label_stats is not None:
        heavy = _heavy_tailed(label_stats)
        if heavy:
            label_transform = "log"
            why["label"] = f"non-negative and heavy-tailed ({heavy}): trained on log1p(label), " \
                           "predictions mapped back with expm1"
        else:
            why["label"] = "standardized for training; predictions mapped back to label units"
    spec = FeatureSpec(label, task, features, label_transform=label_transform, excluded=excluded,
                       why=why)
    distinct_inputs(features)
    check_inputs(features, "proposed feature spec")
    return spec


def _propose(name: str, ctype: str, s) -> tuple[Feature | None, str]:
    if ctype in DATETIME_TYPES:
        if s is not None and (s.count == 0 or s.min == s.max):
            return None, "no value in train" if s.count == 0 else "a single value in train"
        return Feature(name, "datetime"), f"{ctype}: days since 1970 (trend), month, weekday" + \
            (", hour" if ctype == "timestamp" else "") + " derived inside the model (the parts " \
            "as categories and as sin/cos on their cycle)"
    if ctype not in NUMERIC_TYPES and ctype not in CATEGORICAL_TYPES:
        return None, f"type {ctype} cannot be a feature"
    if s is None:  # no statistics: the simple proposal
        if ctype in NUMERIC_TYPES:
            return Feature(name, "numeric"), f"{ctype}: z-scored, NULL -> mean"
        if ctype == "bool":
            return Feature(name, "categorical"), "bool: a two-valued category"
        return Feature(name, "categorical", top_k=1000), "string: vocabulary of 1,000 values"
    if s.count == 0:
        return None, "no value in train (all NULL)"
    distinct = s.distinct  # None for floats (values are not counted)
    if ctype == "float64":
        if s.finite == 0:
            return None, "no finite value in train"
        if s.min == s.max:
            return None, f"a single value in train ({s.min:g})"
    elif distinct is not None and distinct <= 1 and not s.truncated:
        if s.nulls == 0:
            return None, "a single value in train"
    if ctype == "bool":
        return Feature(name, "categorical"), "bool: a two-valued category (NULL its own value)"
    if ctype in ("string", "int64") and _identifies_rows(s, ctype):
        return None, f"{id_reason(s)}, not a feature"
    if ctype == "int64":
        chosen = _integer(name, s)
        if chosen is not None:
            return chosen
    if ctype == "string":
        return _string(name, s)
    heavy = _heavy_tailed(s)
    if heavy:
        return Feature(name, "numeric", transform="log"), \
            f"non-negative and heavy-tailed ({heavy}): log1p, then z-scored; NULL -> mean"
    return Feature(name, "numeric"), f"{ctype}: z-scored, NULL -> mean"


def min_count(rows: int) -> int:
    """Training rows a value needs for a vector of its own: MIN_COUNT, fewer below 1,000 rows
    (one per 200 rows, at least 2): rarer values share the out-of-vocabulary vector, which is
    then trained, and serves the values training never saw."""
    return max(2, min(MIN_COUNT, rows // 200))


def _frequent(s, at_least: int) -> int:
    """Values (NULL counted as one) seen at least `at_least` times."""
    return sum(1 for n in (s.values or {}).values() if n >= at_least) + (s.nulls >= at_least)


def _cycle(name: str, s) -> tuple[str, float] | None:
    """(what, period) when an integer column's name and range say it is a part of a cycle."""
    lowered = name.lower()
    for what, pattern, ranges, period in CYCLIC:
        if pattern.search(lowered) and any(low <= s.min and s.max <= high
                                           for low, high in ranges):
            return what, period
    return None


def _integer(name: str, s) -> tuple[Feature | None, str] | None:
    """An integer column with few values (codes, counts, levels) or a part of a cycle: both a
    number and a category (plus sin/cos for a cycle); None: an ordinary number."""
    distinct = s.distinct
    if distinct is None or s.truncated or s.min is None:
        return None
    if distinct <= 1:  # one value and NULLs: the NULL pattern is all there is
        return Feature(name, "categorical"), "one value and NULLs: present / absent"
    cycle = _cycle(name, s)
    if distinct > MAX_CATEGORY_CODES and cycle is None:
        return None
    if distinct == 2 and not s.nulls:  # a flag: its number says all a category would
        return Feature(name, "numeric"), "integer with 2 values and no NULL: a number (a flag)"
    at_least = min_count(s.rows)
    if not _frequent(s, at_least):
        return None
    f = Feature(name, "numeric", also_categorical=True, min_count=at_least)
    why = (f"integer with {distinct} distinct values: z-scored (their order) and a category "
           f"(values seen >= {at_least} times; rarer ones and unseen ones share the OOV vector)")
    if cycle is not None:
        f.period = cycle[1]
        why += (f"; its name and range ({s.min:g}..{s.max:g}) say {cycle[0]}: sin/cos on a cycle "
                f"of {cycle[1]:g}")
    return f, why


def _string(name: str, s) -> tuple[Feature | None, str]:
    distinct = s.distinct or 0
    if s.truncated or distinct > MAX_VOCABULARY:
        seen = distinct or MAX_VOCABULARY
        tracked = s.values or {1: 1}
        if s.count >= MIN_ID_ROWS and sum(tracked.values()) < 2 * len(tracked):
            return None, (f"more than {seen:,} distinct values, each seen {_times(s)} on "
                          "average: name-like, too rare to learn from")
        buckets = min(2 ** 17, 2 ** math.ceil(math.log2(2 * seen)))
        return Feature(name, "categorical", encoding="hash", hash_buckets=buckets), \
            (f"string with more than {MAX_VOCABULARY:,} distinct values: hashed into "
             f"{buckets:,} buckets")
    if s.count >= MIN_ID_ROWS and distinct > NAME_DISTINCT_SHARE * s.count:
        return None, (f"{distinct} distinct values in {s.count} non-null rows "
                      f"({distinct / s.count:.0%}, each seen {_times(s)} on average): "
                      "name-like, too rare to learn from")
    at_least = min_count(s.rows)
    kept = _frequent(s, at_least)
    if not kept:
        return None, f"no value seen {at_least} times in {s.rows} rows: too rare to learn from"
    null = " (NULL one of them)" if s.nulls >= at_least else ""
    return Feature(name, "categorical", top_k=kept, min_count=at_least), \
        (f"string with {distinct} distinct values: vocabulary of the {kept} seen >= {at_least} "
         f"times{null}; rarer ones and unseen ones share the OOV vector")


def _times(s) -> str:
    tracked = s.values or {}
    return f"{sum(tracked.values()) / max(len(tracked), 1):.2g} times"


def _identifies_rows(s, ctype: str) -> bool:
    """Distinct values in (nearly) every row (`conveyor.stats.columns.identifies_rows`, the rule
    validate also leaves such columns out of drift by)."""
    return ctype in ("string", "int64") and identifies_rows(s)


def _heavy_tailed(s) -> str:
    """A reason when the column is non-negative and heavy-tailed (skewness above SKEW_FOR_LOG,
    and smaller once logged), else ''."""
    import numpy as np

    if s.sample is None or not s.finite or s.min is None or s.min < 0:
        return ""
    x = np.asarray(s.sample.values, dtype=float)
    if len(x) < 20 or x.std() == 0:
        return ""
    skew = float(((x - x.mean()) ** 3).mean() / x.std() ** 3)
    if skew <= SKEW_FOR_LOG:
        return ""
    logged = np.log1p(x - s.min)
    lskew = float(((logged - logged.mean()) ** 3).mean() / (logged.std() ** 3 or 1.0))
    return f"skewness {skew:.1f}, {lskew:.1f} after log1p" if abs(lskew) < skew else ""
