"""`conveyor.gcp.hints` and the clients' credential error: every hint names a command this shell
can run, and a client with neither the local stack nor Google credentials says how to get either.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor.gcp import hints

ENDPOINTS = ("CONVEYOR_BIGQUERY_ENDPOINT", "CONVEYOR_BIGQUERY_STORAGE_ENDPOINT",
             "STORAGE_EMULATOR_HOST")


def test_the_command_is_the_script_beside_this_python_unless_conveyor_is_on_path(
        tmp_path, monkeypatch):
    script = Path(sys.executable).parent / "conveyor"
    if not script.exists():
        pytest.skip("no conveyor script beside this interpreter")
    monkeypatch.setenv("PATH", str(tmp_path))  # conveyor is not on PATH
    monkeypatch.chdir(script.parent.parent.parent)  # e.g. the repository holding .venv/
    assert hints.conveyor_command("local up") == \
        f"{script.parent.parent.name}/bin/conveyor local up"
    monkeypatch.setenv("PATH", str(script.parent))  # an activated virtual environment
    assert hints.conveyor_command("local up") == "conveyor local up"


def test_a_missing_bucket_on_google_cloud_names_the_gcloud_command(monkeypatch):
    for key in ENDPOINTS:
        monkeypatch.delenv(key, raising=False)
    assert hints.missing_bucket("shops-models", "europe-west4") == (
        "; create it with `gcloud storage buckets create gs://shops-models "
        "--location=europe-west4`, or name a bucket that exists")
    assert "--location=REGION`" in hints.missing_bucket("shops-models")


def test_a_missing_bucket_on_the_local_stack_names_conveyors_command(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    text = hints.missing_bucket("shops-models")
    assert f"`{hints.conveyor_command('local bucket')} gs://shops-models`" in text


def test_a_client_without_stack_or_credentials_names_conveyor_local_env(tmp_path):
    """A fresh process with nothing set up (no ADC file, no gcloud config, no stack variables;
    NO_GCE_CHECK so google-auth asks no metadata server) fails at once, saying how to point
    it at the local stack."""
    env = {k: v for k, v in os.environ.items()
           if k not in ENDPOINTS and k not in ("GOOGLE_APPLICATION_CREDENTIALS",
                                                "GOOGLE_CLOUD_PROJECT")}
    env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), NO_GCE_CHECK="true")
    code = ("from conveyor import gcp\n"
            "for make in (gcp.bigquery_client, gcp.storage_client, gcp.bigquery_read_client):\n"
            "    try:\n"
            "        make()\n"
            "    except Exception as exc:\n"
            "        print(type(exc).__name__, exc)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    for line in lines:
        assert line.startswith("DefaultCredentialsError no local stack in the environment")
        assert f'eval "$({hints.conveyor_command("local env")})"' in line
        assert "gcloud auth application-default login" in line
    assert elapsed < 60, elapsed  # a bound, not a benchmark: nothing is waited for


@pytest.mark.local
def test_a_missing_table_gets_the_closest_name_and_the_load_command(stack):
    from conveyor import gcp

    client = gcp.bigquery_client()
    client.create_dataset("hints_test", exists_ok=True)
    client.query("CREATE OR REPLACE TABLE hints_test.shops AS SELECT 1 AS x").result()
    load = hints.conveyor_command("local load")
    assert hints.missing_table(client, "hints_test.shop") == (
        " (did you mean 'hints_test.shops'?); to load a CSV or Parquet file as this table on "
        f"the local stack: `{load} FILE --table hints_test.shop`")
    assert hints.missing_table(client, "hint_test.shops").startswith(
        " (did you mean 'hints_test.shops'?)")  # the dataset misspelt
    assert hints.missing_table(client, "hints_test.zzz").startswith("; to load")


def test_a_client_of_a_stopped_stack_fails_in_seconds_naming_the_commands(tmp_path):
    """The stack's variables left in the environment of a stack that has stopped: each client
    fails at once with a StackError naming `conveyor local up` and `conveyor local env` (it
    used to retry the refused connections for more than 15 minutes)."""
    from support import free_ports

    bq, read, gcs = free_ports(3)  # nothing listens on them
    env = {**os.environ, "CONVEYOR_BIGQUERY_ENDPOINT": f"http://127.0.0.1:{bq}",
           "CONVEYOR_BIGQUERY_STORAGE_ENDPOINT": f"127.0.0.1:{read}",
           "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gcs}",
           "GOOGLE_CLOUD_PROJECT": "conveyor-local"}
    code = ("from conveyor import gcp\n"
            "try:\n"
            "    gcp.bigquery_client().query('SELECT 1').result()\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n"
            "for make in (gcp.storage_client, gcp.bigquery_read_client):\n"
            "    try:\n"
            "        make()\n"
            "    except Exception as exc:\n"
            "        print(type(exc).__name__, exc)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    elapsed = time.monotonic() - started
    lines = done.stdout.splitlines()
    assert len(lines) == 3, (done.stdout, done.stderr)
    for line, port in zip(lines, (bq, gcs, read)):
        assert line.startswith("StackError the local stack this environment points at does "
                               "not answer"), line
        assert f"127.0.0.1:{port}" in line
        assert f"`{hints.conveyor_command('local up')}`" in line
        assert f'eval "$({hints.conveyor_command("local env")})"' in line
    assert elapsed < 30, elapsed  # the imports; each refused connect is immediate
