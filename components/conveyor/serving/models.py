"""Loaded model versions, polled from a model base path and swapped in without dropping requests.

`ModelManager` polls the base path (local or gs://, published versions only) and loads a new
version in the background; requests already running keep the version they started with, new ones
get the new one. The previous version stays loaded so `/versions/{v}` requests to it still work.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from typing import Any

import numpy as np

from conveyor.push.base_path import ModelBasePath

log = logging.getLogger("conveyor.serve")
KEEP = 2  # versions kept loaded
DTYPES = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int64": "DT_INT64", "int32": "DT_INT32",
          "string": "DT_STRING", "bool": "DT_BOOL"}


class RequestError(ValueError):
    """A request the model cannot take; the message names the input and what was expected."""


class Loaded:
    """One version: its serving signature, inputs and outputs."""

    def __init__(self, version: int, path: str):
        import tensorflow as tf

        self.version = version
        self.path = path
        self.signature = tf.saved_model.load(path).signatures["serving_default"]
        self.inputs = dict(self.signature.structured_input_signature[1])
        self.outputs = dict(self.signature.structured_outputs)

    def metadata(self) -> dict[str, Any]:
        def describe(specs):
            return {name: {"dtype": DTYPES.get(spec.dtype.name, spec.dtype.name),
                           "tensor_shape": {"dim": [{"size": str(-1 if d is None else d)}
                                                    for d in spec.shape]},
                           "name": name} for name, spec in specs.items()}

        return {"signature_def": {"signature_def": {"serving_default": {
            "inputs": describe(self.inputs), "outputs": describe(self.outputs),
            "method_name": "tensorflow/serving/predict"}}}}

    def columns(self, body: dict[str, Any]) -> tuple[dict[str, list], bool]:
        """The request's values by input, and whether it came in row format."""
        if "instances" in body:
            rows = body["instances"]
            if not isinstance(rows, list) or not rows:
                raise RequestError("'instances' must be a non-empty list of objects")
            columns: dict[str, list] = {name: [] for name in self.inputs}
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise RequestError(f"instances[{i}] must be an object with named inputs, "
                                       f"got {type(row).__name__}")
                unknown = sorted(set(row) - set(self.inputs))
                if unknown:
                    raise RequestError(f"instances[{i}] has unknown input(s) {unknown}; the model "
                                       f"takes {sorted(self.inputs)}")
                for name in self.inputs:
                    if name not in row:
                        raise RequestError(f"instances[{i}] is missing input '{name}'")
                    columns[name].append(row[name])
            return columns, True
        if "inputs" in body:
            inputs = body["inputs"]
            if not isinstance(inputs, dict):
                raise RequestError("'inputs' must be an object mapping input names to lists")
            unknown = sorted(set(inputs) - set(self.inputs))
            if unknown:
                raise RequestError(f"unknown input(s) {unknown}; the model takes "
                                   f"{sorted(self.inputs)}")
            missing = sorted(set(self.inputs) - set(inputs))
            if missing:
                raise RequestError(f"missing input(s) {missing}")
            lengths = {len(v) if isinstance(v, list) else -1 for v in inputs.values()}
            if -1 in lengths or len(lengths) != 1 or 0 in lengths:
                raise RequestError("every input must be a non-empty list, all of the same length")
            return {k: list(v) for k, v in inputs.items()}, False
        raise RequestError("the body needs 'instances' (row format) or 'inputs' (columnar)")

    def tensor(self, name: str, values: list):
        import tensorflow as tf

        from conveyor.train.preprocess import MISSING_INT

        dtype = self.inputs[name].dtype
        if dtype.is_floating:
            out = []
            for i, v in enumerate(values):
                if v is None:
                    out.append(float("nan"))
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.append(float(v))
                else:
                    raise RequestError(f"input '{name}' expects numbers; value #{i} is {v!r}")
            return tf.constant(np.asarray(out, dtype=dtype.as_numpy_dtype))
        if dtype.is_integer:
            out = []
            for i, v in enumerate(values):
                if v is None:
                    out.append(MISSING_INT)
                elif isinstance(v, int) and not isinstance(v, bool):
                    out.append(v)
                else:
                    raise RequestError(f"input '{name}' expects integers; value #{i} is {v!r}")
            return tf.constant(out, dtype=dtype)
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, str):
                raise RequestError(f"input '{name}' expects strings; value #{i} is {v!r}")
        return tf.constant(["" if v is None else v for v in values], dtype=tf.string)

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        columns, rows = self.columns(body)
        outputs = self.signature(**{n: self.tensor(n, v) for n, v in columns.items()})
        plain = {k: _plain(v.numpy()) for k, v in outputs.items()}
        if not rows:
            return {"outputs": plain}
        n = len(next(iter(columns.values())))
        return {"predictions": [{k: v[i] for k, v in plain.items()} for i in range(n)]}


def _plain(array: np.ndarray) -> list:
    if array.dtype.kind in "SO":
        return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]
    return array.tolist()


class ModelManager:
    def __init__(self, base_path: str, name: str, poll_seconds: float = 2.0,
                 cache_dir: str | None = None):
        self.base = ModelBasePath(base_path)
        self.name = name
        self.poll_seconds = poll_seconds
        self.cache = cache_dir or tempfile.mkdtemp(prefix="conveyor-serve-")
        self.loaded: dict[int, Loaded] = {}
        self.current: Loaded | None = None
        self.errors: dict[int, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.on_load = lambda loaded: None

    def poll_once(self) -> None:
        try:
            latest = self.base.latest()
        except Exception as exc:  # noqa: BLE001  (a poll failing must not stop serving)
            log.warning("polling %s failed: %s", self.base.uri, exc)
            return
        if latest is None or latest in self.loaded or latest in self.errors:
            return
        try:
            loaded = Loaded(latest, str(self.base.fetch(latest, self.cache)))
        except Exception as exc:  # noqa: BLE001
            self.errors[latest] = f"{type(exc).__name__}: {exc}"
            log.error("version %s of %s failed to load: %s", latest, self.name, exc)
            return
        with self._lock:
            self.loaded[latest] = loaded
            for old in sorted(self.loaded)[:-KEEP]:
                del self.loaded[old]
            self.current = self.loaded[max(self.loaded)]
        log.info("serving %s version %s", self.name, latest)
        self.on_load(loaded)

    def get(self, version: int | None) -> Loaded | None:
        with self._lock:
            return self.current if version is None else self.loaded.get(version)

    def run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll_once()

    def start(self) -> threading.Thread:
        self.poll_once()
        thread = threading.Thread(target=self.run, name="conveyor-serve-poll", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.current is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.current is not None
