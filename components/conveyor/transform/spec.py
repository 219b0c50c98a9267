"""The feature spec: the label, the task, and how each feature is preprocessed.

Declarative, as YAML/JSON or as the equivalent Python object::

    label: price
    task: regression                 # binary | multiclass | regression
    label_transform: log             # regression only: log (log1p) or none
    features:
      bill_length_mm: {kind: numeric, transform: zscore, impute: mean}
      body_mass_g:    {kind: numeric, transform: bucketize, buckets: 8}
      island:         {kind: categorical, encoding: vocabulary, top_k: 100, min_count: 5}
      year:           {kind: categorical, encoding: hash, hash_buckets: 16}
      rooms:          {kind: numeric, also_categorical: true, min_count: 5}
      hour:           {kind: numeric, also_categorical: true, period: 24}
      sold_on:        {kind: datetime}
      from:           {kind: numeric, input: from_}
    crosses:
      - {features: [island, sex], buckets: 32}
    excluded:
      id: unique in every row (an identifier, not a feature)

- numeric (int64 or float64 columns): `transform` is zscore, minmax, bucketize (quantile
  boundaries, `buckets` of them), log (log1p of the value above the training minimum, then
  z-scored) or none; `impute` (for NULL/NaN) is mean, median, zero or a number.
  `also_categorical: true` (int64 columns only: integer codes, counts, levels) makes the value
  a category too, beside the number: a vocabulary of the training values seen at least
  `min_count` times (NULL its own value, as below), so the model gets both the order (the
  number) and a vector per value (an embedding). `period: P` (a positive number) adds the
  value's position on a cycle of length P as sin(2 pi x / P) and cos(2 pi x / P): hour of day
  (24), month (12), day of week (7), so that 23 h is next to 0 h.
- categorical (string, int64 or bool columns): `encoding` is vocabulary (the `top_k` most
  frequent training values seen at least `min_count` times, default 1, plus `oov_buckets`
  buckets for the rest) or hash (`hash_buckets` bins). The values below `min_count` share the
  out-of-vocabulary bucket, so it is trained, and a value never seen in training lands on a
  learned vector. NULL is its own value: in the vocabulary when the train split has at least
  `min_count` NULLs (as "" for strings, which an empty string shares), else out of it.
  A bool column is a two-valued categorical feature.
- datetime (date or timestamp columns): derived inside the model from the raw ISO value
  ("2024-05-01", "2024-05-01 12:34:56"): days since 1970-01-01 (z-scored with the training
  mean and deviation), month and day of week (and hour, for timestamps) as categories; `parts`
  chooses among days, month, weekday, hour. `cyclic` (default true) adds the sin and cos of
  each of month, weekday and hour on its cycle (12, 7, 24).
- crosses: hashed crosses of categorical features, for the wide part of wide-and-deep models.
- `why` (any feature) and `excluded` (column -> reason) say why the proposal chose what it did;
  they do not change the model.

**Column names and model inputs.** Each feature is a named input of the exported model's
serving signature, which TensorFlow turns into keyword arguments of its own functions and into
graph names. A column whose name is a plain identifier (letters, digits and `_`, starting with a
letter) and not reserved keeps its name, case included. Reserved (`reserved`): Python keywords
and soft keywords, `self` and the names of the layers the model adds after its inputs
(`SERVING_NAMES`: `prediction`, `logits`, `hidden_0`...): each gets a trailing `_` (`self` ->
`self_`, `from` -> `from_`); `id`, `type` or `value` keep their names. Any other name maps to
one deterministically (`input_name`): letters with accents lose them, every other character
that is not a letter, digit or `_` becomes `_`, a leading digit (or an empty result) gets an
`f_` prefix and a leading `_` an `f`: `prix €` -> `prix__`, `2nd floor` -> `f_2nd_floor`,
`a/b-c` -> `a_b_c`, `_x` -> `f_x`. Inputs must differ in more than case (TensorFlow's
signature refuses `A` beside `a`). A proposed spec gives a column whose input would clash with
another's the next free `<input>_2`, `_3`... (columns keeping their own name first). A written
spec may set `input` by hand; two of its features whose inputs would clash are refused, naming
both columns.

`conveyor.transform.propose.propose_spec` writes one from a Dataset's schema and the train
split's statistics, so the simple case needs no hand-written spec; every decision carries its
reason.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from conveyor.errors import InputError, SchemaError
from conveyor.transform.names import INPUT_NAME, input_name, reserved

TASKS = ("binary", "multiclass", "regression")
KINDS = ("numeric", "categorical", "datetime")
NUMERIC_TRANSFORMS = ("zscore", "minmax", "bucketize", "log", "none")
LABEL_TRANSFORMS = ("none", "log")
IMPUTE = ("mean", "median", "zero")
ENCODINGS = ("vocabulary", "hash")
DATETIME_PARTS = ("days", "month", "weekday", "hour")
NUMERIC_TYPES = ("int64", "float64")
CATEGORICAL_TYPES = ("string", "int64", "bool")
DATETIME_TYPES = ("date", "timestamp")
MAX_CLASSES = 1000
#: The largest magnitude a float32 holds: labels and values beyond it cannot reach the model.
FLOAT32_MAX = 3.4028234663852886e38


@dataclasses.dataclass
class Feature:
    name: str
    kind: str  # numeric | categorical | datetime
    transform: str = "zscore"
    buckets: int = 10
    impute: str | float = "mean"
    encoding: str = "vocabulary"
    top_k: int | None = None
    oov_buckets: int = 1
    hash_buckets: int = 64
    parts: list[str] | None = None  # datetime: default days, month, weekday (+ hour)
    cyclic: bool = True  # datetime: sin/cos of month, weekday, hour
    min_count: int = 1  # vocabulary: fewer training rows and a value is out of vocabulary
    also_categorical: bool = False  # numeric (int64): the value is a category too
    period: float | None = None  # numeric: sin/cos of the value on a cycle of this length
    input: str | None = None  # the model input's name; default input_name(name)
    why: str = ""

    @property
    def input_name(self) -> str:
        return self.input or input_name(self.name)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "numeric":
            out: dict[str, Any] = {"kind": "numeric", "transform": self.transform,
                                   "impute": self.impute}
            if self.transform == "bucketize":
                out["buckets"] = self.buckets
            if self.also_categorical:
                out.update(also_categorical=True, min_count=self.min_count)
            if self.period is not None:
                out["period"] = self.period
        elif self.kind == "datetime":
            out = {"kind": "datetime"}
            if self.parts is not None:
                out["parts"] = list(self.parts)
            if not self.cyclic:
                out["cyclic"] = False
        else:
            out = {"kind": "categorical", "encoding": self.encoding}
            if self.encoding == "vocabulary":
                out["oov_buckets"] = self.oov_buckets
                if self.top_k is not None:
                    out["top_k"] = self.top_k
                if self.min_count > 1:
                    out["min_count"] = self.min_count
            else:
                out["hash_buckets"] = self.hash_buckets
        if self.input_name != self.name:
            out["input"] = self.input_name
        if self.why:
            out["why"] = self.why
        return out


@dataclasses.dataclass
class Cross:
    features: list[str]
    buckets: int = 64


@dataclasses.dataclass
class FeatureSpec:
    label: str
    task: str
    features: dict[str, Feature]
    crosses: list[Cross] = dataclasses.field(default_factory=list)
    label_transform: str = "none"
    excluded: dict[str, str] = dataclasses.field(default_factory=dict)  # column -> reason
    why: dict[str, str] = dataclasses.field(default_factory=dict)  # "task"/"label" -> reason

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "task": self.task}
        if self.label_transform != "none":
            out["label_transform"] = self.label_transform
        if self.why:
            out["why"] = dict(self.why)
        out["features"] = {n: f.to_dict() for n, f in self.features.items()}
        if self.crosses:
            out["crosses"] = [{"features": c.features, "buckets": c.buckets} for c in self.crosses]
        if self.excluded:
            out["excluded"] = dict(self.excluded)
        return out

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True,
                                             width=100))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "feature spec") -> FeatureSpec:
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: expected a mapping with label, task and features")
        unknown = sorted(set(data) - {"label", "task", "features", "crosses", "label_transform",
                                      "excluded", "why"})
        if unknown:
            raise InputError(f"{where}: unknown key(s) {unknown}")
        label, task = data.get("label"), data.get("task")
        if not label or not isinstance(label, str):
            raise InputError(f"{where}: 'label' must name the label column")
        if task not in TASKS:
            raise InputError(f"{where}: task {task!r} is not one of {TASKS}")
        label_transform = data.get("label_transform", "none") or "none"
        if label_transform not in LABEL_TRANSFORMS:
            raise InputError(f"{where}: label_transform {label_transform!r} is not one of "
                             f"{LABEL_TRANSFORMS}")
        if label_transform != "none" and task != "regression":
            raise InputError(f"{where}: label_transform applies to a regression label only "
                             f"(task is {task})")
        raw = data.get("features")
        if not isinstance(raw, Mapping) or not raw:
            raise InputError(f"{where}: 'features' must map at least one column to its treatment")
        features = {str(n): _feature(str(n), f or {}, where) for n, f in raw.items()}
        if label in features:
            raise InputError(f"{where}: the label {label!r} cannot also be a feature")
        check_inputs(features, where)
        crosses = []
        for i, c in enumerate(data.get("crosses") or []):
            names = c.get("features") if isinstance(c, Mapping) else None
            if not isinstance(names, list) or len(names) < 2:
                raise InputError(f"{where}: cross #{i} needs 'features': a list of 2 or more")
            for n in names:
                if n not in features or features[n].kind != "categorical":
                    raise InputError(f"{where}: cross #{i}: {n!r} is not a categorical feature")
            crosses.append(Cross(list(names), _positive(c.get("buckets", 64), f"cross #{i} buckets",
                                                        where)))
        excluded = data.get("excluded") or {}
        why = data.get("why") or {}
        if not isinstance(excluded, Mapping) or not isinstance(why, Mapping):
            raise InputError(f"{where}: 'excluded' and 'why' must map names to reasons")
        return cls(label, task, features, crosses, label_transform,
                   {str(k): str(v) for k, v in excluded.items()},
                   {str(k): str(v) for k, v in why.items()})

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        from conveyor.gcp.files import uri_of
        from conveyor.io.documents import read_mapping  # errors never quote a non-spec file

        data = read_mapping(path, "feature spec", ("label", "task", "features", "crosses",
                                                   "label_transform", "excluded", "why"))
        return cls.from_dict(data, uri_of(path))  # named by its gs:// URI if downloaded

    def check_columns(self, types: Mapping[str, str], where: str = "dataset") -> None:
        """Every column the spec names exists with a type its treatment can take."""
        if self.label not in types:
            raise SchemaError(f"feature spec: label {self.label!r} is not a column of the {where} "
                              f"(columns: {', '.join(types)})")
        for name, f in self.features.items():
            if name not in types:
                raise SchemaError(f"feature spec: feature {name!r} is not a column of the {where} "
                                  f"(columns: {', '.join(types)})")
            allowed = {"numeric": NUMERIC_TYPES, "categorical": CATEGORICAL_TYPES,
                       "datetime": DATETIME_TYPES}[f.kind]
            if types[name] not in allowed:
                raise SchemaError(
                    f"feature spec: feature {name!r} is {f.kind} but column {name!r} holds "
                    f"{types[name]} values (a {f.kind} feature takes {' or '.join(allowed)})")
            if f.also_categorical and types[name] != "int64":
                raise SchemaError(
                    f"feature spec: feature {name!r} is also_categorical but column {name!r} "
                    f"holds {types[name]} values (only int64 values can be categories too; "
                    "drop also_categorical, or make it a categorical feature)")
            if f.kind == "datetime" and f.parts and "hour" in f.parts and types[name] == "date":
                raise SchemaError(f"feature spec: feature {name!r} is a date: it has no 'hour' "
                                  "part (parts: days, month, weekday)")
        label_type = types[self.label]
        if self.task == "regression" and label_type not in NUMERIC_TYPES:
            raise SchemaError(f"feature spec: a regression label must be numeric; "
                              f"{self.label!r} holds {label_type} values")
        if self.task != "regression" and label_type not in ("string", "int64", "bool"):
            raise SchemaError(f"feature spec: a {self.task} label must be string, int64 or bool; "
                              f"{self.label!r} holds {label_type} values")


def check_inputs(features: Mapping[str, Feature], where: str) -> None:
    seen: dict[str, str] = {}
    for name, f in features.items():
        given = f.input_name
        if not isinstance(given, str) or not INPUT_NAME.match(given) or reserved(given):
            raise InputError(f"{where}: feature {name!r}: input {given!r} is not a valid model "
                             "input name (letters, digits and '_', starting with a letter, not "
                             "a Python keyword nor a name the model uses itself, such as "
                             "'self' or 'prediction')")
        if given.casefold() in seen:
            raise SchemaError(
                f"{where}: columns {seen[given.casefold()]!r} and {name!r} would both feed model "
                f"input {given!r} (inputs must differ in more than case); rename one in the "
                f"query (SELECT `{name}` AS other_name) or give one an explicit 'input' in a "
                "feature spec")
        seen[given.casefold()] = name


def _positive(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{where}: {what} must be a positive integer, got {value!r}")
    return value


_KEYS = {"numeric": {"transform", "buckets", "impute", "also_categorical", "min_count", "period"},
         "categorical": {"encoding", "top_k", "oov_buckets", "hash_buckets", "min_count"},
         "datetime": {"parts", "cyclic"}}


def _feature(name: str, raw: Mapping[str, Any], where: str) -> Feature:
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: feature {name!r}: expected a mapping such as "
                         "{kind: numeric}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InputError(f"{where}: feature {name!r}: kind {kind!r} is not one of {KINDS}")
    unknown = sorted(set(raw) - _KEYS[kind] - {"kind", "input", "why"})
    if unknown:
        raise InputError(
            f"{where}: feature {name!r}: unknown key(s) {unknown} for a {kind} feature")
    f = Feature(name, kind, input=raw.get("input") or None, why=str(raw.get("why") or ""))
    if f.input is not None and not isinstance(f.input, str):
        raise InputError(f"{where}: feature {name!r}: input must be a name, got {f.input!r}")
    if kind == "numeric":
        f.transform = raw.get("transform", "zscore")
        if f.transform not in NUMERIC_TRANSFORMS:
            raise InputError(f"{where}: feature {name!r}: transform {f.transform!r} is not one of "
                             f"{NUMERIC_TRANSFORMS}")
        f.buckets = _positive(raw.get("buckets", 10), f"feature {name!r} buckets", where)
        f.impute = raw.get("impute", "mean")
        if not (f.impute in IMPUTE or (isinstance(f.impute, (int, float))
                                       and not isinstance(f.impute, bool))):
            raise InputError(f"{where}: feature {name!r}: impute {f.impute!r} is not one of "
                             f"{IMPUTE} or a number")
        f.also_categorical = _flag(raw, "also_categorical", False, name, where)
        f.min_count = _positive(raw.get("min_count", 1), f"feature {name!r} min_count", where)
        f.period = _period(raw.get("period"), name, where)
    elif kind == "datetime":
        f.cyclic = _flag(raw, "cyclic", True, name, where)
        parts = raw.get("parts")
        if parts is not None:
            if (not isinstance(parts, list) or not parts
                    or any(p not in DATETIME_PARTS for p in parts) or len(set(parts)) < len(parts)):
                raise InputError(f"{where}: feature {name!r}: parts must be a list of distinct "
                                 f"names from {DATETIME_PARTS}, got {parts!r}")
            f.parts = list(parts)
    else:
        f.encoding = raw.get("encoding", "vocabulary")
        if f.encoding not in ENCODINGS:
            raise InputError(f"{where}: feature {name!r}: encoding {f.encoding!r} is not one of "
                             f"{ENCODINGS}")
        if raw.get("top_k") is not None:
            f.top_k = _positive(raw["top_k"], f"feature {name!r} top_k", where)
        f.oov_buckets = _positive(raw.get("oov_buckets", 1), f"feature {name!r} oov_buckets", where)
        f.hash_buckets = _positive(raw.get("hash_buckets", 64), f"feature {name!r} hash_buckets",
                                   where)
        f.min_count = _positive(raw.get("min_count", 1), f"feature {name!r} min_count", where)
    return f


def _flag(raw: Mapping[str, Any], key: str, default: bool, name: str, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise InputError(f"{where}: feature {name!r}: {key} must be true or false, got {value!r}")
    return value


def _period(value: Any, name: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise InputError(f"{where}: feature {name!r}: period must be a positive number (24 for "
                         f"an hour of day, 12 for a month, 7 for a day of week), got {value!r}")
    return value
