"""Baselines that never block, and the serving-contract diff.

The baseline is the newest version under the model base path that can be evaluated on this
data, searching the `MAX_BASELINES` newest published versions (a baseline given explicitly is
tried first). A version is skipped, with a reason naming its URI and the column, class or input
involved, when it cannot be fetched or loaded (corrupt, hand-written without conveyor's
`assets.extra/transform.json`, an old or foreign format, no `serving_default`), predicts another
task or label, needs a column the split lacks, has a signature its transform does not feed, or
fails or answers non-finite values on these rows. Numeric folders that are not versions (`007`,
or a folder without `saved_model.pb` or commit marker) are listed as skipped without being tried.
With none left, the candidate is judged against the naive floor alone.

Label classes: a binary baseline must have the candidate's two classes. A multiclass baseline
that never saw some class of the eval split is scored on the rows whose label it knows, in the
union of both class lists (its probabilities for classes the candidate lacks count as wrong
answers), and the candidate is compared with it on exactly those rows; with no such row it is
skipped.

Serving contract: the candidate's `serving_default` (input names, dtypes, shapes; output names,
dtypes, shapes) against the served version's, the newest one whose signature loads (what TF
Serving keeps serving when a newer folder fails to load). Breaking, for existing clients:
an input removed or changed (dtype or shape); an input added, because TF Serving's row format
refuses a request without one of the signature's inputs ("does not have named input") and so
does `conveyor serve`; an output removed or changed; and an output added to a signature that had
one, because the row format then answers objects instead of bare values. Other added outputs
are not breaking (clients ignore keys they do not read).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from conveyor import errors
from conveyor.reports.html import spec_text

MAX_BASELINES = 5


class Unusable(Exception):
    """This baseline cannot be evaluated on this data; the message says why."""


@dataclasses.dataclass
class Source:
    """A baseline to try: where it is and how to get a local folder of it."""

    uri: str
    local: Callable[[], Path]
    version: int | None = None  # under the model base path; None: given explicitly


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`conveyor.errors.one_line`, except that an `Unusable` (our own verdict) goes without
    its type name."""
    text = errors.one_line(exc, limit)
    return text.partition(": ")[2] if isinstance(exc, Unusable) else text


def signature_of(serve) -> dict[str, dict[str, dict[str, Any]]]:
    """A serving signature's inputs and outputs: name -> {dtype, shape}."""

    def spec(t) -> dict[str, Any]:
        shape = t.shape.as_list() if t.shape.rank is not None else None
        return {"dtype": t.dtype.name, "shape": shape}

    return {"inputs": {n: spec(t) for n, t in sorted(serve.structured_input_signature[1].items())},
            "outputs": {n: spec(t) for n, t in sorted(serve.structured_outputs.items())}}


def signature_diff(served: dict, candidate: dict, against: str) -> dict[str, Any]:
    """What changed from `served` to `candidate`, and whether existing clients break."""
    out: dict[str, Any] = {"against": against}
    reasons = []
    for part in ("inputs", "outputs"):
        before, after = served[part], candidate[part]
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = [{"name": n, "before": before[n], "after": after[n]}
                   for n in sorted(set(before) & set(after)) if before[n] != after[n]]
        out[part] = {"added": added, "removed": removed, "changed": changed}
        noun = part[:-1]
        reasons += [f"{noun} {n!r} removed" for n in removed]
        reasons += [f"{noun} {c['name']!r} changed from {spec_text(c['before'])} to "
                    f"{spec_text(c['after'])}" for c in changed]
        if part == "inputs":
            reasons += [f"input {n!r} added (a request in TF Serving's row format without it "
                        "is refused)" for n in added]
        elif added and len(before) == 1:
            reasons += [f"output {n!r} added to a one-output signature (row-format answers "
                        "become objects instead of values)" for n in added]
    out["breaking"] = bool(reasons)
    out["reasons"] = reasons
    return out


