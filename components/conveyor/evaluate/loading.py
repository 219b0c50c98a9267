"""Loading SavedModels for evaluation: the candidate and each baseline (a baseline that does not
load becomes `baselines.Unusable`, never a failure), the baselines to try in order, and the
served version's signature."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pyarrow as pa

from conveyor.errors import InputError
from conveyor.evaluate import baselines as bl
from conveyor.model.inputs import model_inputs
from conveyor.model.layout import ASSETS_EXTRA, TRANSFORM_FILE
from conveyor.transform.fit import Fitted


class ServingModel:
    """A SavedModel's serving signature, and the features and labels it was trained with."""

    def __init__(self, path: str | Path):
        import tensorflow as tf

        self.path = str(path)
        extra = Path(path) / ASSETS_EXTRA
        if not (Path(path) / "saved_model.pb").exists():
            raise InputError(f"model: {path} is not a SavedModel (no saved_model.pb)")
        self.fitted = Fitted.load(extra)
        signatures = tf.saved_model.load(self.path).signatures
        if "serving_default" not in signatures:
            raise InputError(f"model: {path} has no serving_default signature (signatures: "
                             f"{sorted(signatures) or 'none'}); export it with conveyor.train")
        self.serve = signatures["serving_default"]
        self.inputs = self.serve.structured_input_signature[1]
        self.outputs = self.serve.structured_outputs
        self.key = {"binary": "probability",
                    "multiclass": "probabilities"}.get(self.fitted.spec.task, "value")

    def answer(self, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
        """Every output of the serving signature for the batch's rows."""
        import tensorflow as tf

        features = {n: tf.constant(a, dtype=self.inputs[n].dtype)
                    for n, a in model_inputs(batch, self.fitted).items()}
        return {k: v.numpy() for k, v in self.serve(**features).items()}

    def predict(self, batch: pa.RecordBatch) -> np.ndarray:
        return self.answer(batch)[self.key]

    def signature(self) -> dict:
        return bl.signature_of(self.serve)


def baseline_sources(baseline_path, baseline_uri, model_base_path, scratch: str,
             max_baselines: int) -> tuple[list[bl.Source], Any, list[int]]:
    """Baselines to try, in order (explicit first, then the served version: the champion when
    versions are labelled, then the other newest versions), the base path (or None) and its
    published versions. A rolled-back challenger is newer than the champion, never first."""
    sources = []
    if baseline_path:
        path = Path(baseline_path)
        sources.append(bl.Source(baseline_uri or str(baseline_path), lambda: path))
    if not model_base_path:
        return sources, None, []
    from conveyor.registry import ModelBasePath

    base = ModelBasePath(model_base_path)
    versions = base.versions()
    try:
        served = base.served()
    except InputError as exc:  # unreadable labels: the newest versions, as without labels
        print(f"evaluate: {exc}; trying the newest versions as baselines", flush=True)
        served = None
    order = list(reversed(versions[-max_baselines:]))
    if served in versions:
        order = [served, *[v for v in order if v != served]][:max_baselines]

    def fetched(version: int) -> Path:
        return Path(base.fetch(version, scratch))

    for version in order:
        sources.append(bl.Source(base.version_uri(version), functools.partial(fetched, version),
                                 version))
    return sources, base, versions


def open_baseline(source: bl.Source) -> ServingModel:
    """Load a baseline; anything that goes wrong becomes `Unusable` with its one line."""
    try:
        return ServingModel(source.local())
    except Exception as exc:  # a baseline that does not load is skipped, never fatal
        raise bl.Unusable(_why_not_loaded(exc)) from None


def _why_not_loaded(exc: Exception) -> str:
    text = bl.one_line(exc)
    if isinstance(exc, InputError) and "transform" in text:
        return ("it is not a conveyor model of this format (no readable "
                f"{ASSETS_EXTRA}/{TRANSFORM_FILE}): {text}")
    return f"it does not load: {text}"

def served_signature(sources: list[bl.Source]):
    """The newest base-path version of `sources` whose signature loads."""
    for source in sources:
        if source.version is None:
            continue
        try:
            return source.uri, open_baseline(source).signature()
        except bl.Unusable:
            continue
    return None
