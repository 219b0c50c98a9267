"""TF Serving's Classify and Regress REST verbs over a conveyor model's predict signature.

    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:regress
    {"context": {"shop": "north"}, "examples": [{"size": 3.0}, {"size": [4.0]}]}

Each example (with the context's features added; a feature in both is an error) is one row of
named inputs; as in tf.Example, a value may be a one-element list, and an empty list is a
missing value. The rows go through the same checks and the same signature as :predict. The
answers are TF Serving's: classify `{"result": [[[class, score], ...], ...]}` with a score per
class (a binary model's classes score 1 - p and p), regress `{"result": [value, ...]}`. A
verb that does not fit the model (classify on a regression model, regress on a classifier) is
a 400 saying which verb does.
"""

from __future__ import annotations

from typing import Any

from conveyor.serving.loaded import RequestError

VERBS = (":classify", ":regress")


def instances(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a Classify or Regress request body, as :predict's `instances`."""
    unknown = sorted(set(body) - {"examples", "context", "signature_name"})
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}: a classify or regress body has "
                           f"'examples' and optionally 'context' and 'signature_name'")
    if body.get("signature_name", "serving_default") not in ("serving_default", ""):
        raise RequestError(f"signature_name {body['signature_name']!r}: this model has only "
                           f"'serving_default'")
    examples, context = body.get("examples"), body.get("context", {})
    if not isinstance(examples, list) or not examples:
        raise RequestError("'examples' must be a non-empty list of objects")
    if not isinstance(context, dict):
        raise RequestError("'context' must be an object of features shared by every example")
    rows = []
    for i, example in enumerate(examples):
        if not isinstance(example, dict):
            raise RequestError(f"examples[{i}] must be an object of features, got "
                               f"{type(example).__name__}")
        both = sorted(set(example) & set(context))
        if both:
            raise RequestError(f"examples[{i}] repeats context feature(s) {both}")
        rows.append({name: _one(value, f"examples[{i}].{name}")
                     for name, value in {**context, **example}.items()})
    return rows


def _one(value: Any, where: str) -> Any:
    """A feature's value: a scalar, or a list of at most one (empty: missing)."""
    if not isinstance(value, list):
        return value
    if len(value) > 1:
        raise RequestError(f"{where} has {len(value)} values; each input takes one per example")
    return value[0] if value else None


def classify(predictions: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """TF Serving's classify answer from :predict's `predictions`."""
    first = predictions[0]
    if "probabilities" in first:
        names = classes or [str(i) for i in range(len(first["probabilities"]))]
        return {"result": [[[c, float(p)] for c, p in zip(names, row["probabilities"])]
                           for row in predictions]}
    if "probability" in first:
        names = classes or ["0", "1"]
        return {"result": [[[names[0], 1.0 - float(row["probability"])],
                            [names[1], float(row["probability"])]] for row in predictions]}
    raise RequestError("this is a regression model: use :regress (or :predict), not :classify")


def regress(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """TF Serving's regress answer from :predict's `predictions`."""
    if "value" not in predictions[0]:
        raise RequestError("this is a classification model: use :classify (or :predict), not "
                           ":regress")
    return {"result": [float(row["value"]) for row in predictions]}
