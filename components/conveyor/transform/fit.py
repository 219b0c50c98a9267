"""Fit the preprocessing of a feature spec on a Dataset's train split, in one streaming pass.

The result (`Fitted`) is plain data, written as `transform.json` (readable: means, deviations,
bucket boundaries, vocabularies, label classes) beside `feature_spec.yaml`. `conveyor.train`
builds the Keras preprocessing layers from it, inside the exported model, so serving computes
features exactly as training did. Fitting needs no TensorFlow.

**From validate's statistics, no pass at all.** Given the statistics validate wrote for the same
Dataset (`DatasetStatistics`, `statistics.json`: every split, every column), `fit` reads no row:
the train split's column statistics serve the fit (a date or timestamp column's day-number mean
and deviation included), the other splits' label value counts the unseen-class check, their NaN
and +-inf counts and range the finite-label check. They are the same figures a pass over the
rows computes (the same streaming code; the same value sample when validate read the rows, so
bucket boundaries are identical; another uniform sample when its statistics came from BigQuery).
Where they cannot serve, that part is read from the rows, with a line saying why: statistics of
another Dataset (the fingerprint, over the schema and every split's rows, differs), a split or
column they lack, a label whose value counts were truncated, statistics written by an older
conveyor without day-number moments or int64 value counts.
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
from conveyor.model.layout import SPEC_FILE, TRANSFORM_FILE
from conveyor.stats.columns import (
    MAX_TRACKED_VALUES,
    NUMERIC,
    TEMPORAL,
    ColumnStatistics,
    DatasetStatistics,
    SplitStatistics,
)
from conveyor.transform import features as fit_feature
from conveyor.transform.spec import DATETIME_TYPES, FLOAT32_MAX, MAX_CLASSES, FeatureSpec
from conveyor.validate.labels import ClassCounts

FORMAT = "conveyor.transform/v1"
DAYS = "::days"  # suffix of a date column's day-number statistics in `column_statistics`


@dataclasses.dataclass
class Fitted:
    spec: FeatureSpec
    features: dict[str, dict[str, Any]]  # per feature: what preprocessing needs, readable
    label_classes: list | None  # classification: the classes, in output order
    rows: int
    dataset_fingerprint: str = ""
    #: regression: mean and std of the label as trained (after `transform`: none or log), and
    #: `raw_mean` (the train mean in label units: the naive reference's prediction) and
    #: `raw_median` (the train median: evaluate's robust reference)
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
    def load(cls, folder: str | Path) -> Fitted:
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


def matching_statistics(dataset: Dataset, statistics: DatasetStatistics | None
                        ) -> DatasetStatistics | None:
    """`statistics` if they describe this Dataset (their fingerprint is the Dataset's: same schema,
    same rows in every split), else None with a line saying why the rows will be read."""
    if statistics is None:
        return None
    mine = dataset.info.fingerprint
    if not statistics.fingerprint or statistics.fingerprint != mine:
        _reading("every split", f"the statistics given are not of this Dataset "
                 f"({dataset.path}): their dataset fingerprint is "
                 f"{statistics.fingerprint or 'missing'!r}, the Dataset's {mine!r}")
        return None
    return statistics


def _reading(split: str, why: str) -> None:
    print(f"transform: reading the rows of {split if split == 'every split' else repr(split)}"
          f" instead of the statistics: {why}", flush=True)


def _split_of(dataset: Dataset, statistics: DatasetStatistics, split: str
              ) -> tuple[SplitStatistics | None, str]:
    """The statistics of `split`, or None and why they cannot serve."""
    if split not in statistics.splits:
        return None, (f"they have no split {split!r} (they have: "
                      f"{', '.join(statistics.splits) or 'none'})")
    s = statistics.splits[split]
    rows = dataset.split(split).rows
    if s.rows != rows:
        return None, f"they count {s.rows} rows in split {split!r}, the Dataset {rows}"
    return s, ""


def _unusable(c: ColumnStatistics | None, name: str, ctype: str, fit: bool = True,
              exact_values: bool = False) -> str:
    """Why a column's statistics cannot stand in for a pass over it, or ''. `fit`: all the
    figures fitting takes; `exact_values`: every value counted (a label's classes)."""
    if c is None:
        return f"they have no column {name!r}"
    if c.type != ctype:
        return f"column {name!r} is {c.type} in them, {ctype} in the Dataset"
    if fit and c.kind == TEMPORAL and c.count and c.finite != c.count:
        return (f"they have no day-number mean and deviation of {ctype} column {name!r} "
                "(written by an older conveyor)")
    if fit and c.kind == NUMERIC and c.finite and c.sample is None:
        return f"they have no value sample of column {name!r}"
    if ((fit and ctype == "int64") or exact_values) and c.values is None:
        return (f"they have no value counts of {ctype} column {name!r} (written by an older "
                "conveyor, which kept them only up to 1,000 values)")
    if exact_values and c.truncated:
        return (f"the value counts of label {name!r} are truncated (more than "
                f"{MAX_TRACKED_VALUES:,} distinct values), so they may miss classes")
    return ""


def statistics_of_split(dataset: Dataset, statistics: DatasetStatistics | None, split: str,
                        columns: list[str], exact_values: tuple[str, ...] = ()
                        ) -> tuple[int, dict[str, ColumnStatistics]] | None:
    """What `column_statistics(dataset, split, columns)` computes (the `<name>::days` entries of
    date and timestamp columns included: count, mean and deviation of the day numbers, and
    their sample), taken from `statistics` (validate's, already checked by
    `matching_statistics`) without reading a row; None, with a line saying why, when they
    cannot serve. `exact_values` names columns whose value counts must be complete."""
    if statistics is None:
        return None
    types = {c.name: c.type for c in dataset.info.columns}
    s, why = _split_of(dataset, statistics, split)
    if s is not None:
        for n in columns:
            why = _unusable(s.columns.get(n), n, types[n], exact_values=n in exact_values)
            if why:
                break
    if why or s is None:  # no split statistics always come with why
        _reading(split, why)
        return None
    out = {n: s.columns[n] for n in columns}
    for n in columns:
        if types[n] in DATETIME_TYPES:
            c = s.columns[n]
            out[n + DAYS] = ColumnStatistics(n + DAYS, "float64", count=c.count, nulls=c.nulls,
                                             mean=c.mean, m2=c.m2, finite=c.finite,
                                             sample=c.sample)
    return s.rows, out


def day_numbers(column) -> pa.Array:
    """Days since 1970-01-01 (fractional for timestamps) of a date or timestamp column."""
    if pa.types.is_date(column.type):
        return column.cast(pa.date32()).cast(pa.int32()).cast(pa.float64())
    micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).cast(pa.float64())
    return pc.divide(micros, 86_400e6)


