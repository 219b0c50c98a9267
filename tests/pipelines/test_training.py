"""The training pipeline end to end through kfp.local: blessed models become new versions,
a worse one is not pushed."""

import json
import tempfile
from pathlib import Path

import pytest

from conveyor.pipelines import training
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]


def run_dir(root: Path) -> Path:
    return max((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)


def leftovers(folder: Path) -> list[str]:
    """What is left in `folder`, except kfp's own: the command kfp gives every lightweight
    component (kfp/dsl/component_factory.py) writes its code to
    `$(mktemp -d)/ephemeral_component.py` and never removes it; a pod's disk goes with the pod."""
    kfp_launcher = {p.parent for p in folder.glob("tmp.*/ephemeral_component.py")
                    if len(list(p.parent.iterdir())) == 1}
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p not in kfp_launcher and p.parent not in kfp_launcher)


def test_better_models_are_pushed_and_a_worse_one_is_not(penguins, tmp_path, bucket,
                                                          monkeypatch):
    """Three runs (pushed, pushed, not pushed), every task with its own TMPDIR: nothing is left
    there afterwards (suite and spec downloads, the infra check, evaluate's baseline copies)."""
    from kfp import local

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)

    base = f"gs://{bucket('pipeline-test')}/{tmp_path.name}/penguins"
    outputs = tmp_path / "runs"

    def run(hparams):
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(outputs),
                   raise_on_error=True)
        training.pipeline(table=penguins, label="species", model_base_path=base,
                          slices=["island"], hyperparameters={"batch_size": 32, **hparams})
        return run_dir(outputs)

    first = run({"epochs": 1, "learning_rate": 0.001})  # weak: the next is clearly better
    assert ModelBasePath(base).versions() == [1]
    evaluation = json.loads((first / "evaluate" / "evaluation" / "evaluation.json").read_text())
    assert evaluation["blessed"] and evaluation["baseline_uri"] is None
    assert "island=Biscoe" in evaluation["metrics"]
    # evaluate's task process loaded TensorFlow only for the model: push reused its verdict.
    assert evaluation["infra"]["rows"] == evaluation["metrics"]["overall"]["examples"]
    assert "answered by evaluate's process" in (first / "push" / "summary").read_text()

    second = run({"epochs": 30, "learning_rate": 0.01})
    assert ModelBasePath(base).versions() == [1, 2]
    evaluation = json.loads((second / "evaluate" / "evaluation" / "evaluation.json").read_text())
    assert evaluation["baseline_uri"] == f"{base}/1"
    overall = evaluation["metrics"]["overall"]
    assert overall["accuracy"] > evaluation["baseline_metrics"]["overall"]["accuracy"]
    report = (second / "evaluate" / "report").read_text()
    assert report.startswith("# Evaluation: BLESSED") and "Candidate vs baseline" in report

    third = run({"epochs": 1, "learning_rate": 0.00001})
    assert ModelBasePath(base).versions() == [1, 2]
    evaluation = json.loads((third / "evaluate" / "evaluation" / "evaluation.json").read_text())
    assert not evaluation["blessed"] and evaluation["baseline_uri"] == f"{base}/2"
    assert not (third / "push").exists()
    assert leftovers(scratch) == []
