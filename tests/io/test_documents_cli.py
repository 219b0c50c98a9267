"""A system file passed as a spec URI, through `conveyor run --local` as a user runs it (issue
25, class 9): the run fails at the step that reads the file, naming its path, and the file's
content appears nowhere: not on stdout or stderr, not in a task log, not in any file of the
run (fail-fast markers, executor outputs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import gcp

pytestmark = [pytest.mark.local, pytest.mark.slow]

SECRET = "secretHASHq7Vx3kP9zR2mW8nL4tY6bC1dF5gJ0hK"
#: shaped like /etc/shadow: YAML takes it for a mapping whose keys are its lines
SHADOW = (f"root:$6$saltsalt${SECRET}:19700:0:99999:7:::\n"
          "daemon:*:19700:0:99999:7:::\nbin:*:19700:0:99999:7:::\n")
#: one that does not parse (a tab starts a line): yaml's own message quotes that line
BROKEN = SHADOW + f"\tnobody:$6$x${SECRET}:19700:0:99999:7:::\n"


def everything_written(root: Path) -> str:
    """Every file under the run's folders, as text."""
    return "\n".join(p.read_bytes().decode("utf-8", "replace")
                     for p in sorted(root.rglob("*")) if p.is_file())


@pytest.fixture(scope="module")
def system_files(tmp_path_factory, bucket) -> tuple[str, str]:
    """The broken one as a local path (mode 600, as /etc/shadow), the other as a gs:// object."""
    path = tmp_path_factory.mktemp("etc") / "shadow"
    path.write_text(BROKEN)
    path.chmod(0o600)
    name = bucket("system-files")
    gcp.storage_client().bucket(name).blob("etc/shadow").upload_from_string(SHADOW)
    return str(path), f"gs://{name}/etc/shadow"


@pytest.mark.parametrize("parameter, which, step", [
    ("suite_uri", 0, "validate"),
    ("feature_spec_uri", 1, "transform"),
])
def test_a_system_file_as_a_spec_uri_is_named_and_never_shown(penguins, system_files, tmp_path,
                                                              parameter, which, step):
    uri = system_files[which]
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "run", "training", "--local",
         "--param", f"table={penguins}", "--param", "label=species",
         "--param", f"model_base_path={tmp_path / 'models'}",
         "--param", f"{parameter}={uri}", "--pipeline-root", str(runs)],
        capture_output=True, text=True, timeout=900)
    shown = done.stdout + done.stderr
    written = everything_written(runs)
    for part in (SECRET, SECRET[:12], "saltsalt", "daemon:*"):
        assert part not in shown, shown
        assert part not in written  # nothing of the file in any file of the run, logs included
    assert done.returncode != 0, shown
    assert re.search(rf"^  FAILED +{step} ", shown, re.M), shown
    assert f"{uri} is n" in shown and "content is not shown" in shown, shown
    assert "content is not shown" in written  # the task's log holds the error