def fit(dataset: Dataset, spec: FeatureSpec, train_split: str = "train",
        stats: tuple[int, dict[str, ColumnStatistics]] | None = None,
        statistics: DatasetStatistics | None = None) -> Fitted:
    """Fit `spec`'s preprocessing on `train_split`; check the other splits' label classes (a
    regression label: that it is finite in every split).
    `stats` (from `column_statistics` of the same split) saves the pass over the train rows;
    `statistics` (validate's, of this Dataset: see the module docstring) save every pass, and
    what they cannot serve is read from the rows, with a line saying why."""
    types = {c.name: c.type for c in dataset.info.columns}
    spec.check_columns(types)
    if train_split not in dataset.splits:
        raise InputError(f"transform: the dataset has no {train_split!r} split "
                         f"(splits: {', '.join(dataset.splits)})")
    statistics = matching_statistics(dataset, statistics)
    columns = [*spec.features, spec.label]
    read: list[str] = []  # splits whose rows were read here
    given = stats is not None and all(n in stats[1] for n in columns)
    if stats is None or not given:
        exact = (spec.label,) if spec.task != "regression" else ()
        stats = statistics_of_split(dataset, statistics, train_split, columns, exact)
        if stats is None:
            stats = column_statistics(dataset, train_split, columns)
            read.append(train_split)
    rows, stats_ = stats
    label = stats_[spec.label]
    if label.count == 0:
        raise EmptyDataError(f"transform: split {train_split!r} has no row with a label "
                             f"({rows} rows, label {spec.label!r} NULL in all)")
    classes = None
    if spec.task != "regression":  # the classes of every split (conveyor.validate.labels)
        table, more = table_label_counts(dataset, spec.label, train_split,
                                         dict(label.values or {}), statistics)
        read += more
        classes = _label_classes(spec, table)
    else:
        read += _check_finite_labels(dataset, spec, statistics)
    features = {}
    for name, f in spec.features.items():
        if f.kind == "numeric":
            features[name] = fit_feature.numeric(f, stats_[name])
        elif f.kind == "datetime":
            features[name] = fit_feature.datetime(f, stats_[name], stats_[name + DAYS])
        else:
            features[name] = fit_feature.categorical(f, stats_[name], types[name])
        features[name]["input"] = f.input_name
    label_stats, counts = None, None
    if classes is None:  # a regression label
        label_stats = _label_scale(spec, label)
    else:
        counts = [int((label.values or {}).get(c, 0)) for c in classes]
    if statistics is not None:
        print("transform: fitted on the statistics given" + (
            f"; read the rows of split(s) {', '.join(dict.fromkeys(read))}" if read
            else ", with the train statistics passed in" if given
            else f": no row read ({len(dataset.splits)} splits)"), flush=True)
    return Fitted(spec, features, classes, rows, dataset.info.fingerprint, label_stats, counts)


