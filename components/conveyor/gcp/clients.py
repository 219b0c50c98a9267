"""Construction of BigQuery, BigQuery Storage and Cloud Storage clients (see `conveyor.gcp`).

On Google Cloud a client needs Application Default Credentials; without them (and without the
local stack's variables) google-auth's `DefaultCredentialsError` says only that none were found,
so it is raised again, same type, saying how to point the process at the local stack instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the clients are imported lazily: compiling pipelines needs none of them
    from google.cloud import bigquery, bigquery_storage, storage

STORAGE_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
BIGQUERY_ENDPOINT_ENV = "CONVEYOR_BIGQUERY_ENDPOINT"
BIGQUERY_STORAGE_ENDPOINT_ENV = "CONVEYOR_BIGQUERY_STORAGE_ENDPOINT"
PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"


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
        return storage.Client(project=project or "conveyor-local", credentials=_anonymous())
    with _credentials_named():
        return storage.Client(project=project)
