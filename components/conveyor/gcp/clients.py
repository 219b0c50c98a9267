"""Construction of BigQuery, BigQuery Storage and Cloud Storage clients (see `conveyor.gcp`).

On Google Cloud a client needs Application Default Credentials; without them (and without the
local stack's variables) google-auth's `DefaultCredentialsError` says only that none were found,
so it is raised again, same type, saying how to point the process at the local stack instead.
With the local stack's variables left from a stack that has stopped, a client would retry the
refused connections for many minutes: the endpoint is tried first (one TCP connect, at most
`CONNECT_SECONDS`, once per process and endpoint) and a `StackError` names the commands that
start the stack and point the process at it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

from conveyor.errors import StackError

if TYPE_CHECKING:  # the clients are imported lazily: compiling pipelines needs none of them
    from google.cloud import bigquery, bigquery_storage, storage

STORAGE_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
BIGQUERY_ENDPOINT_ENV = "CONVEYOR_BIGQUERY_ENDPOINT"
BIGQUERY_STORAGE_ENDPOINT_ENV = "CONVEYOR_BIGQUERY_STORAGE_ENDPOINT"
PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"
CONNECT_SECONDS = 2.0
_ANSWERED: set[str] = set()  # endpoints that accepted a connection in this process


def check_endpoint(variable: str, *, cached: bool = True) -> None:
    """A StackError, at once, when the emulator endpoint `variable` names refuses connections;
    nothing when it answers (with `cached`, once per process) or is not set."""
    value = os.environ.get(variable, "")
    if not value or (cached and value in _ANSWERED):
        return
    address = value.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_SECONDS):
            pass
    except (OSError, ValueError) as exc:
        from conveyor.gcp.hints import conveyor_command

        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StackError(
            f"the local stack this environment points at does not answer ({variable}={value}: "
            f"{why or type(exc).__name__}): it was stopped. Start it with "
            f"`{conveyor_command('local up')}`, then point this process at it again with "
            f"`eval \"$({conveyor_command('local env')})\"` (from Python: "
            "conveyor.local.LocalStack().up().activate())") from None
    _ANSWERED.add(value)


def emulated() -> bool:
    """True when the BigQuery endpoint variable points conveyor at an emulator."""
    return bool(os.environ.get(BIGQUERY_ENDPOINT_ENV))


def resolve_project(project: str | None = None) -> str | None:
    """The project to bill and to qualify table ids with: the argument, else the environment.

    Returns None on real GCP when neither is set, letting the client take the project from
    Application Default Credentials.
    """
    return project or os.environ.get(PROJECT_ENV) or None


def _anonymous():
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


@contextlib.contextmanager
def _credentials_named() -> Iterator[None]:
    """google-auth's DefaultCredentialsError, again, naming the local stack's commands."""
    from google.auth.exceptions import DefaultCredentialsError

    try:
        yield
    except DefaultCredentialsError as exc:
        from conveyor.gcp.hints import no_credentials

        first = (str(exc).strip().splitlines() or [""])[0]
        raise DefaultCredentialsError(f"{no_credentials()} ({first})") from None


def bigquery_client(project: str | None = None, location: str | None = None) -> bigquery.Client:
    """A BigQuery client for `project`, on the emulator when `CONVEYOR_BIGQUERY_ENDPOINT` is set."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import bigquery

    endpoint = os.environ.get(BIGQUERY_ENDPOINT_ENV)
    project = resolve_project(project)
    if endpoint:
        check_endpoint(BIGQUERY_ENDPOINT_ENV)
        return bigquery.Client(
            project=project or "conveyor-local",
            location=location,
            credentials=_anonymous(),
            client_options=ClientOptions(api_endpoint=endpoint),
        )
    with _credentials_named():
        return bigquery.Client(project=project, location=location)


def bigquery_read_client() -> bigquery_storage.BigQueryReadClient:
    """A BigQuery Storage Read API client, on the emulator when its endpoint variable is set."""
    from google.cloud import bigquery_storage

    endpoint = os.environ.get(BIGQUERY_STORAGE_ENDPOINT_ENV)
    if endpoint:
        check_endpoint(BIGQUERY_STORAGE_ENDPOINT_ENV)
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
            BigQueryReadGrpcTransport,
        )

        channel = grpc.insecure_channel(
            endpoint,
            options=[("grpc.max_receive_message_length", 128 * 1024 * 1024)],
        )
        return bigquery_storage.BigQueryReadClient(
            transport=BigQueryReadGrpcTransport(channel=channel)
        )
    with _credentials_named():
        return bigquery_storage.BigQueryReadClient()


def storage_client(project: str | None = None) -> storage.Client:
    """A Cloud Storage client; google-cloud-storage itself honours `STORAGE_EMULATOR_HOST`."""
    from google.cloud import storage

    project = resolve_project(project)
    if os.environ.get(STORAGE_EMULATOR_ENV):
        check_endpoint(STORAGE_EMULATOR_ENV)
        return storage.Client(project=project or "conveyor-local", credentials=_anonymous())
    with _credentials_named():
        return storage.Client(project=project)
