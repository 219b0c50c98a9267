"""Fit the preprocessing of a feature spec on a Dataset's train split, in one streaming pass.

The result (`Fitted`) is plain data, written as `transform.json` (readable: means, deviations,
bucket boundaries, vocabularies, label classes) beside `feature_spec.yaml`. `conveyor.train`
builds the Keras preprocessing layers from it, inside the exported model, so serving computes
features exactly as training did. Fitting needs no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from conveyor.errors import EmptyDataError, InputError, SchemaError
from conveyor.io.dataset import Dataset
from conveyor.transform.spec import MAX_CLASSES, FeatureSpec
from conveyor.validate.stats import ColumnStatistics

FORMAT = "conveyor.transform/v1"
TRANSFORM_FILE, SPEC_FILE = "transform.json", "feature_spec.yaml"
DEFAULT_TOP_K = 10_000


@dataclasses.dataclass
class Fitted:
    spec: FeatureSpec
    features: dict[str, dict[str, Any]]  # per feature: what preprocessing needs, readable
    label_classes: list | None  # classification: the classes, in output order
    rows: int
    dataset_fingerprint: str = ""
    label_stats: dict[str, float] | None = None  # regression: the label's mean and std

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "feature_spec": self.spec.to_dict(), "features": self.features,
                "label_classes": self.label_classes, "label_stats": self.label_stats,
                "rows": self.rows, "dataset_fingerprint": self.dataset_fingerprint}

    def write(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TRANSFORM_FILE).write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        self.spec.dump(folder / SPEC_FILE)

    @classmethod
    def load(cls, folder: str | Path) -> "Fitted":
        path = Path(folder) / TRANSFORM_FILE
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise InputError(f"transform: cannot read {path}: {exc.strerror or exc}") from None
        if data.get("format") != FORMAT:
            raise InputError(f"transform: {path} is not a conveyor transform ({FORMAT})")
        return cls(FeatureSpec.from_dict(data["feature_spec"], str(path)), data["features"],
                   data["label_classes"], data["rows"], data.get("dataset_fingerprint", ""),
                   data.get("label_stats"))


def fit(dataset: Dataset, spec: FeatureSpec, train_split: str = "train") -> Fitted:
    """Fit `spec`'s preprocessing on `train_split`; check the other splits' label classes."""
    types = {c.name: c.type for c in dataset.info.columns}
    spec.check_columns(types)
    if train_split not in dataset.splits:
        raise InputError(f"transform: the dataset has no {train_split!r} split "
                         f"(splits: {', '.join(dataset.splits)})")
    columns = [*spec.features, spec.label]
    # The statistics validate computes: numbers get moments and a sample (quantiles), strings
    # and integers get value counts (vocabularies, label classes).
    stats = {n: ColumnStatistics(n, types[n]) for n in columns}
    rows = 0
    for batch in dataset.iter_batches(train_split, columns=columns, batch_size=256 * 1024):
        rows += batch.num_rows
        for n, s in stats.items():
            s.update(batch.column(n))
    label = stats[spec.label]
    if label.count == 0:
        raise EmptyDataError(f"transform: split {train_split!r} has no row with a label "
                             f"({rows} rows, label {spec.label!r} NULL in all)")
    classes = _label_classes(spec, label)
    if classes is not None:
        _check_other_splits(dataset, spec, classes, train_split)
    else:
        _check_finite_labels(dataset, spec)
    features = {name: (_numeric(f, stats[name]) if f.kind == "numeric"
                       else _categorical(f, stats[name], types[name]))
                for name, f in spec.features.items()}
    label_stats = ({"mean": label.mean, "std": label.std or 1.0}
                   if spec.task == "regression" else None)
    return Fitted(spec, features, classes, rows, dataset.info.fingerprint, label_stats)


def _label_classes(spec: FeatureSpec, label: ColumnStatistics) -> list | None:
    if spec.task == "regression":
        return None
    classes = sorted(label.values or {}, key=lambda v: (str(type(v)), v))
    if spec.task == "binary" and len(classes) != 2:
        raise SchemaError(f"transform: a binary label needs exactly 2 classes; {spec.label!r} has "
                          f"{len(classes)} in train: {classes[:10]}")
    if spec.task == "multiclass" and not 2 <= len(classes) <= MAX_CLASSES:
        raise SchemaError(f"transform: a multiclass label needs 2 to {MAX_CLASSES} classes; "
                          f"{spec.label!r} has {len(classes)} in train")
    return classes


def _check_other_splits(dataset: Dataset, spec: FeatureSpec, classes: list, train: str) -> None:
    known = set(classes)
    for split in dataset.splits:
        if split == train:
            continue
        unseen: set = set()
        for batch in dataset.iter_batches(split, columns=[spec.label]):
            values = pc.unique(pc.drop_null(batch.column(0))).to_pylist()
            unseen.update(v for v in values if v not in known)
        if unseen:
            raise SchemaError(
                f"transform: split {split!r} has label class(es) {sorted(unseen, key=str)[:10]} of "
                f"{spec.label!r} not seen in {train!r} (classes: {classes[:20]}); the model could "
                "never predict them: ingest more data or merge rare classes")


def _check_finite_labels(dataset: Dataset, spec: FeatureSpec) -> None:
    """A regression label of NaN or +-inf would make the loss NaN and training learn nothing,
    silently: refuse it in every split (NULL labels are skipped, as rows without a label)."""
    for split in dataset.splits:
        bad, rows, examples = 0, 0, set()
        for batch in dataset.iter_batches(split, columns=[spec.label]):
            column = pc.drop_null(batch.column(0))
            rows += batch.num_rows
            broken = pc.invert(pc.is_finite(column))
            bad += pc.sum(broken).as_py() or 0
            examples.update(pc.filter(column, broken).to_pylist()[:3])
        if bad:
            raise SchemaError(
                f"transform: the regression label {spec.label!r} is NaN or infinite in {bad} of "
                f"{rows} rows of split {split!r} (e.g. {sorted(map(str, examples))}); a label must "
                "be a finite number or NULL: filter or fix those rows in the query")


def _numeric(f, s: ColumnStatistics) -> dict[str, Any]:
    if not s.finite:
        raise SchemaError(f"transform: numeric feature {f.name!r} has no finite value in train")
    impute = {"mean": s.mean, "median": s.quantile(0.5), "zero": 0.0}.get(f.impute, f.impute)
    out = {"kind": "numeric", "transform": f.transform, "impute": float(impute),
           "mean": s.mean, "std": s.std or 1.0, "min": s.min, "max": s.max}
    if f.transform == "bucketize":
        qs = np.linspace(0, 1, f.buckets + 1)[1:-1]
        out["boundaries"] = sorted({float(s.quantile(q)) for q in qs})
    return out


def _categorical(f, s: ColumnStatistics, ctype: str) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "categorical", "dtype": ctype, "encoding": f.encoding}
    if f.encoding == "hash":
        out["hash_buckets"] = f.hash_buckets
        return out
    counts = s.values or {}
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    top = ranked[: f.top_k or DEFAULT_TOP_K]
    out.update(vocabulary=[str(v) for v, _ in top], oov_buckets=f.oov_buckets,
               truncated=bool(s.truncated), distinct_seen=len(counts))
    if not top:
        raise SchemaError(f"transform: categorical feature {f.name!r} has no value in train")
    return out


def describe(fitted: Fitted) -> str:
    lines = [f"fitted on {fitted.rows} rows; label {fitted.spec.label!r} ({fitted.spec.task})"
             + (f", classes {fitted.label_classes}" if fitted.label_classes else "")]
    for name, f in fitted.features.items():
        if f["kind"] == "numeric":
            lines.append(f"  {name}: {f['transform']}, mean {f['mean']:.4g}, std {f['std']:.4g}, "
                         f"NULL -> {f['impute']:.4g}")
        elif f["encoding"] == "vocabulary":
            lines.append(f"  {name}: vocabulary of {len(f['vocabulary'])} + {f['oov_buckets']} OOV")
        else:
            lines.append(f"  {name}: hashed into {f['hash_buckets']} buckets")
    return "\n".join(lines)
