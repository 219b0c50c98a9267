"""The prediction log's optional BigQuery table: each written Parquet file also loaded into it."""

from __future__ import annotations

import io
import json
import re

from conveyor.errors import InputError, SourceNotFoundError, one_line
from conveyor.serving.log_format import Signature

_TABLE = re.compile(r"^(?:(?P<project>[A-Za-z0-9-]+)[.:])?(?P<dataset>[A-Za-z0-9_]+)\."
                    r"(?P<table>[A-Za-z0-9_-]+)$")


class BigQueryTable:
    """Each written file is also loaded (a Parquet load job, WRITE_APPEND) into `table`,
    created if missing with the first file's schema. The Parquet file is the record: a failed
    load is counted and logged, the file stays."""

    def __init__(self, table: str):
        match = _TABLE.match(table or "")
        if not match:
            raise InputError(f"--log-bigquery-table: {table!r} is not dataset.table or "
                             "project.dataset.table (letters, digits, '_'; '-' in a project)")
        self.project, self.dataset, self.table = match["project"], match["dataset"], \
            match["table"]
        self.spec = table
        self._client = None
        self._ready: set[str] = set()

    @property
    def client(self):
        if self._client is None:
            from conveyor import gcp

            self._client = gcp.bigquery_client(self.project)
        return self._client

    @property
    def table_id(self) -> str:
        return f"{self.client.project}.{self.dataset}.{self.table}"

    def check(self) -> None:
        from google.api_core.exceptions import GoogleAPIError, NotFound

        from conveyor.gcp import retry

        try:
            with retry.giving_up(f"--log-bigquery-table: check {self.spec}"):
                self.client.get_dataset(f"{self.client.project}.{self.dataset}",
                                        retry=retry.bigquery())
        except NotFound:
            raise SourceNotFoundError(f"--log-bigquery-table: dataset {self.client.project}."
                                      f"{self.dataset} not found") from None
        except GoogleAPIError as exc:
            raise InputError(f"--log-bigquery-table: {self.spec}: {one_line(exc)}") from None

    def load(self, data: bytes, signature: Signature) -> None:
        from google.api_core.exceptions import Conflict, NotFound
        from google.cloud import bigquery

        from conveyor.gcp import retry

        schema = bigquery_schema(signature)
        key = json.dumps([f.to_api_repr() for f in schema], sort_keys=True)
        if key not in self._ready:
            try:
                table = self.client.get_table(self.table_id, retry=retry.bigquery())
            except NotFound:
                try:
                    self.client.create_table(bigquery.Table(self.table_id, schema=schema),
                                             retry=retry.bigquery())
                except Conflict:
                    pass  # another replica created it
            else:
                have = {f.name for f in table.schema}
                added = [f for f in schema if f.name not in have]
                if added:
                    table.schema = [*table.schema, *added]
                    self.client.update_table(table, ["schema"], retry=retry.bigquery())
            self._ready.add(key)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET, schema=schema,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            schema_update_options=[bigquery.SchemaUpdateOption.ALLOW_FIELD_ADDITION])
        job = self.client.load_table_from_file(io.BytesIO(data), self.table_id,
                                               job_config=config, rewind=True)
        job.result(retry=retry.bigquery(), timeout=retry.deadline())


def bigquery_schema(signature: Signature):
    from google.cloud import bigquery

    types = {"float": "FLOAT64", "int": "INT64", "string": "STRING", "bool": "BOOL"}

    def output(name: str, kind: str, rank: int):
        if rank == 1:
            return bigquery.SchemaField(name, types[kind])
        if rank == 2:
            return bigquery.SchemaField(name, types[kind], mode="REPEATED")
        return bigquery.SchemaField(name, "STRING")

    F = bigquery.SchemaField
    return [
        F("request_id", "STRING"), F("instance", "INT64"), F("timestamp", "TIMESTAMP"),
        F("model_name", "STRING"), F("model_version", "INT64"), F("status", "INT64"),
        F("latency_ms", "FLOAT64"),
        F("features", "RECORD", fields=[F(n, types[k]) for n, k in signature.inputs.items()]),
        F("unparsed", "STRING"),
        F("outputs", "RECORD", fields=[output(n, k, r)
                                       for n, (k, r) in signature.outputs.items()]),
        F("error", "STRING"),
    ]

