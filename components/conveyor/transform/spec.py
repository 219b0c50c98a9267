"""The feature spec: the label, the task, and how each feature is preprocessed.

Declarative, as YAML/JSON or as the equivalent Python object::

    label: species
    task: multiclass                 # binary | multiclass | regression
    features:
      bill_length_mm: {kind: numeric, transform: zscore, impute: mean}
      body_mass_g:    {kind: numeric, transform: bucketize, buckets: 8}
      island:         {kind: categorical, encoding: vocabulary, top_k: 100, oov_buckets: 1}
      year:           {kind: categorical, encoding: hash, hash_buckets: 16}
    crosses:
      - {features: [island, sex], buckets: 32}

- numeric (int64 or float64 columns): `transform` is zscore, minmax, bucketize (quantile
  boundaries, `buckets` of them), log (log1p of the value above the training minimum) or none;
  `impute` (for NULL/NaN) is mean, median, zero or a number.
- categorical (string or int64 columns): `encoding` is vocabulary (the `top_k` most frequent
  training values, plus `oov_buckets` buckets for the rest) or hash (`hash_buckets` bins).
  NULL is its own value: in the vocabulary if it was frequent, else out-of-vocabulary.
- crosses: hashed crosses of categorical features, for the wide part of wide-and-deep models.

`propose_spec` writes one from a Dataset's schema and its label's values, so the simple case
needs no hand-written spec.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from conveyor.errors import InputError, SchemaError

TASKS = ("binary", "multiclass", "regression")
NUMERIC_TRANSFORMS = ("zscore", "minmax", "bucketize", "log", "none")
IMPUTE = ("mean", "median", "zero")
ENCODINGS = ("vocabulary", "hash")
NUMERIC_TYPES = ("int64", "float64")
CATEGORICAL_TYPES = ("string", "int64")
MAX_CLASSES = 1000
#: Names TensorFlow accepts for graph nodes: each feature is a named input of the SavedModel's
#: serving signature and names its preprocessing layers.
INPUT_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/>]*$")


@dataclasses.dataclass
class Feature:
    name: str
    kind: str  # numeric | categorical
    transform: str = "zscore"
    buckets: int = 10
    impute: str | float = "mean"
    encoding: str = "vocabulary"
    top_k: int | None = None
    oov_buckets: int = 1
    hash_buckets: int = 64

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "numeric":
            out: dict[str, Any] = {"kind": "numeric", "transform": self.transform,
                                   "impute": self.impute}
            if self.transform == "bucketize":
                out["buckets"] = self.buckets
            return out
        out = {"kind": "categorical", "encoding": self.encoding}
        if self.encoding == "vocabulary":
            out["oov_buckets"] = self.oov_buckets
            if self.top_k is not None:
                out["top_k"] = self.top_k
        else:
            out["hash_buckets"] = self.hash_buckets
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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "task": self.task,
                               "features": {n: f.to_dict() for n, f in self.features.items()}}
        if self.crosses:
            out["crosses"] = [{"features": c.features, "buckets": c.buckets} for c in self.crosses]
        return out

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "feature spec") -> "FeatureSpec":
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: expected a mapping with label, task and features")
        unknown = sorted(set(data) - {"label", "task", "features", "crosses"})
        if unknown:
            raise InputError(f"{where}: unknown key(s) {unknown}")
        label, task = data.get("label"), data.get("task")
        if not label or not isinstance(label, str):
            raise InputError(f"{where}: 'label' must name the label column")
        if task not in TASKS:
            raise InputError(f"{where}: task {task!r} is not one of {TASKS}")
        raw = data.get("features")
        if not isinstance(raw, Mapping) or not raw:
            raise InputError(f"{where}: 'features' must map at least one column to its treatment")
        features = {str(n): _feature(str(n), f or {}, where) for n, f in raw.items()}
        if label in features:
            raise InputError(f"{where}: the label {label!r} cannot also be a feature")
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
        return cls(label, task, features, crosses)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSpec":
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise InputError(f"feature spec: cannot read {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise InputError(f"feature spec: {path} is neither YAML nor JSON: {exc}") from None
        return cls.from_dict(data, str(path))

    def check_columns(self, types: Mapping[str, str], where: str = "dataset") -> None:
        """Every column the spec names exists with a type its treatment can take."""
        if self.label not in types:
            raise SchemaError(f"feature spec: label {self.label!r} is not a column of the {where} "
                              f"(columns: {', '.join(types)})")
        for name, f in self.features.items():
            if name not in types:
                raise SchemaError(f"feature spec: feature {name!r} is not a column of the {where} "
                                  f"(columns: {', '.join(types)})")
            if not INPUT_NAME.match(name):
                raise SchemaError(
                    f"feature spec: feature {name!r} cannot name a model input (TensorFlow "
                    f"takes {INPUT_NAME.pattern}); rename the column in the query "
                    "(SELECT `...` AS new_name) or leave it out with a feature spec")
            allowed = NUMERIC_TYPES if f.kind == "numeric" else CATEGORICAL_TYPES
            if types[name] not in allowed:
                raise SchemaError(
                    f"feature spec: feature {name!r} is {f.kind} but column {name!r} holds "
                    f"{types[name]} values (a {f.kind} feature takes {' or '.join(allowed)})")
        label_type = types[self.label]
        if self.task == "regression" and label_type not in NUMERIC_TYPES:
            raise SchemaError(f"feature spec: a regression label must be numeric; "
                              f"{self.label!r} holds {label_type} values")
        if self.task != "regression" and label_type not in ("string", "int64", "bool"):
            raise SchemaError(f"feature spec: a {self.task} label must be string, int64 or bool; "
                              f"{self.label!r} holds {label_type} values")


def _positive(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{where}: {what} must be a positive integer, got {value!r}")
    return value


def _feature(name: str, raw: Mapping[str, Any], where: str) -> Feature:
    kind = raw.get("kind")
    keys = {"kind", "transform", "buckets", "impute"} if kind == "numeric" else \
        {"kind", "encoding", "top_k", "oov_buckets", "hash_buckets"}
    if kind not in ("numeric", "categorical"):
        raise InputError(f"{where}: feature {name!r}: kind {kind!r} is not numeric or categorical")
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise InputError(f"{where}: feature {name!r}: unknown key(s) {unknown} for a {kind} feature")
    f = Feature(name, kind)
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
    return f


def propose_spec(types: Mapping[str, str], label: str, label_values: Mapping[Any, int] | None = None,
                 task: str | None = None) -> FeatureSpec:
    """A spec for the simple case: numeric columns z-scored (NULL -> mean), string columns
    through a vocabulary of their 1000 most frequent values; other types are left out.

    The task, when not given, follows the label: float -> regression; two values -> binary;
    more (strings, or at most 20 integers) -> multiclass.
    """
    if label not in types:
        raise SchemaError(f"label: {label!r} is not a column (columns: {', '.join(types)})")
    if task is None:
        distinct = len(label_values or {})
        if types[label] == "float64" or (types[label] == "int64" and distinct > 20):
            task = "regression"
        elif distinct == 2 or types[label] == "bool":
            task = "binary"
        else:
            task = "multiclass"
    features = {}
    for name, ctype in types.items():
        if name == label:
            continue
        if ctype in NUMERIC_TYPES:
            features[name] = Feature(name, "numeric")
        elif ctype == "string":
            features[name] = Feature(name, "categorical", top_k=1000)
    if not features:
        raise SchemaError(f"no column besides the label {label!r} can be a feature "
                          f"(numeric or string): {dict(types)}")
    return FeatureSpec(label, task, features)
