"""Google Cloud clients for all of conveyor: real GCP by default, the local emulators when told.

Every conveyor module obtains its BigQuery and Cloud Storage clients here, never by constructing
them itself. The choice is made when a client is asked for (not at import time), from:

- `STORAGE_EMULATOR_HOST` (the variable google-cloud-storage itself honours), e.g.
  `http://127.0.0.1:4443`: Cloud Storage goes to that emulator with anonymous credentials;
- `CONVEYOR_BIGQUERY_ENDPOINT`, e.g. `http://127.0.0.1:9050`: the BigQuery REST API goes there;
- `CONVEYOR_BIGQUERY_STORAGE_ENDPOINT`, e.g. `127.0.0.1:9060`: the BigQuery Storage Read API
  (gRPC, plaintext) goes there.

Without them, clients use Application Default Credentials. The project is the `project` argument,
else `GOOGLE_CLOUD_PROJECT`, else what the credentials name. `kfp.local` runs each task in a child
process of the launcher, so variables set in the launcher reach the components.
"""

from conveyor.gcp.clients import (
    BIGQUERY_ENDPOINT_ENV,
    BIGQUERY_STORAGE_ENDPOINT_ENV,
    PROJECT_ENV,
    STORAGE_EMULATOR_ENV,
    bigquery_client,
    bigquery_read_client,
    emulated,
    resolve_project,
    storage_client,
)

__all__ = [
    "BIGQUERY_ENDPOINT_ENV",
    "BIGQUERY_STORAGE_ENDPOINT_ENV",
    "PROJECT_ENV",
    "STORAGE_EMULATOR_ENV",
    "bigquery_client",
    "bigquery_read_client",
    "emulated",
    "resolve_project",
    "storage_client",
]
