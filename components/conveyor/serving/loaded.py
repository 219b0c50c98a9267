"""One loaded model version: its serving signature, and a request's JSON turned into the tensors
it takes (row or columnar format), with errors that name the input and the value.

`conveyor.serving.models` loads, polls and swaps these versions.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import reprlib
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.model.layout import ASSETS_EXTRA, TRANSFORM_FILE
from conveyor.serving import MAX_INSTANCES
from conveyor.serving.log_format import Signature

DTYPES = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int64": "DT_INT64", "int32": "DT_INT32",
          "string": "DT_STRING", "bool": "DT_BOOL"}


class _Short(reprlib.Repr):
    """Values quoted in error messages, cut short: a request may hold megabytes, deep nesting
    or integers of thousands of digits."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlist, self.maxdict = 2, 60, 60, 4, 4

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() <= 128:
            return repr(x)
        return f"<an integer of {int(x.bit_length() * math.log10(2)) + 1} digits>"


_SHORT = _Short()


def _show(value: Any) -> str:
    return _SHORT.repr(value)


def _names(names: list[str]) -> str:
    shown = ", ".join(_show(n) for n in names[:5])
    return f"[{shown}{', ...' if len(names) > 5 else ''}]"


class RequestError(ValueError):
    """A request the model cannot take; the message names the input and what was expected."""


class TooManyInstances(RequestError):
    """More rows in one request than the server takes (answered with 413)."""


