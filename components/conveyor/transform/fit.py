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
import pyarrow as pa
import pyarrow.compute as pc

from conveyor.errors import EmptyDataError, InputError, SchemaError
from conveyor.io.dataset import Dataset
from conveyor.transform.spec import DATETIME_TYPES, FLOAT32_MAX, MAX_CLASSES, FeatureSpec
from conveyor.stats.columns import ColumnStatistics

FORMAT = "conveyor.transform/v1"
TRANSFORM_FILE, SPEC_FILE = "transform.json", "feature_spec.yaml"
DEFAULT_TOP_K = 10_000
DAYS = "::days"  # suffix of a date column's day-number statistics in `column_statistics`


@dataclasses.dataclass
class Fitted:
    spec: FeatureSpec
    features: dict[str, dict[str, Any]]  # per feature: what preprocessing needs, readable
    label_classes: list | None  # classification: the classes, in output order
    rows: int
    dataset_fingerprint: str = ""
    #: regression: mean and std of the label as trained (after `transform`: none or log), and
    #: `raw_mean` (the train mean in label units: the naive reference's prediction)
    label_stats: dict[str, Any] | None = None
    label_counts: list[int] | None = None  # classification: train rows per class

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "feature_spec": self.spec.to_dict(), "features": self.features,
                "label_classes": self.label_classes, "label_counts": self.label_counts,
                "label_stats": self.label_stats, "rows": self.rows,
                "dataset_fingerprint": self.dataset_fingerprint}

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
        except ValueError as exc:
            raise InputError(f"transform: {path} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"transform: {path} is not a conveyor transform ({FORMAT})")
        try:
            spec = FeatureSpec.from_dict(data["feature_spec"], str(path))
            features = data["features"]
            for name, f in features.items():  # transforms written before inputs were mapped
                f.setdefault("input", name)
            return cls(spec, features, data["label_classes"], data["rows"],
                       data.get("dataset_fingerprint", ""), data.get("label_stats"),
                       data.get("label_counts"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"transform: {path} is incomplete or malformed ({exc!r})") from None

    def input_of(self, column: str) -> str:
        """The model input (serving signature name) that `column` feeds."""
        return self.features[column].get("input", column)


def column_statistics(dataset: Dataset, split: str, columns: list[str]
                      ) -> tuple[int, dict[str, ColumnStatistics]]:
    """Rows and statistics of `columns` in `split`, in one streaming pass. Date and timestamp
    columns also get the statistics of their day numbers, under `<name>` + DAYS."""
    types = {c.name: c.type for c in dataset.info.columns}
    stats = {n: ColumnStatistics(n, types[n]) for n in columns}
    temporal = [n for n in columns if types[n] in DATETIME_TYPES]
    for n in temporal:
        stats[n + DAYS] = ColumnStatistics(n + DAYS, "float64")
    rows = 0
    for batch in dataset.iter_batches(split, columns=columns, batch_size=256 * 1024):
        rows += batch.num_rows
        for n in columns:
            stats[n].update(batch.column(n))
        for n in temporal:
            stats[n + DAYS].update(day_numbers(batch.column(n)))
    return rows, stats


def day_numbers(column) -> pa.Array:
    """Days since 1970-01-01 (fractional for timestamps) of a date or timestamp column."""
    if pa.types.is_date(column.type):
        return column.cast(pa.date32()).cast(pa.int32()).cast(pa.float64())
    micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).cast(pa.float64())
    return pc.divide(micros, 86_400e6)


def fit(dataset: Dataset, spec: FeatureSpec, train_split: str = "train",
        stats: tuple[int, dict[str, ColumnStatistics]] | None = None) -> Fitted:
    """Fit `spec`'s preprocessing on `train_split`; check the other splits' label classes.
    `stats` (from `column_statistics` of the same split) saves the pass over the train rows."""
    types = {c.name: c.type for c in dataset.info.columns}
    spec.check_columns(types)
    if train_split not in dataset.splits:
        raise InputError(f"transform: the dataset has no {train_split!r} split "
                         f"(splits: {', '.join(dataset.splits)})")
    columns = [*spec.features, spec.label]
    if stats is None or any(n not in stats[1] for n in columns):
        stats = column_statistics(dataset, train_split, columns)
    rows, stats_ = stats
    label = stats_[spec.label]
    if label.count == 0:
        raise EmptyDataError(f"transform: split {train_split!r} has no row with a label "
                             f"({rows} rows, label {spec.label!r} NULL in all)")
    classes = _label_classes(spec, label)
    if classes is not None:
        _check_other_splits(dataset, spec, classes, train_split)
    else:
        _check_finite_labels(dataset, spec)
    features = {}
    for name, f in spec.features.items():
        if f.kind == "numeric":
            features[name] = _numeric(f, stats_[name])
        elif f.kind == "datetime":
            features[name] = _datetime(f, stats_[name], stats_[name + DAYS])
        else:
            features[name] = _categorical(f, stats_[name], types[name])
        features[name]["input"] = f.input_name
    label_stats, counts = None, None
    if spec.task == "regression":
        label_stats = _label_scale(spec, label)
    else:
        counts = [int((label.values or {}).get(c, 0)) for c in classes]
    return Fitted(spec, features, classes, rows, dataset.info.fingerprint, label_stats, counts)


def _label_scale(spec: FeatureSpec, label: ColumnStatistics) -> dict[str, Any]:
    """How the regression label is scaled for training: the model learns
    (T(y) - mean) / std with T = identity or log1p, and serving maps its output back."""
    if spec.label_transform == "log":
        if label.min is None or label.min < 0:
            raise SchemaError(f"transform: label_transform log needs a non-negative label; "
                              f"{spec.label!r} has {label.min} in train")
        logged = np.log1p(label.sample.values)
        mean, std = float(logged.mean()), float(logged.std())
    else:
        mean, std = float(label.mean), float(label.std or 0.0)
    return {"transform": spec.label_transform, "mean": mean, "std": std or 1.0,
            "raw_mean": float(label.mean), "raw_std": float(label.std or 0.0),
            "min": float(label.min), "max": float(label.max)}


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
            broken = pc.or_(pc.invert(pc.is_finite(column)),
                            pc.greater(pc.abs(column), FLOAT32_MAX))
            bad += pc.sum(broken).as_py() or 0
            examples.update(pc.filter(column, broken).to_pylist()[:3])
        if bad:
            raise SchemaError(
                f"transform: the regression label {spec.label!r} is NaN, infinite or beyond float32's "
                f"range (|y| > {FLOAT32_MAX:.3g}) in {bad} of {rows} rows of split {split!r} "
                f"(e.g. {sorted(map(str, examples))}); a label must be a finite number a model "
                "can hold, or NULL: filter, fix or rescale those rows in the query")


def _numeric(f, s: ColumnStatistics) -> dict[str, Any]:
    if not s.finite:
        raise SchemaError(f"transform: numeric feature {f.name!r} has no finite value in train")
    if max(abs(s.min), abs(s.max)) > FLOAT32_MAX:
        raise SchemaError(f"transform: numeric feature {f.name!r} has values beyond float32's "
                          f"range in train (min {s.min:g}, max {s.max:g}); the model takes float32: "
                          "rescale it in the query (e.g. divide by 1e30)")
    impute = {"mean": s.mean, "median": s.quantile(0.5), "zero": 0.0}.get(f.impute, f.impute)
    out = {"kind": "numeric", "transform": f.transform, "impute": float(impute),
           "mean": s.mean, "std": s.std or 1.0, "min": s.min, "max": s.max}
    if f.transform == "bucketize":
        qs = np.linspace(0, 1, f.buckets + 1)[1:-1]
        out["boundaries"] = sorted({float(s.quantile(q)) for q in qs})
    if f.transform == "log":  # z-score the logged values (from the sample, imputed rows too)
        logged = np.log1p(np.maximum(s.sample.values - s.min, 0.0))
        out["log_mean"] = float(logged.mean())
        out["log_std"] = float(logged.std()) or 1.0
    return out


def _datetime(f, s: ColumnStatistics, days: ColumnStatistics) -> dict[str, Any]:
    if not days.finite:
        raise SchemaError(f"transform: datetime feature {f.name!r} has no value in train")
    parts = f.parts or (["days", "month", "weekday"]
                        + (["hour"] if s.type == "timestamp" else []))
    return {"kind": "datetime", "dtype": s.type, "parts": parts, "days_mean": days.mean,
            "days_std": days.std or 1.0, "min": str(s.min), "max": str(s.max)}


def _categorical(f, s: ColumnStatistics, ctype: str) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "categorical", "dtype": ctype, "encoding": f.encoding}
    if f.encoding == "hash":
        out["hash_buckets"] = f.hash_buckets
        return out
    counts = s.values or {}
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    top = ranked[: f.top_k or DEFAULT_TOP_K]
    # The model sees integers (bool: 1/0) as their decimal strings.
    word = (lambda v: "1" if v else "0") if ctype == "bool" else str
    out.update(vocabulary=[word(v) for v, _ in top], oov_buckets=f.oov_buckets,
               truncated=bool(s.truncated), distinct_seen=len(counts),
               rows_out_of_vocabulary=int(sum(c for _, c in ranked[len(top):])))
    if not top:
        raise SchemaError(f"transform: categorical feature {f.name!r} has no value in train")
    return out


