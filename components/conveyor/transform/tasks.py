"""The work behind the transform KFP component, in terms of its artifacts and parameters."""

from __future__ import annotations

from conveyor.gcp.files import local_copy
from conveyor.io.dataset import Dataset
from conveyor.transform.fit import Fitted, describe, fit
from conveyor.transform.spec import FeatureSpec, propose_spec


def transform(dataset, preprocessing, *, label: str = "", task: str = "",
              feature_spec_uri: str = "", train_split: str = "train") -> Fitted:
    """Fit the spec (given, or proposed from the schema and `label`) and write the artifact."""
    from conveyor.errors import InputError

    data = Dataset(dataset.path)
    if feature_spec_uri:
        spec = FeatureSpec.load(local_copy(feature_spec_uri, "feature_spec_uri"))
    elif label:
        types = {c.name: c.type for c in data.info.columns}
        label_values = None
        if types.get(label) in ("string", "int64", "bool"):
            import pyarrow.compute as pc

            values: set = set()
            for batch in data.iter_batches(train_split, columns=[label]):
                values.update(pc.unique(pc.drop_null(batch.column(0))).to_pylist())
            label_values = {v: 1 for v in values}
        spec = propose_spec(types, label, label_values, task or None)
    else:
        raise InputError("transform: give feature_spec_uri, or label to propose a spec")
    fitted = fit(data, spec, train_split)
    fitted.write(preprocessing.path)
    preprocessing.metadata.update({"label": spec.label, "task": spec.task,
                                   "features": list(spec.features),
                                   "label_classes": [str(c) for c in fitted.label_classes or []]})
    print(describe(fitted), flush=True)
    return fitted
