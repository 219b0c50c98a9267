"""The pipeline parameters the reference pipelines share: each defined once (name, type, default,
doc and check), so a default or a doc cannot drift between pipelines and a bad value is refused
by `conveyor run` before anything starts, not by the task that uses it minutes later.

The pipelines take their defaults (`default`) and their docstrings (`docstring`) from here; the
compiled specs carry both, so a pipeline's spec is unchanged as long as the text here is. A
pipeline where a parameter plays another role (the table of the newest data, not the training
data) gives its own doc for it. The checks here need nothing above the foundation; checks that
need a step's own vocabulary (hyper-parameter names: train; threshold metrics: evaluate; policy
values: validate) live with that step and are gathered by `conveyor.pipelines.checks`.

`unknown` is the one "unknown name" message: the bad names, a close match for each, the names
that are known.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from conveyor.errors import InputError

REQUIRED = object()  # the default of a parameter that has none

#: Accelerator used when a pipeline is given GPUs and no type (Vertex AI's name for it; on
#: Kubeflow on GKE use the node's resource name, e.g. nvidia.com/gpu).
DEFAULT_ACCELERATOR = "NVIDIA_TESLA_T4"


def close_match(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to `name` (difflib), or None when none is close."""
    found = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(names: Iterable[str], known: Iterable[str]) -> str:
    """" (did you mean 'learning_rate'?)" for one unknown name with a close match; for several,
    " (did you mean: 'a' -> 'b', ...?)"; "" when none is close."""
    names, known = sorted(str(n) for n in names), [str(k) for k in known]
    matches = {n: m for n in names if (m := close_match(n, known))}
    if len(names) == 1 and matches:
        return f" (did you mean {matches[names[0]]!r}?)"
    if matches:
        return f" (did you mean: {', '.join(f'{n!r} -> {m!r}' for n, m in matches.items())}?)"
    return ""


def unknown(what: str, names: Iterable[str], known: Iterable[str], *,
            noun: str = "name") -> str:
    """"<what>: unknown <noun>(s) ['lerning_rate'] (did you mean 'learning_rate'?) (known: ...)"."""
    names, known = sorted(str(n) for n in names), list(known)
    return (f"{what}: unknown {noun}(s) {names}{did_you_mean(names, known)} "
            f"(known: {', '.join(map(str, known))})")