def _label_scale(spec: FeatureSpec, label: ColumnStatistics) -> dict[str, Any]:
    """How the regression label is scaled for training: the model learns
    (T(y) - mean) / std with T = identity or log1p, and serving maps its output back."""
    # `_check_finite_labels` refused a train split without a finite label: its figures are set
    assert label.mean is not None
    if spec.label_transform == "log":
        if label.min is None or label.min < 0:
            raise SchemaError(f"transform: label_transform log needs a non-negative label; "
                              f"{spec.label!r} has {label.min} in train")
        logged = np.log1p(label.sampled().values)
        mean, std = float(logged.mean()), float(logged.std())
    else:
        mean, std = float(label.mean), float(label.std or 0.0)
    return {"transform": spec.label_transform, "mean": mean, "std": std or 1.0,
            "raw_mean": float(label.mean), "raw_std": float(label.std or 0.0),
            # evaluate's second naive reference, which a few extreme labels cannot drag
            "raw_median": label.quantile(0.5),
            "min": float(label.min), "max": float(label.max)}


def _label_classes(spec: FeatureSpec, counts: ClassCounts) -> list:
    """The label's classes: those of every split, so that where a rare class's rows land
    decides nothing. A class no train row has gets an output the model learns never to give
    (evaluate counts its rows as misses); one a random split would not have left out of train
    is refused (`ClassCounts.not_by_chance`)."""
    train = counts.train
    seen = [c for c in counts.per_split.get(train, {}) if counts.in_train(c)]
    refused = counts.not_by_chance()
    if refused:
        split = next(s for s, n in counts.per_split.items()
                     if s != train and any(n.get(v) for v in refused))
        shown = sorted((v for v in refused if counts.per_split[split].get(v)), key=str)
        raise SchemaError(
            f"transform: split {split!r} has label class(es) {shown[:10]} of {spec.label!r} not "
            f"seen in {train!r} (classes: {_ordered(seen)[:20]}): {counts.refusal(refused[0])}")
    classes = _ordered(counts.classes)
    where = f"in the table ({len(seen)} in {train!r})" if len(seen) != len(classes) else \
        f"in {train!r}"
    if spec.task == "binary" and len(classes) != 2:
        raise SchemaError(f"transform: a binary label needs exactly 2 classes; {spec.label!r} has "
                          f"{len(classes)} {where}: {classes[:10]}")
    if spec.task == "multiclass" and not 2 <= len(classes) <= MAX_CLASSES:
        raise SchemaError(f"transform: a multiclass label needs 2 to {MAX_CLASSES} classes; "
                          f"{spec.label!r} has {len(classes)} {where}")
    unseen = counts.unseen()
    if unseen:
        print(f"transform: label class(es) {_ordered(unseen)[:10]} of {spec.label!r} have no row "
              f"in {train!r} ({'; '.join(counts.where(v) for v in unseen[:3])}): the model gets "
              "an output for each and learns never to give it; evaluate counts their rows as "
              "misses", flush=True)
    return classes


