"""The work behind the transform KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

from conveyor.gcp.files import local_copy
from conveyor.io.dataset import Dataset
from conveyor.transform.fit import (
    Fitted,
    column_statistics,
    describe,
    fit,
    matching_statistics,
    statistics_of_split,
    table_label_counts,
)
from conveyor.transform.propose import propose_spec
from conveyor.transform.spec import FeatureSpec


def transform(dataset, preprocessing, **kwargs) -> Fitted:
    """`_transform` under `conveyor.failfast.fail_once`: after an attempt that failed on bad input,
    a retry fails at once with the same error (marker beside the `preprocessing` output)."""
    from conveyor.failfast import fail_once

    with fail_once(preprocessing.path, "transform"):
        return _transform(dataset, preprocessing, **kwargs)


def _transform(dataset, preprocessing, *, label: str = "", task: str = "",
              feature_spec_uri: str = "", train_split: str = "train",
              spec_model_base_path: str = "", statistics=None) -> Fitted:
    """Fit the spec and write the artifact. The spec is `feature_spec_uri`'s; else the one the
    newest version under `spec_model_base_path` was trained with (continuous training keeps
    its features), when it fits this data and `label`; else proposed from the train split's
    statistics and `label` (a proposal and its fit share one pass over the train rows).
    `statistics` (validate's statistics artifact of this Dataset, or a path to it: a folder
    holding statistics.json, or the file) replace every pass over the rows where they can
    (`conveyor.transform.fit`); where they cannot, the rows are read, with a line saying why."""
    from conveyor.errors import InputError

    data = Dataset(dataset.path)
    if train_split not in data.splits:
        raise InputError(f"transform: the dataset has no {train_split!r} split "
                         f"(splits: {', '.join(data.splits)})")
    given = read_statistics(statistics) if statistics is not None else None
    given = matching_statistics(data, given)
    stats, spec = None, None
    types = {c.name: c.type for c in data.info.columns}
    if feature_spec_uri:
        spec = FeatureSpec.load(local_copy(feature_spec_uri, "feature_spec_uri"))
    elif spec_model_base_path:
        spec = served_spec(spec_model_base_path, label, types)
    if spec is None and label:
        if label not in types:
            raise InputError(f"label: {label!r} is not a column of the dataset "
                             f"(columns: {', '.join(types)})")
        served = statistics_of_split(data, given, train_split, list(types))
        stats = served or column_statistics(data, train_split, list(types))
        spec = propose_spec(types, label, _table_values(data, label, train_split, stats[1], given),
                            task=task or None, stats=stats[1])
        if served:
            stats = None  # fit takes them from `given` again (no row read) and says so
    elif spec is None:
        raise InputError("transform: give feature_spec_uri, or label to propose a spec")
    fitted = fit(data, spec, train_split, stats=stats, statistics=given)
    fitted.write(preprocessing.path)
    preprocessing.metadata.update({"label": spec.label, "task": spec.task,
                                   "features": list(spec.features),
                                   "excluded": dict(spec.excluded),
                                   "label_classes": [str(c) for c in fitted.label_classes or []]})
    print(describe(fitted), flush=True)
    return fitted


def _table_values(data, label: str, train_split: str, train: dict, given) -> dict | None:
    """The label's values counted over every split, so that the task proposed (binary or
    multiclass) does not depend on the split a rare class's rows land in; None when the train
    split's count is truncated or there is none (a float label: regression anyway)."""
    column = train[label]
    if column.values is None or column.truncated:
        return None
    counts, _ = table_label_counts(data, label, train_split, dict(column.values), given)
    return {value: counts.total(value) for value in counts.classes}


def read_statistics(statistics):
    """validate's statistics (`DatasetStatistics`) from its artifact (or a path: a folder
    holding statistics.json, or the file); None, with a line saying why, when they cannot be
    read (the rows are read instead: the statistics only save time)."""
    import json
    from pathlib import Path

    from conveyor.errors import ConveyorError
    from conveyor.model.layout import STATISTICS_FILE
    from conveyor.stats.columns import DatasetStatistics

    path = Path(getattr(statistics, "path", statistics))
    if path.is_dir():
        path = path / STATISTICS_FILE
    try:
        return DatasetStatistics.from_dict(json.loads(path.read_text()), f"statistics {path}")
    except OSError as exc:
        why = f"cannot read {path}: {exc.strerror or exc}"
    except ConveyorError as exc:  # (an InputError is a ValueError too: first)
        why = str(exc)
    except ValueError as exc:
        why = f"{path} is not JSON: {exc}"
    except (KeyError, TypeError, AttributeError) as exc:
        why = f"{path} is incomplete or malformed ({exc!r})"
    print(f"transform: reading the rows instead of the statistics given: {why}", flush=True)
    return None


def served_spec(model_base_path: str, label: str, types: dict[str, str]) -> FeatureSpec | None:
    """The feature spec of the newest version under the base path, if there is one and it
    still fits the data (its label is `label`, its columns exist with their types); else None,
    with a line saying why."""
    import tempfile

    from conveyor.errors import ConveyorError
    from conveyor.model.layout import SPEC_FILE
    from conveyor.registry import served_version

    served = served_version(model_base_path)  # the champion when labelled, else the newest
    if served is None:
        print(f"transform: no version under {model_base_path} yet: proposing a spec", flush=True)
        return None
    uri = served.uri
    with tempfile.TemporaryDirectory(prefix="conveyor-spec-") as scratch:
        try:
            spec = FeatureSpec.load(served.file(SPEC_FILE, scratch))
            if label and spec.label != label:
                raise ConveyorError(f"its label is {spec.label!r}, not {label!r}")
            spec.check_columns(types)
        except ConveyorError as exc:
            print(f"transform: not reusing the spec of {uri} ({exc}): proposing one", flush=True)
            return None
    print(f"transform: reusing the feature spec of the served version {uri}", flush=True)
    return spec
