"""Model input names: the name each column feeds in the serving signature (`input_name`), the
names an input may not take (`reserved`), and distinct inputs for a proposal
(`distinct_inputs`). The rules are told in `conveyor.transform.spec`'s docstring."""

from __future__ import annotations

import keyword
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

#: A model input name: a Python identifier starting with a letter (TensorFlow makes each
#: signature input a function argument and names graph nodes after it; it renames a leading `_`).
INPUT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: Names a model input may not take although they are identifiers: `self` (TensorFlow calls a
#: signature's methods with the inputs as keyword arguments) and the names of the layers
#: `conveyor.train.model` adds after the inputs (a Keras input is a layer named after it, and
#: layer names must be unique). Builtins and the serving function's locals are harmless: a
#: generated corpus of them trains, exports and serves under their own names
#: (tests/transform/test_awkward_input_names.py), so columns such as `id`, `type` or `value` keep
#: their names in requests.
SERVING_NAMES = frozenset({
    "self", "prediction", "logits", "deep_features", "deep_logits", "wide_features",
    "wide_logits", "conveyor_model", "conveyor_user_model"})
_LAYER_NAME = re.compile(r"^hidden_[0-9]+$")


def reserved(name: str) -> bool:
    """A name a model input may not take although it is an identifier (rules:
    `conveyor.transform.spec`): a keyword or soft keyword, `self`, or the name of a layer the
    model adds itself."""
    return (keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in SERVING_NAMES
            or bool(_LAYER_NAME.match(name)))


def input_name(column: str) -> str:
    """The model input a column feeds (rules: `conveyor.transform.spec`): deterministic, case
    kept."""
    if INPUT_NAME.match(column) and not reserved(column):
        return column
    folded = "".join(c if ord(c) < 128 else (_fold(c) or "_") for c in column)
    name = re.sub(r"[^A-Za-z0-9_]", "_", folded)
    if not name or name[0].isdigit():
        name = "f_" + name
    elif name[0] == "_":
        name = "f" + name
    if reserved(name):
        name += "_"
    return name


def distinct_inputs(features: Mapping[str, Any]) -> None:
    """Give each feature without an `input` of its own one that no other feature's input
    equals in any case: columns keeping their own name claim it first, in order; a clashing
    one gets the next free `<input>_2`, `_3`... (a proposal's choice, recorded in the spec)."""
    taken: set[str] = set()
    order = sorted(features.values(), key=lambda f: f.input_name != f.name)
    for f in order:
        base = f.input_name
        candidate, n = base, 1
        while candidate.casefold() in taken or reserved(candidate):
            n += 1
            candidate = f"{base}_{n}"
        if candidate != base:
            f.input = candidate
        taken.add(candidate.casefold())


def _fold(char: str) -> str:
    """One character without its accents, or '' when it has no ASCII letter in it."""
    return unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
