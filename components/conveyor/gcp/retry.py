"""conveyor's retry policy for Google Cloud calls.

Bounded, with exponential backoff and full jitter, only on errors that say "try again" (HTTP 408,
429, 500, 502, 503, 504, a dropped or refused connection, a read timeout), and only where the
caller passes it to an idempotent operation: reads, listings, BigQuery jobs (the client names
each job before inserting it, so a retried insert finds the same job), create-only writes
(`if_generation_match=0`: a second attempt cannot overwrite) and writes into a version folder
the writer has claimed for itself. Everything else (a 400, 403, 404, 409 or 412) fails at once.

The Google clients retry by themselves too, but up to 10 minutes per call for BigQuery (20 for a
job) and never for a write without a precondition on Cloud Storage. conveyor passes these
policies explicitly so that a recurring run fails with a clear error within `deadline()` seconds
(`CONVEYOR_RETRY_DEADLINE`, default 120) when a service stays down, instead of hanging.

    from conveyor.gcp import retry
    client.get_table(table_id, retry=retry.bigquery())
    blob.download_as_bytes(retry=retry.storage())
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from conveyor.errors import one_line

DEADLINE_ENV = "CONVEYOR_RETRY_DEADLINE"
#: Total seconds spent retrying one call before the error is raised.
DEFAULT_DEADLINE = 120.0
#: First backoff ceiling, its growth per attempt and its cap (each sleep is uniform in
#: [0, ceiling]: "full jitter").
INITIAL, MULTIPLIER, MAXIMUM = 0.5, 2.0, 10.0


def deadline() -> float:
    """Seconds of retrying per call: `CONVEYOR_RETRY_DEADLINE`, else 120."""
    value = os.environ.get(DEADLINE_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_DEADLINE
    except ValueError:
        raise ValueError(f"{DEADLINE_ENV}: expected seconds as a number, got {value!r}") from None
    if seconds <= 0:
        raise ValueError(f"{DEADLINE_ENV}: expected a positive number of seconds, got {value!r}")
    return seconds


def is_retryable(exc: BaseException) -> bool:
    """True for the errors a retry can cure: rate limits, server errors, lost connections."""
    import requests
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions

    if isinstance(exc, requests.exceptions.SSLError):
        return False  # a configuration problem, not a transient one
    return isinstance(exc, (
        exceptions.TooManyRequests, exceptions.InternalServerError, exceptions.BadGateway,
        exceptions.ServiceUnavailable, exceptions.GatewayTimeout,
        ConnectionError, TimeoutError, requests.exceptions.ConnectionError,
        requests.exceptions.ChunkedEncodingError, requests.exceptions.Timeout,
        auth_exceptions.TransportError,
    )) or getattr(exc, "code", None) == 408 or _response_status(exc) in RETRYABLE_STATUS


#: HTTP statuses worth another attempt.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _response_status(exc: BaseException) -> int | None:
    """The HTTP status of an error that carries its response (the storage client's uploads
    raise `InvalidResponse`, not an api_core exception)."""
    return getattr(getattr(exc, "response", None), "status_code", None)


def policy(predicate=is_retryable):
    """A `google.api_core.retry.Retry` with conveyor's backoff and deadline."""
    from google.api_core import retry as api_retry

    return api_retry.Retry(predicate=predicate, initial=INITIAL, maximum=MAXIMUM,
                           multiplier=MULTIPLIER, timeout=deadline())


def bigquery():
    """For BigQuery API calls: also retries the structured reasons BigQuery reports
    (rateLimitExceeded, backendError, internalError, badGateway) in a 400/403 body."""
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(INITIAL, MAXIMUM, MULTIPLIER).with_timeout(deadline())


def bigquery_job():
    """For re-running a BigQuery job that failed for a transient reason (`job_retry=`)."""
    from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY

    return DEFAULT_JOB_RETRY.with_delay(INITIAL, MAXIMUM, MULTIPLIER).with_timeout(deadline())


def storage():
    """For Cloud Storage calls on idempotent operations (see the module docstring). The storage
    client's own predicate: its uploads raise their own `InvalidResponse` for a 429 or 5xx."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(INITIAL, MAXIMUM, MULTIPLIER).with_timeout(deadline())


class ServiceUnavailableError(RuntimeError):
    """A Google Cloud service kept failing transiently for the whole retry deadline."""


@contextmanager
def giving_up(what: str) -> Iterator[None]:
    """Turn a call that exhausted its retries into one clear `ServiceUnavailableError`.

    Usable as a decorator too: `@retry.giving_up("ingest from BigQuery")`."""
    from google.api_core.exceptions import RetryError

    try:
        yield
    except RetryError as exc:
        raise ServiceUnavailableError(
            f"{what}: still failing after {deadline():g} s of retries ({DEADLINE_ENV}); "
            f"last error: {one_line(exc.cause)}") from exc
    except Exception as exc:
        if not is_retryable(exc):
            raise
        raise ServiceUnavailableError(
            f"{what}: transient error that was not retried: {one_line(exc)}") from exc