def check_compatible(baseline, candidate_fitted, columns: set[str], split: str) -> None:
    """Raise `Unusable` when `baseline` (an evaluate._Model) cannot be evaluated on `split`."""
    fitted = baseline.fitted
    spec, cand = fitted.spec, candidate_fitted.spec
    if spec.task != cand.task:
        raise Unusable(f"it is a {spec.task} model, the candidate a {cand.task} one")
    if spec.label != cand.label:
        raise Unusable(f"it predicts {spec.label!r}, the candidate {cand.label!r}")
    missing = sorted(set(fitted.features) - columns)
    if missing:
        raise Unusable(f"it needs column(s) {missing} that split {split!r} does not have")
    fed = {fitted.input_of(c) for c in fitted.features}
    takes = set(baseline.inputs)
    if fed != takes:
        raise Unusable(f"its serving signature takes input(s) {sorted(takes - fed)} its "
                       f"transform does not feed" if takes - fed else
                       f"its transform feeds input(s) {sorted(fed - takes)} its serving "
                       "signature does not take")
    if baseline.key not in baseline.outputs:
        raise Unusable(f"its serving signature has no {baseline.key!r} output (outputs: "
                       f"{sorted(baseline.outputs)})")
    if cand.task == "binary" and list(fitted.label_classes or []) != list(
            candidate_fitted.label_classes or []):
        raise Unusable(f"its label classes {fitted.label_classes} of {cand.label!r} are not the "
                       f"candidate's {candidate_fitted.label_classes}")
    if cand.task == "multiclass" and not ClassMap(candidate_fitted.label_classes,
                                                  fitted.label_classes).known.any():
        raise Unusable(f"it knows none of the candidate's label classes of {cand.label!r} "
                       f"(its classes: {list(fitted.label_classes or [])[:10]})")


class ClassMap:
    """A multiclass baseline's classes in the candidate's index space, extended by the classes
    only the baseline has (the union)."""

    def __init__(self, candidate: list, baseline: list):
        index = {c: i for i, c in enumerate(candidate)}
        self.union = list(candidate) + [b for b in baseline if b not in index]
        where = {c: i for i, c in enumerate(self.union)}
        self.columns = np.array([where[b] for b in baseline], dtype=np.int64)
        self.known = np.zeros(len(candidate), dtype=bool)  # candidate classes the baseline has
        for b in baseline:
            if b in index:
                self.known[index[b]] = True
        self.width = len(self.union)

    def baseline_probabilities(self, p: np.ndarray) -> np.ndarray:
        out = np.zeros((len(p), self.width), dtype=np.float64)
        out[:, self.columns] = p
        return out

    def candidate_probabilities(self, p: np.ndarray) -> np.ndarray:
        out = np.zeros((len(p), self.width), dtype=np.float64)
        out[:, : p.shape[1]] = p
        return out


def foreign_folders(base, versions: list[int]) -> list[dict[str, str]]:
    """Numeric folders above the newest version that conveyor does not read as versions
    (`007`, or no saved_model.pb / commit marker): skipped, with why; TF Serving may serve them."""
    from conveyor.registry import canonical, number

    top = max(versions, default=0)
    names: list[str] = []
    try:
        if not base.gcs:
            folder = Path(base.uri)
            names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        elif hasattr(base, "_folders"):  # listing the <n>/ prefixes of the bucket
            names = [str(n) for n in base._folders()]
    except OSError:
        return []
    out = []
    for name in sorted(names):
        n = number(name)
        if n is None or n in versions or n <= top:
            continue
        uri = f"{base.uri}/{name}"
        if canonical(name) is None:
            why = (f"folder name {name!r} is not a canonical version number (conveyor never "
                   f"publishes it; TensorFlow Serving would serve it as version {n})")
        else:
            why = ("not a published version (no saved_model.pb" +
                   (" or commit marker" if base.gcs else "") + "): a copy by hand or a push "
                   "that did not finish")
        out.append({"uri": uri, "reason": why})
    return out
