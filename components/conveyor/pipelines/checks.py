"""Every check of a reference pipeline's argument values that can run before anything starts.

The shared parameters' own checks (`conveyor.params`), and the checks each step defines for the
values inside its parameters, gathered here because only this floor sees every step:
hyper-parameter names and types (train), threshold metrics and rule keys (evaluate), policies
(validate), split ratios (ingest). `conveyor run` and `conveyor submit` run them, so a misspelt
name inside a dict is refused in seconds, naming it, a close match and the known names, instead
of by the step that uses it minutes into the run. The steps still check what they are given.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from conveyor import params
from conveyor.errors import InputError


def split_ratios(value: Any) -> list[str]:
    """ingest's own parsing of `split_ratios` (`SplitSpec.parse`), as a list of problems."""
    from conveyor.io.split import SplitSpec

    if not isinstance(value, Mapping):
        return [f"split_ratios: a JSON object of split names and shares, got {value!r}"]
    try:
        SplitSpec.parse(dict(value) or None)
    except InputError as exc:
        return [str(exc)]
    return []


def drift_policy(value: Any) -> list[str]:
    from conveyor.validate import policies

    return policies.check(value, "drift_policy")


#: parameter name -> "module:function", the check of its value defined by the step that uses
#: it; imported only when the parameter is given (ingest's pulls in pandas: ~0.5 s)
STEP_CHECKS: dict[str, str] = {
    "hyperparameters": "conveyor.train.hyperparameters:check",
    "thresholds": "conveyor.evaluate.thresholds:check",
    "policy": "conveyor.validate.policies:check",
    "drift_policy": "conveyor.pipelines.checks:drift_policy",
    "split_ratios": "conveyor.pipelines.checks:split_ratios",
}


def problems(arguments: Mapping[str, Any]) -> list[str]:
    """Every problem with the values among `arguments`, one line each naming the parameter."""
    found = params.problems(arguments)
    for name, value in arguments.items():
        if name in STEP_CHECKS:
            module, _, function = STEP_CHECKS[name].partition(":")
            found += getattr(importlib.import_module(module), function)(value)
    return found
