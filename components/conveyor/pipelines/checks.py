"""Every check of a reference pipeline's argument values that can run before anything starts.

The shared parameters' own checks (`conveyor.params`), and the checks each step defines for the
values inside its parameters, gathered here because only this floor sees every step:
hyper-parameter names and types (train), threshold metrics and rule keys (evaluate), policies
(validate), split ratios (ingest). `conveyor run` and `conveyor submit` run them, so a misspelt
name inside a dict is refused in seconds, naming it, a close match and the known names, instead
of by the step that uses it minutes into the run. The steps still check what they are given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from conveyor import params
from conveyor.errors import InputError
from conveyor.evaluate import thresholds
from conveyor.ingest.split import SplitSpec
from conveyor.train import hyperparameters
from conveyor.validate import policies


def _split_ratios(value: Any) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"split_ratios: a JSON object of split names and shares, got {value!r}"]
    try:
        SplitSpec.parse(dict(value) or None)
    except InputError as exc:
        return [str(exc)]
    return []


#: parameter name -> the check of its value defined by the step that uses it
STEP_CHECKS: dict[str, Callable[[Any], list[str]]] = {
    "hyperparameters": hyperparameters.check,
    "thresholds": thresholds.check,
    "policy": policies.check,
    "drift_policy": lambda value: policies.check(value, "drift_policy"),
    "split_ratios": _split_ratios,
}


def problems(arguments: Mapping[str, Any]) -> list[str]:
    """Every problem with the values among `arguments`, one line each naming the parameter."""
    found = params.problems(arguments)
    for name, value in arguments.items():
        if name in STEP_CHECKS:
            found += STEP_CHECKS[name](value)
    return found