def one_of(what: str, value: Any, allowed: Iterable[str]) -> str | None:
    """A problem line when `value` is not one of `allowed` (with a close match), else None."""
    allowed = tuple(allowed)
    if value in allowed:
        return None
    match = close_match(value, allowed) if isinstance(value, str) else None
    hint = f" (did you mean {match!r}?)" if match else ""
    return f"{what}: {value!r} is not one of {allowed}{hint}"


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One pipeline parameter as every layer sees it. `check(value)` returns the problems with
    a value (each line naming the parameter), none when it is fine."""

    name: str
    type: type
    default: Any
    doc: str
    check: Callable[[Any], list[str]] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def problems(self, value: Any) -> list[str]:
        return self.check(value) if self.check is not None else []


def _at_least(name: str, low: int) -> Callable[[Any], list[str]]:
    def check(value: Any) -> list[str]:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return [f"{name}: must be an integer >= {low}, got {value!r}"]
        return []
    return check


def _names(name: str) -> Callable[[Any], list[str]]:
    def check(value: Any) -> list[str]:
        if not all(isinstance(v, str) and v for v in value or []):
            return [f"{name}: a JSON list of column names, got {value!r}"]
        return []
    return check


_DEFINITIONS = (
    Parameter("label", str, REQUIRED,
              "Label column (used to propose a feature spec when none is given)."),
    Parameter("model_base_path", str, REQUIRED,
              "Serving model base path (gs:// or local): baseline and push target."),
    Parameter("table", str, "",
              "Table to read, as project.dataset.table or dataset.table (or give query)."),
    Parameter("query", str, "", "GoogleSQL query whose result is read, instead of table."),
    Parameter("task", str, "",
              "binary, multiclass or regression; default: from the label's values."),
    Parameter("split_key", str, "",
              "INT64 or STRING column that decides each row's split (default: the row)."),
    Parameter("split_ratios", dict, {"train": 0.8, "eval": 0.2},
              "Split names and their shares of rows, summing to 1."),
    Parameter("project", str, "",
              "Project that runs the BigQuery jobs; default from the environment."),
    Parameter("location", str, "", "BigQuery location, e.g. US or EU."),
    Parameter("read_streams", int, 1,
              "BigQuery Storage Read streams ingest reads at once (more for big tables; the "
              "Dataset is the same whatever the number).", _at_least("read_streams", 1)),
    Parameter("suite_uri", str, "",
              "Suite to validate with (path or gs://); default: inferred from the data."),
    Parameter("policy", str, "fail", "fail (stop on any data problem) or warn (report and go on)."),
    Parameter("drift_threshold", float, 0.1,
              "Drift (Jensen-Shannon or L-infinity) above which the model is retrained."),
    Parameter("feature_spec_uri", str, "",
              "Feature spec (path or gs://); default: proposed from the schema."),
    Parameter("hyperparameters", dict, {},
              "Model and training settings, e.g. {\"model\": \"wide_deep\"}; default: chosen "
              "from the data (early stopping)."),
    Parameter("module_file", str, "",
              "Module defining build_model(hparams, feature_spec), instead of a built-in model."),
    Parameter("slices", list, [], "Columns whose values slice the evaluation metrics.",
              _names("slices")),
    Parameter("thresholds", dict, {},
              "Per metric: min, max, min_improvement(_relative); default: beat the baseline and "
              "the naive reference."),
    Parameter("allow_breaking_signature", bool, False,
              "Bless a model whose serving signature breaks the served version's clients "
              "(inputs or outputs removed, added or changed)."),
    Parameter("train_gpus", int, 0,
              "GPUs to train on; 0 trains on CPU with conveyor's CPU image.",
              _at_least("train_gpus", 0)),
    Parameter("train_accelerator", str, DEFAULT_ACCELERATOR,
              "Accelerator type when train_gpus > 0 (Vertex AI: NVIDIA_L4, ...; GKE: "
              "nvidia.com/gpu)."),
    Parameter("tracking_uri", str, "",
              "MLflow tracking server (e.g. http://mlflow.kubeflow:5000) each step logs its "
              "parameters, figures, verdict and output URIs to, mirroring pushed versions and "
              "labels to its model registry; default: MLFLOW_TRACKING_URI of the task's "
              "environment, else no tracking."),
)

PARAMETERS: dict[str, Parameter] = {p.name: p for p in _DEFINITIONS}


def parameter(name: str) -> Parameter:
    try:
        return PARAMETERS[name]
    except KeyError:
        raise InputError(unknown("parameter", [name], PARAMETERS, noun="parameter")) from None


def default(name: str) -> Any:
    """The parameter's default, a fresh copy (a dict or list default is never shared)."""
    value = parameter(name).default
    if value is REQUIRED:
        raise InputError(f"{name}: has no default (it is required)")
    return copy.deepcopy(value)


def docstring(summary: str, names: Iterable[str], **own_docs: str) -> str:
    """A pipeline's docstring (which kfp compiles into its spec): `summary`, then an Args line
    per name, the shared doc unless `own_docs` gives the pipeline's own (a parameter that plays
    another role there, or one only that pipeline has)."""
    lines = [summary, "", "Args:"]
    for name in names:
        doc = own_docs[name] if name in own_docs else parameter(name).doc
        lines.append(f"    {name}: {doc}")
    return "\n".join(lines) + "\n"


def documented(summary: str, **own_docs: str) -> Callable:
    """Decorator (under `@dsl.pipeline`): the function's docstring from `docstring`, one Args
    line per parameter of the function, in its order."""
    def decorate(function: Callable) -> Callable:
        import inspect

        names = list(inspect.signature(function).parameters)
        function.__doc__ = docstring(summary, names, **own_docs)
        return function
    return decorate


def problems(arguments: Mapping[str, Any]) -> list[str]:
    """The problems with the values of the shared parameters among `arguments` (the checks
    defined here; the steps' own checks are `conveyor.pipelines.checks`)."""
    out = []
    for name, value in arguments.items():
        if name in PARAMETERS:
            out += PARAMETERS[name].problems(value)
    return out