def describe(fitted: Fitted) -> str:
    spec = fitted.spec
    lines = [f"fitted on {fitted.rows} rows; label {spec.label!r} ({spec.task}"
             + (f": {spec.why['task']}" if spec.why.get("task") else "") + ")"
             + (f", classes {fitted.label_classes}" if fitted.label_classes else "")]
    if fitted.label_stats:
        ls = fitted.label_stats
        lines.append(f"  label: {ls.get('transform', 'none')} then standardized (mean "
                     f"{ls['mean']:.4g}, std {ls['std']:.4g})"
                     + (f": {spec.why['label']}" if spec.why.get("label") else ""))
    for name, f in fitted.features.items():
        shown = name if f.get("input", name) == name else f"{name} (input {f['input']})"
        if f["kind"] == "numeric":
            line = (f"{f['transform']}, mean {f['mean']:.4g}, std {f['std']:.4g}, "
                    f"NULL -> {f['impute']:.4g}")
        elif f["kind"] == "datetime":
            line = f"{f['dtype']} -> {', '.join(f['parts'])} ({f['min']} .. {f['max']})"
        elif f["encoding"] == "vocabulary":
            line = f"vocabulary of {len(f['vocabulary'])} + {f['oov_buckets']} OOV"
            if f.get("rows_out_of_vocabulary"):
                line += f" ({f['rows_out_of_vocabulary']} train rows out of vocabulary)"
        else:
            line = f"hashed into {f['hash_buckets']} buckets"
        why = spec.features[name].why if name in spec.features else ""
        lines.append(f"  {shown}: {line}" + (f"  [{why}]" if why else ""))
    for name, reason in spec.excluded.items():
        lines.append(f"  {name}: left out: {reason}")
    return "\n".join(lines)
