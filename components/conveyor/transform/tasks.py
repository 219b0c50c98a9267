"""The work behind the transform KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

from conveyor.gcp.files import local_copy
from conveyor.io.dataset import Dataset
from conveyor.transform.fit import Fitted, column_statistics, describe, fit
from conveyor.transform.spec import FeatureSpec, propose_spec


def transform(dataset, preprocessing, *, label: str = "", task: str = "",
              feature_spec_uri: str = "", train_split: str = "train") -> Fitted:
    """Fit the spec (given, or proposed from the train split's statistics and `label`) and
    write the artifact. A proposal and its fit share one pass over the train rows."""
    from conveyor.errors import InputError

    data = Dataset(dataset.path)
    if train_split not in data.splits:
        raise InputError(f"transform: the dataset has no {train_split!r} split "
                         f"(splits: {', '.join(data.splits)})")
    stats = None
    if feature_spec_uri:
        spec = FeatureSpec.load(local_copy(feature_spec_uri, "feature_spec_uri"))
    elif label:
        types = {c.name: c.type for c in data.info.columns}
        if label not in types:
            raise InputError(f"label: {label!r} is not a column of the dataset "
                             f"(columns: {', '.join(types)})")
        stats = column_statistics(data, train_split, list(types))
        spec = propose_spec(types, label, task=task or None, stats=stats[1])
    else:
        raise InputError("transform: give feature_spec_uri, or label to propose a spec")
    fitted = fit(data, spec, train_split, stats=stats)
    fitted.write(preprocessing.path)
    preprocessing.metadata.update({"label": spec.label, "task": spec.task,
                                   "features": list(spec.features),
                                   "excluded": dict(spec.excluded),
                                   "label_classes": [str(c) for c in fitted.label_classes or []]})
    print(describe(fitted), flush=True)
    return fitted
