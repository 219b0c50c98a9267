"""The distribution as users install it: kfp-only for composing, no stray top-level packages."""

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_compose_only_install_has_no_tensorflow_and_compiles(tmp_path):
    # Install from a copy of the source, so the build leaves nothing in the work tree.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(REPO / name, src)
    shutil.copytree(REPO / "components", src / "components",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-c", str(src / "constraints.txt"), str(src)], check=True, timeout=900)
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    assert (site / "conveyor" / "ingest" / "bigquery_ingest.yaml").is_file()
    assert not (site / "components").exists() and not (site / "pipelines").exists()
    code = """
import importlib.util, sys
import conveyor
from kfp import compiler
from conveyor.pipelines import training
compiler.Compiler().compile(training.pipeline, sys.argv[1])
for name in ("tensorflow", "great_expectations", "google.cloud.bigquery", "bqemulator"):
    assert importlib.util.find_spec(name) is None, f"{name} is installed"
print("ok", conveyor.__version__)
"""
    out = subprocess.run([str(python), "-c", code, str(tmp_path / "p.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "p.yaml").read_text().startswith("# PIPELINE DEFINITION")


def test_dockerfile_install_step_works_as_a_plain_pip_install():
    # No Docker engine here: images/check_install.sh runs the Dockerfile's own `RUN pip install`
    # line in a clean venv over the files its COPY lines name, then imports the runtime.
    run = subprocess.run(["bash", str(REPO / "images" / "check_install.sh")],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "runtime imports ok on Python 3.11" in run.stdout