class Loaded:
    """One version: its serving signature, inputs and outputs."""

    def __init__(self, version: int, path: str):
        import tensorflow as tf

        self.version = version
        self.path = path
        signatures = tf.saved_model.load(path).signatures
        if "serving_default" not in signatures:
            raise ValueError(f"the SavedModel has no 'serving_default' signature (it has "
                             f"{sorted(signatures) or 'none'})")
        self.signature = signatures["serving_default"]
        self.inputs = dict(self.signature.structured_input_signature[1])
        self.outputs = dict(self.signature.structured_outputs)
        self.log_signature = Signature.of(self.inputs, self.outputs)
        self.dates, self.classes = model_facts(path)

    def warm_up(self) -> None:
        """Predict one row of missing values, so the first requests to this version do not pay
        for TensorFlow's first call (~0.1 s, paid by every client at once during a hot swap).
        A model that cannot answer that row (every conveyor model can: missing values are
        imputed) raises, and is not swapped in."""
        self.signature(**{name: self.tensor(name, [None]) for name in self.inputs})

    def metadata(self) -> dict[str, Any]:
        def describe(specs):
            return {name: {"dtype": DTYPES.get(spec.dtype.name, spec.dtype.name),
                           "tensor_shape": {"dim": [{"size": str(-1 if d is None else d)}
                                                    for d in spec.shape]},
                           "name": name} for name, spec in specs.items()}

        return {"signature_def": {"signature_def": {"serving_default": {
            "inputs": describe(self.inputs), "outputs": describe(self.outputs),
            "method_name": "tensorflow/serving/predict"}}}}

    def columns(self, body: dict[str, Any],
                max_instances: int = MAX_INSTANCES) -> tuple[dict[str, list], bool]:
        """The request's values by input, and whether it came in row format."""
        if "instances" in body and "inputs" in body:
            raise RequestError("give either 'instances' (row format) or 'inputs' (columnar), "
                               "not both")
        if "instances" in body:
            rows = body["instances"]
            if not isinstance(rows, list) or not rows:
                raise RequestError("'instances' must be a non-empty list of objects")
            _check_count(len(rows), max_instances)
            columns: dict[str, list] = {name: [] for name in self.inputs}
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise RequestError(f"instances[{i}] must be an object with named inputs, "
                                       f"got {type(row).__name__}")
                unknown = sorted(set(row) - set(self.inputs))
                if unknown:
                    raise RequestError(f"instances[{i}] has unknown input(s) {_names(unknown)}; "
                                       f"the model takes {sorted(self.inputs)}")
                missing = [name for name in self.inputs if name not in row]
                if missing:
                    raise RequestError(f"instances[{i}] is missing input(s) {_names(missing)} "
                                       f"(null for a missing value; the model takes "
                                       f"{sorted(self.inputs)})")
                for name in self.inputs:
                    columns[name].append(row[name])
            return columns, True
        if "inputs" in body:
            inputs = body["inputs"]
            if not isinstance(inputs, dict):
                raise RequestError("'inputs' must be an object mapping input names to lists")
            unknown = sorted(set(inputs) - set(self.inputs))
            if unknown:
                raise RequestError(f"unknown input(s) {_names(unknown)}; the model takes "
                                   f"{sorted(self.inputs)}")
            missing = sorted(set(self.inputs) - set(inputs))
            if missing:
                raise RequestError(f"missing input(s) {_names(missing)} (a list of nulls for "
                                   f"missing values; the model takes {sorted(self.inputs)})")
            lengths = {len(v) if isinstance(v, list) else -1 for v in inputs.values()}
            if -1 in lengths or len(lengths) != 1 or 0 in lengths:
                raise RequestError("every input must be a non-empty list, all of the same length")
            _check_count(lengths.pop(), max_instances)
            return {k: list(v) for k, v in inputs.items()}, False
        raise RequestError("the body needs 'instances' (row format) or 'inputs' (columnar)")

    def tensor(self, name: str, values: list):
        """`values` as the tensor input `name` takes; a value that does not fit is a
        RequestError naming the input and the value's position. null is a missing value (NaN,
        MISSING_INT, ""); JSON true/false go to integer inputs as 1/0 (BOOL columns are int64
        inputs), never to float or string inputs."""
        import tensorflow as tf

        from conveyor.model.inputs import MISSING_INT

        dtype = self.inputs[name].dtype
        if dtype.is_floating:
            top = float(np.finfo(dtype.as_numpy_dtype).max)
            out: list[float] = []
            for i, v in enumerate(values):
                if v is None:
                    out.append(float("nan"))
                    continue
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise RequestError(f"input '{name}' expects numbers; value #{i} is {_show(v)}")
                try:
                    number = float(v)
                except OverflowError:  # an integer beyond float64
                    number = math.inf
                if math.isinf(number) or abs(number) > top:
                    raise RequestError(f"input '{name}' value #{i} is {_show(v)}: outside the "
                                       f"range of {dtype.name} (finite numbers only; null or "
                                       f"NaN for a missing value)")
                out.append(number)
            return tf.constant(np.asarray(out, dtype=dtype.as_numpy_dtype))
        if dtype.is_integer:
            bounds = np.iinfo(dtype.as_numpy_dtype)
            ints: list[int] = []
            for i, v in enumerate(values):
                if v is None:
                    ints.append(MISSING_INT)
                elif isinstance(v, bool):  # a BOOL column is an int64 input: true 1, false 0
                    ints.append(int(v))
                elif not isinstance(v, int):
                    raise RequestError(f"input '{name}' expects integers; value #{i} is "
                                       f"{_show(v)}")
                elif not bounds.min <= v <= bounds.max:
                    raise RequestError(f"input '{name}' value #{i} is {_show(v)}: outside the "
                                       f"range of {dtype.name}")
                else:
                    ints.append(v)
            return tf.constant(ints, dtype=dtype)
        texts: list[bytes] = []
        for i, v in enumerate(values):
            if v is None:
                texts.append(b"")
            elif not isinstance(v, str):
                raise RequestError(f"input '{name}' expects strings; value #{i} is {_show(v)}")
            elif name in self.dates and v and not is_iso_moment(v):
                raise RequestError(f"input '{name}' expects an ISO {self.dates[name]} "
                                   f"(YYYY-MM-DD or YYYY-MM-DD HH:MM:SS, UTC); value #{i} is "
                                   f"{_show(v)}, not one (null or \"\" for a missing value)")
            else:
                try:
                    texts.append(v.encode("utf-8"))
                except UnicodeEncodeError:
                    raise RequestError(f"input '{name}' value #{i} is not valid Unicode text "
                                       f"(a lone surrogate such as \\ud800)") from None
        return tf.constant(texts, dtype=tf.string)

    def run(self, columns: dict[str, list]) -> dict[str, np.ndarray]:
        """The serving signature's outputs for `columns` (as `columns` returns them)."""
        outputs = self.signature(**{n: self.tensor(n, v) for n, v in columns.items()})
        return {k: v.numpy() for k, v in outputs.items()}

    def predict(self, body: dict[str, Any],
                max_instances: int = MAX_INSTANCES) -> dict[str, Any]:
        columns, rows = self.columns(body, max_instances)
        lists = {k: plain(v) for k, v in self.run(columns).items()}
        if not rows:
            return {"outputs": lists}
        n = len(next(iter(columns.values())))
        return {"predictions": [{k: v[i] for k, v in lists.items()} for i in range(n)]}


_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def is_iso_moment(text: str) -> bool:
    """Whether `text` is a real calendar date or moment in the form the model reads:
    YYYY-MM-DD, then nothing or ' '/'T' and a valid time ("2023-13-45" and "garbage" are not;
    the model would take them as missing)."""
    if not _ISO_DAY.match(text) or (len(text) > 10 and text[10] not in " T"):
        return False
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def model_facts(path: str) -> tuple[dict[str, str], list[str]]:
    """From the fitted transform conveyor's train writes beside the SavedModel at `path`: the
    inputs that are date or timestamp features ({input: "date" | "timestamp"}) and the label
    classes (classification). Nothing for a SavedModel without one: its string inputs are taken
    as they come, and :classify answers without class names."""
    try:
        data = json.loads((Path(path) / ASSETS_EXTRA / TRANSFORM_FILE).read_text())
        dates = {str(f.get("input", name)): "timestamp" if f.get("dtype") == "timestamp"
                 else "date" for name, f in data["features"].items()
                 if isinstance(f, dict) and f.get("kind") == "datetime"}
        return dates, [str(c) for c in data.get("label_classes") or []]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}, []


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise TooManyInstances(f"{count} instances in one request, more than this server's "
                               f"limit of {limit} (--max-instances); split the request")


def plain(array: np.ndarray) -> list:
    if array.dtype.kind in "SO":
        return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]
    return array.tolist()

