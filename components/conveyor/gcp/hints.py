"""What to type next: the commands that error messages name, spelt so this shell can run them.

A message that says what to do names a command. `conveyor_command()` is conveyor's own as the
user can type it: plain `conveyor` when that is on PATH (an activated virtual environment),
else the path of the `conveyor` script beside this interpreter (`.venv/bin/conveyor` from the
repository), so a hint never names a command that is not there. `missing_bucket` and
`missing_table` are the hints for a bucket or a BigQuery table that does not exist: on the local
stack the conveyor command that makes it, on Google Cloud the gcloud command; a table also gets
the closest existing name (difflib, as `conveyor.params` does for parameters).
"""

from __future__ import annotations

import difflib
import os
import shutil
import sys
from pathlib import Path

from conveyor.gcp.clients import BIGQUERY_ENDPOINT_ENV, STORAGE_EMULATOR_ENV


def conveyor_command(arguments: str = "") -> str:
    """`conveyor ARGUMENTS` as this shell can run it (see the module docstring)."""
    script = Path(sys.executable).parent / "conveyor"
    on_path = shutil.which("conveyor")
    if on_path is None or not script.exists() or not _same(Path(on_path), script):
        if script.exists():
            name = _relative(script)
        elif on_path is not None:
            name = "conveyor"
        else:
            name = f"{sys.executable} -m conveyor"
    else:
        name = "conveyor"
    return f"{name} {arguments}".rstrip()


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _relative(path: Path) -> str:
    """`path` relative to the working folder when it lies under it (`.venv/bin/conveyor`)."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def missing_bucket(bucket: str, location: str = "") -> str:
    """What to do about a bucket that does not exist, as text to append to the message."""
    if os.environ.get(STORAGE_EMULATOR_ENV):
        return (f"; create it on the local stack with `{conveyor_command('local bucket')} "
                f"gs://{bucket}` (`{conveyor_command('run --local')}` creates the buckets its "
                "gs:// parameters name)")
    return (f"; create it with `gcloud storage buckets create gs://{bucket} "
            f"--location={location or 'REGION'}`, or name a bucket that exists")


def no_credentials() -> str:
    """What to do when a client finds neither the local stack nor Google credentials."""
    return ("no local stack in the environment and no Google Cloud credentials (Application "
            f"Default Credentials). For the local stack: `{conveyor_command('local up')}`, then "
            f"`eval \"$({conveyor_command('local env')})\"` in this shell (from Python: "
            "conveyor.local.LocalStack().up().activate()); for Google Cloud: `gcloud auth "
            "application-default login`")


def missing_table(client, table_id: str) -> str:
    """What to do about BigQuery table `table_id` (`[project.]dataset.table`) that does not
    exist, as text to append to the message ('' when there is nothing to say): the closest
    existing table of its dataset (or dataset of its project, when the dataset is missing too)
    as " (did you mean '...'?)", and on the local stack the command that loads a file as this
    table. Listing is best effort: a listing that fails only leaves the suggestion out."""
    parts = table_id.replace("`", "").split(".")
    if len(parts) not in (2, 3) or not all(parts):
        return ""
    *project_given, dataset, table = parts
    project = project_given[0] if project_given else client.project
    prefix = f"{project_given[0]}." if project_given else ""
    suggestion = None
    try:
        datasets = [d.dataset_id for d in client.list_datasets(project, timeout=10)]
        if dataset not in datasets:
            match = difflib.get_close_matches(dataset, datasets, n=1, cutoff=0.6)
            suggestion = f"{prefix}{match[0]}.{table}" if match else None
        else:
            tables = [t.table_id for t in client.list_tables(f"{project}.{dataset}", timeout=10)]
            match = difflib.get_close_matches(table, tables, n=1, cutoff=0.6)
            suggestion = f"{prefix}{dataset}.{match[0]}" if match else None
    except Exception:  # a hint is a nicety: no listing, no suggestion
        suggestion = None
    text = f" (did you mean {suggestion!r}?)" if suggestion else ""
    if os.environ.get(BIGQUERY_ENDPOINT_ENV):
        text += ("; to load a CSV or Parquet file as this table on the local stack: "
                 f"`{conveyor_command('local load')} FILE --table {table_id}`")
    return text
