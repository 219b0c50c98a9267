"""Column names that are not keywords can still break export: every name that could collide
with something in the generated serving function (`self`, its parameter and locals, keywords,
soft keywords, builtins, a leading `_`, names equal in another case or after mapping) is mapped
to a distinct, safe model input. A generated corpus goes through a real (small) train and export
and the exported signature answers for every column; any error building or exporting a model
is a `TrainingError` (bad input: not retried), not a transient one."""

from __future__ import annotations

import builtins
import json
import keyword
import shutil

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import fit_transform, train_model, write_dataset
from support.models import assert_signature_serves

from conveyor.errors import InputError, TrainingError
from conveyor.transform.names import INPUT_NAME, SERVING_NAMES, reserved
from conveyor.transform.propose import propose_spec
from conveyor.transform.spec import FeatureSpec


def corpus() -> list[str]:
    """Awkward column names, generated: every keyword and soft keyword, the serving function's
    own names, a spread of builtins, and around them names equal in another case, after
    mapping (space, dash, accent) or but for a leading `_` or digit."""
    bases = sorted({*keyword.kwlist, *keyword.softkwlist, *SERVING_NAMES,
                    *[b for b in dir(builtins) if not b.startswith("__")][::6],
                    "__class__", "__init__", "__call__"})
    names = list(bases)
    for base in ["self", "value", "id", "type", "from", "features", "x", "hidden_3", "logits"]:
        names += [base.upper(), base.title(), f"_{base}", f"{base} ", f"{base}-", f"1{base}",
                  f"{base}_", f"{base}_2", f"é{base}", f"e{base}"]
    names += ["a b", "a_b", "a-b", "A_B", "d", "d_month", "", "_", "__", "0", "ß", "ss"]
    seen, out = set(), []
    for n in names:  # distinct column names (a table cannot hold two of one name)
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


def proposed_inputs(columns: list[str]) -> dict[str, str]:
    spec = propose_spec({c: "float64" for c in columns} | {"y": "float64"}, "y")
    return {c: f.input_name for c, f in spec.features.items()}


def check_inputs(inputs: dict[str, str]) -> None:
    for column, name in inputs.items():
        assert INPUT_NAME.match(name) and not reserved(name), (column, name)
    folded = [n.casefold() for n in inputs.values()]
    assert len(set(folded)) == len(folded), inputs


def test_the_corpus_maps_to_distinct_safe_inputs():
    columns = corpus()
    inputs = proposed_inputs([c for c in columns if c != "y"])
    check_inputs(inputs)
    # a column keeping its own name claims it: `self_` is a column here, so `self` yields
    assert inputs["self_"] == "self_" and inputs["self"] == "self__2"
    assert inputs["_x"] == "f_x" and inputs["a_b"] == "a_b" and inputs["A_B"] == "A_B_2"
    assert proposed_inputs(["self", "_x"]) == {"self": "self_", "_x": "f_x"}
    # builtins and ordinary words keep their names: requests use the column names
    assert proposed_inputs(["id", "type", "value", "name"]) == {
        "id": "id", "type": "type", "value": "value", "name": "name"}
    assert proposed_inputs(["prediction", "hidden_0"]) == {
        "prediction": "prediction_", "hidden_0": "hidden_0_"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=12, unique=True))
def test_any_set_of_column_names_maps_to_distinct_safe_inputs(columns):
    columns = [c for c in columns if c != "y"]
    if columns:
        check_inputs(proposed_inputs(columns))


def test_a_written_spec_is_refused_for_a_reserved_or_case_clashing_input():
    with pytest.raises(InputError, match="'self' is not a valid model input name"):
        FeatureSpec.from_dict({"label": "y", "task": "regression", "features": {
            "s": {"kind": "numeric", "input": "self"}}})
    with pytest.raises(InputError, match="inputs must differ in more than case"):
        FeatureSpec.from_dict({"label": "y", "task": "regression", "features": {
            "A": {"kind": "numeric"}, "a": {"kind": "numeric"}}})


def small_train(tmp_path, columns: list[str], edit=None):
    """A real (tiny) train and export of a regression on `columns`, with a date `d` too."""
    rng = np.random.default_rng(0)
    rows = 160
    data = {c: rng.normal(size=rows) for c in columns}
    data["y"] = sum(data.values()) + rng.normal(size=rows)
    ds = write_dataset(tmp_path / "ds", pa.table(data))
    fit_transform(ds, tmp_path / "t", label="y", values=None)
    if edit:
        edit(tmp_path / "t")
    train_model(ds, tmp_path / "t", tmp_path / "model", hparams={"epochs": 1, "batch_size": 64})
    return ds


@pytest.mark.slow
def test_the_corpus_trains_exports_and_serves(tmp_path):
    from conveyor.model.layout import ASSETS_EXTRA
    from conveyor.transform.fit import Fitted

    columns = [c for c in corpus() if c != "y"]
    ds = small_train(tmp_path, columns)
    model = tmp_path / "model"
    assert sorted(Fitted.load(model / ASSETS_EXTRA).features) == sorted(columns)
    assert_signature_serves(model, ds, batch_size=32)


@pytest.mark.slow
def test_an_error_exporting_the_model_is_bad_input_not_transient(tmp_path):
    """A transform written before inputs were mapped (no `input`: the column's own name) with a
    column `self`: export fails on it. A TrainingError (an InputError, not retried) naming the
    inputs, no partial model left."""
    def unmapped(folder):
        path = folder / "transform.json"
        data = json.loads(path.read_text())
        for f in data["features"].values():
            f.pop("input", None)
        path.write_text(json.dumps(data))

    with pytest.raises(TrainingError, match=r"exporting the model failed .*'self'"):
        small_train(tmp_path, ["self", "x"], edit=unmapped)
    assert not (tmp_path / "model").exists()
    assert not (tmp_path / "model.partial").exists()
    shutil.rmtree(tmp_path / "ds")
