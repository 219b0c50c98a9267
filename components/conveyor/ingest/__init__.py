"""Ingest: a BigQuery table or query, or files on Cloud Storage, into a split Dataset artifact.

Logic: `conveyor.ingest.bigquery.ingest_bigquery`, `conveyor.ingest.gcs.ingest_gcs` (plain
Python, no KFP). KFP components: `conveyor.ingest.component.bigquery_ingest` and `gcs_ingest`.
"""
