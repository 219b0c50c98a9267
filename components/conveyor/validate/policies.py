"""validate's policies: what broken data (`policy`) and drift (`drift_policy`) do to a run,
defined once, with their check.

Validate applies them (`conveyor.validate.validate.validate_dataset`); `conveyor run` runs `check`
before anything starts (`conveyor.pipelines.checks`), so `policy=warm` is refused in seconds
rather than when validate starts after ingest. Plain Python: importing this module is cheap.
"""

from __future__ import annotations

from typing import Any

from conveyor.params import one_of

#: fail: the task fails (on broken data; on drift too for drift_policy); warn: it reports and
#: the run goes on (validate's `Output` is False).
POLICIES = ("fail", "warn")


def problem(name: str, value: Any) -> str | None:
    """The problem with a `policy` or `drift_policy` value (with a close match), else None."""
    return one_of(name, value, POLICIES)


def check(value: Any, name: str = "policy") -> list[str]:
    found = problem(name, value)
    return [found] if found else []
