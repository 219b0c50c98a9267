"""How each feature is fitted from its column statistics on the train split: plain data (means,
deviations, bucket boundaries, vocabularies) that `conveyor.train.preprocess` turns into Keras
layers. The vocabulary rules (`min_count`, NULL as its own value) are told in
`conveyor.transform.spec`'s docstring."""

from __future__ import annotations

from typing import Any

import numpy as np

from conveyor.errors import SchemaError
from conveyor.model.inputs import MISSING_INT
from conveyor.stats.columns import ColumnStatistics
from conveyor.transform.spec import FLOAT32_MAX

DEFAULT_TOP_K = 10_000
CYCLES = {"month": 12, "weekday": 7, "hour": 24}  # date parts encoded as sin/cos on a cycle


def numeric(f, s: ColumnStatistics) -> dict[str, Any]:
    if not s.finite:
        raise SchemaError(f"transform: numeric feature {f.name!r} has no finite value in train")
    if max(abs(s.min), abs(s.max)) > FLOAT32_MAX:
        raise SchemaError(f"transform: numeric feature {f.name!r} has values beyond float32's "
                          f"range in train (min {s.min:g}, max {s.max:g}); the model takes "
                          "float32: rescale it in the query (e.g. divide by 1e30)")
    impute = {"mean": s.mean, "median": s.quantile(0.5), "zero": 0.0}.get(f.impute, f.impute)
    out = {"kind": "numeric", "transform": f.transform, "impute": float(impute),
           "mean": s.mean, "std": s.std or 1.0, "min": s.min, "max": s.max}
    if f.transform == "bucketize":
        qs = np.linspace(0, 1, f.buckets + 1)[1:-1]
        out["boundaries"] = sorted({s.sampled().quantile(q) for q in qs})
    if f.transform == "log":  # z-score the logged values (from the sample, imputed rows too)
        logged = np.log1p(np.maximum(s.sampled().values - s.min, 0.0))
        out["log_mean"] = float(logged.mean())
        out["log_std"] = float(logged.std()) or 1.0
    if f.also_categorical:  # the model sees float32 values: words of their float32 integers
        out["categories"] = {**vocabulary_of(f, s, lambda v: str(int(np.float32(v))),
                                             str(MISSING_INT)), "oov_buckets": 1}
    if f.period is not None:
        out["period"] = float(f.period)
    return out


def datetime(f, s: ColumnStatistics, days: ColumnStatistics) -> dict[str, Any]:
    if not days.finite:
        raise SchemaError(f"transform: datetime feature {f.name!r} has no value in train")
    parts = f.parts or (["days", "month", "weekday"]
                        + (["hour"] if s.type == "timestamp" else []))
    cyclic = [p for p in parts if p in CYCLES] if f.cyclic else []
    return {"kind": "datetime", "dtype": s.type, "parts": parts, "cyclic": cyclic,
            "days_mean": days.mean,
            "days_std": days.std or 1.0, "min": str(s.min), "max": str(s.max)}


def categorical(f, s: ColumnStatistics, ctype: str) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "categorical", "dtype": ctype, "encoding": f.encoding}
    if f.encoding == "hash":
        out["hash_buckets"] = f.hash_buckets
        return out
    # The model sees integers (bool: 1/0) as their decimal strings, NULL as "" (strings) or
    # MISSING_INT (integers and bools).
    word = (lambda v: "1" if v else "0") if ctype == "bool" else str
    null = "" if ctype == "string" else str(MISSING_INT)
    out.update(vocabulary_of(f, s, word, null), oov_buckets=f.oov_buckets)
    return out


def vocabulary_of(f, s: ColumnStatistics, word, null: str) -> dict[str, Any]:
    """The vocabulary of a feature (its `top_k` most frequent training values seen at least
    `min_count` times; NULL, as the word `null`, one of them when it is that frequent) and
    what it leaves out."""
    counts: dict[str, int] = {}
    for value, n in (s.values or {}).items():
        counts[word(value)] = counts.get(word(value), 0) + n
    if s.nulls:
        counts[null] = counts.get(null, 0) + s.nulls
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = [(v, n) for v, n in ranked if n >= f.min_count][: f.top_k or DEFAULT_TOP_K]
    if not top:
        most = f" (the most frequent {ranked[0][1]} times)" if ranked else ""
        raise SchemaError(f"transform: feature {f.name!r} has no value seen at least "
                          f"min_count={f.min_count} times in train{most}: lower its min_count "
                          "or leave it out")
    return {"vocabulary": [v for v, _ in top], "min_count": f.min_count,
            "truncated": bool(s.truncated), "distinct_seen": len(counts),
            "rows_out_of_vocabulary": int(sum(n for _, n in ranked[len(top):]))}
