"""The GitHub Actions workflow runs what developers run, and releases what the version names."""

from pathlib import Path

import yaml

from conveyor import images

REPO = Path(__file__).resolve().parents[2]


def test_workflow_runs_the_readme_commands_and_releases_on_tags():
    flow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    steps = " ".join(str(s.get("run", "")) for s in flow["jobs"]["test"]["steps"])
    assert "make check-specs" in steps and "make test" in steps
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert "make test" in (REPO / "README.md").read_text()
    release = flow["jobs"]["release"]
    assert release["needs"] == "test" and "refs/tags/v" in release["if"]
    run = " ".join(str(s.get("run", "")) for s in release["steps"])
    assert f"REGISTRY={images.DEFAULT_REGISTRY}" in run and "pipelines/*/pipeline.yaml" in run