def _ordered(values) -> list:
    return sorted(values, key=lambda v: (str(type(v)), v))


def _served(dataset: Dataset, statistics: DatasetStatistics | None, split: str, column: str,
            exact_values: bool = False) -> ColumnStatistics | None:
    """The statistics of `column` in `split` when they can stand in for reading it, else None
    (with a line saying why, when statistics were given)."""
    if statistics is None:
        return None
    s, why = _split_of(dataset, statistics, split)
    if s is not None:
        ctype = next(c.type for c in dataset.info.columns if c.name == column)
        why = _unusable(s.columns.get(column), column, ctype, fit=False,
                        exact_values=exact_values)
    if why or s is None:  # no split statistics always come with why
        _reading(split, why)
        return None
    return s.columns[column]


def table_label_counts(dataset: Dataset, label: str, train: str, train_counts: dict,
                       statistics: DatasetStatistics | None = None
                       ) -> tuple[ClassCounts, list[str]]:
    """Rows per label class in every split (train's are `train_counts`; the others' come from
    their label's value counts in `statistics`, else from their rows), and the splits read."""
    per_split: dict[str, dict] = {train: train_counts}
    read = []
    for split in dataset.splits:
        if split == train:
            continue
        served = _served(dataset, statistics, split, label, exact_values=True)
        if served is not None:
            per_split[split] = dict(served.values or {})
            continue
        read.append(split)
        found: dict = {}
        for batch in dataset.iter_batches(split, columns=[label]):
            for item in pc.value_counts(pc.drop_null(batch.column(0))).to_pylist():
                found[item["values"]] = found.get(item["values"], 0) + item["counts"]
        per_split[split] = found
    return ClassCounts(per_split, train), read


def _check_finite_labels(dataset: Dataset, spec: FeatureSpec,
                         statistics: DatasetStatistics | None = None) -> list[str]:
    """A regression label of NaN or +-inf would make the loss NaN and training learn nothing,
    silently: refuse it in every split (NULL labels are skipped, as rows without a label).
    A split whose statistics count no NaN, no inf and a range within float32 is not read
    (one whose statistics do is read, for the count and examples); the splits read."""
    read = []
    for split in dataset.splits:
        served = _served(dataset, statistics, split, spec.label)
        if served is not None and not (
                served.nan or served.inf or (served.finite and max(
                    abs(served.min), abs(served.max)) > FLOAT32_MAX)):
            continue
        read.append(split)
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
                f"transform: the regression label {spec.label!r} is NaN, infinite or beyond "
                f"float32's range (|y| > {FLOAT32_MAX:.3g}) in {bad} of {rows} rows of split "
                f"{split!r} "
                f"(e.g. {sorted(map(str, examples))}); a label must be a finite number a model "
                "can hold, or NULL: filter, fix or rescale those rows in the query")
    return read


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
            if f.get("categories"):
                line += "; also a category: " + _vocabulary_line(f["categories"])
            if f.get("period"):
                line += f"; sin/cos on a cycle of {f['period']:g}"
        elif f["kind"] == "datetime":
            line = f"{f['dtype']} -> {', '.join(f['parts'])} ({f['min']} .. {f['max']})" + (
                f"; sin/cos of {', '.join(f['cyclic'])}" if f.get("cyclic") else "")
        elif f["encoding"] == "vocabulary":
            line = _vocabulary_line(f)
        else:
            line = f"hashed into {f['hash_buckets']} buckets"
        why = spec.features[name].why if name in spec.features else ""
        lines.append(f"  {shown}: {line}" + (f"  [{why}]" if why else ""))
    for name, reason in spec.excluded.items():
        lines.append(f"  {name}: left out: {reason}")
    return "\n".join(lines)


def _vocabulary_line(f: dict[str, Any]) -> str:
    line = f"vocabulary of {len(f['vocabulary'])} + {f['oov_buckets']} OOV"
    if f.get("min_count", 1) > 1:
        line += f" (values seen >= {f['min_count']} times)"
    if f.get("rows_out_of_vocabulary"):
        line += f" ({f['rows_out_of_vocabulary']} train rows out of vocabulary)"
    return line
