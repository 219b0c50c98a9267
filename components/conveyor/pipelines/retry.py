"""The one retry policy of conveyor's pipeline tasks: 2 retries, after 2 s and 4 s.

Task retries are for what a retry can change: a preempted node, a crashed process, a cloud
outage longer than the in-task retries of `conveyor.gcp.retry`. Bad input cannot change, and
KFP's `set_retry` cannot tell the two apart, so every conveyor task body runs under
`conveyor.failfast.fail_once`: an attempt after one that failed on bad input (an `InputError`)
fails at once with the same error, before any work. The retries below therefore cost seconds
on bad input, and the backoff is short for the same reason.
"""

from __future__ import annotations

from typing import TypeVar

from kfp.dsl import PipelineTask

RETRIES = 2
BACKOFF = "2s"  # the first wait; each next one is BACKOFF_FACTOR times longer
BACKOFF_FACTOR = 2.0

Task = TypeVar("Task", bound=PipelineTask)


def retried(task: Task) -> Task:
    """`task` (a kfp PipelineTask) with conveyor's retry policy; returned for chaining."""
    task.set_retry(num_retries=RETRIES, backoff_duration=BACKOFF, backoff_factor=BACKOFF_FACTOR)
    return task
