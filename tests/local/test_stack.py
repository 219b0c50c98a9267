"""The local stack: real emulators started, found, used by the real clients, and stopped."""

import json

import pytest

from conveyor import gcp
from conveyor.local import LocalStack

pytestmark = pytest.mark.local


def test_running_stack_is_recorded_and_found_again(stack):
    again = LocalStack(stack.root, project=stack.project)
    assert again.status() == stack
    assert again.up() == stack  # idempotent: no second pair of emulators
    recorded = json.loads((again.state_file).read_text())
    assert recorded["bigquery_endpoint"].startswith("http://127.0.0.1:")


def test_clients_talk_to_the_emulators(stack):
    bq = gcp.bigquery_client()
    assert bq.project == stack.project
    rows = list(bq.query("SELECT FARM_FINGERPRINT('1footrue') AS f").result())
    assert rows[0]["f"] == -1541654101129638711  # BigQuery's documented value
    gcs = gcp.storage_client()
    bucket = gcs.bucket("stack-test")
    if not bucket.exists():
        gcs.create_bucket("stack-test")
    bucket.blob("hello.txt").upload_from_string("hi")
    assert gcs.bucket("stack-test").blob("hello.txt").download_as_bytes() == b"hi"


def test_stack_keeps_tables_across_restart_and_stops_cleanly(tmp_path):
    from google.cloud import bigquery

    own = LocalStack(tmp_path / "own", project="restart-test")
    info = own.up()
    try:
        with pytest.MonkeyPatch.context() as env:
            for key, value in info.environ().items():
                env.setenv(key, value)
            client = gcp.bigquery_client()
            client.create_dataset("keep")
            client.query("CREATE TABLE keep.t AS SELECT 1 AS x").result()
            assert own.down()
            assert own.status() is None
            info = own.up()
            for key, value in info.environ().items():
                env.setenv(key, value)
            got = list(gcp.bigquery_client().query("SELECT x FROM keep.t").result())
            assert [r["x"] for r in got] == [1]
            assert isinstance(gcp.bigquery_client(), bigquery.Client)
    finally:
        own.down()
    assert own.status() is None
    assert not own.state_file.exists()
