"""The proposed feature spec: what a careful data scientist would start from, given only a
Dataset's schema, its label and the train split's statistics; every decision with its reason.
The spec's data model and its loading are `conveyor.transform.spec`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from conveyor.errors import SchemaError
from conveyor.transform.names import distinct_inputs
from conveyor.transform.spec import (
    CATEGORICAL_TYPES,
    DATETIME_TYPES,
    NUMERIC_TYPES,
    Feature,
    FeatureSpec,
    check_inputs,
)

# -- thresholds ---------------------------------------------------
MAX_CATEGORY_CODES = 20  # an integer column with at most this many values is a set of codes
MAX_VOCABULARY = 10_000  # larger string columns are hashed
ID_DISTINCT_SHARE = 0.95  # distinct values per row above which a column identifies rows
MIN_ID_ROWS = 50
SKEW_FOR_LOG = 2.0  # skewness of a non-negative column above which it is log-transformed



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
    - integer columns with at most 20 values are codes or levels: categories;
    - strings with up to 10,000 values get a vocabulary of all of them; more are hashed into a
      power of two of buckets about twice their count;
    - non-negative numbers whose skewness exceeds 2 (and drops when logged) are log-transformed,
      other numbers z-scored; NULL becomes the training mean;
    - bool columns are two-valued categories, DATE and TIMESTAMP columns datetime features;
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
            (", hour" if ctype == "timestamp" else "") + " derived inside the model"
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
        return None, (f"{'~' if s.truncated else ''}{distinct}{'+' if s.truncated else ''} "
                      f"distinct values in {s.count} rows: identifies rows, not a feature")
    if ctype == "int64" and distinct is not None and not s.truncated \
            and distinct <= MAX_CATEGORY_CODES:
        if distinct <= 1:  # one value and NULLs: the NULL pattern is all there is
            return Feature(name, "categorical"), "one value and NULLs: present / absent"
        return Feature(name, "categorical"), \
            f"integer with {distinct} distinct values: codes or levels, as categories"
    if ctype == "string":
        if s.truncated or (distinct or 0) > MAX_VOCABULARY:
            seen = distinct or MAX_VOCABULARY
            buckets = min(2 ** 17, 2 ** math.ceil(math.log2(2 * seen)))
            return Feature(name, "categorical", encoding="hash", hash_buckets=buckets), \
                (f"string with more than {MAX_VOCABULARY:,} distinct values: hashed into "
                 f"{buckets:,} buckets")
        return Feature(name, "categorical", top_k=distinct), \
            f"string with {distinct} distinct values: vocabulary of all of them (+1 OOV)"
    heavy = _heavy_tailed(s)
    if heavy:
        return Feature(name, "numeric", transform="log"), \
            f"non-negative and heavy-tailed ({heavy}): log1p, then z-scored; NULL -> mean"
    return Feature(name, "numeric"), f"{ctype}: z-scored, NULL -> mean"


def _identifies_rows(s, ctype: str) -> bool:
    """Distinct values in (nearly) every row. Integers must also be dense (ids, counters), so
    a continuous measure stored as integers (prices, areas) stays a feature."""
    if s.count < MIN_ID_ROWS:
        return False
    if s.truncated:  # beyond the tracked values: judge by how often the tracked ones repeat
        repeated = sum(1 for c in (s.values or {}).values() if c > 1)
        unique_like = repeated <= 0.05 * len(s.values or {1: 1})
    else:
        unique_like = (s.distinct or 0) >= ID_DISTINCT_SHARE * s.count
    if not unique_like:
        return False
    if ctype == "int64":
        span = (s.max - s.min + 1) if s.min is not None and s.max is not None else math.inf
        return span <= 2 * s.count
    return True


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
