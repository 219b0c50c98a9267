"""Publishing versions under a model base path: atomic for readers, never overwritten, only
blessed models that pass the infra check."""

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conveyor.errors import InputError
from conveyor.model import infra
from conveyor.model.infra import InfraCheckFailed, sample_rows
from conveyor.push.push import NotBlessed, StaleBaseline, push
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(penguin_model, tmp_path_factory):
    """The session's penguins model, and a blessing and a refusal of it."""
    root = tmp_path_factory.mktemp("trained")
    for name in ("ds", "model"):
        (root / name).symlink_to(penguin_model / name)
    for name, blessed in (("blessed", True), ("unblessed", False)):
        (root / name).mkdir()
        (root / name / "evaluation.json").write_text(json.dumps({
            "blessed": blessed, "checks": [{"metric": "accuracy", "value": 0.5,
                                            "rule": ">= 0.9", "passed": blessed}]}))
    return root


def sample(trained):
    from conveyor.transform.fit import Fitted

    fitted = Fitted.load(trained / "model" / "assets.extra")
    return sample_rows(trained / "ds", "eval", fitted)


def complete(base: ModelBasePath, version: int, cache: Path) -> bool:
    """Every file of the model is there, saved_model.pb and variables included."""
    local = base.fetch(version, cache)
    return (local / "saved_model.pb").exists() and any((local / "variables").glob("*.index"))


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_versions_increase_and_a_polling_reader_never_sees_a_partial_one(
        trained, tmp_path, where, bucket):
    if where == "gcs":
        uri = f"gs://{bucket('push-test')}/{tmp_path.name}/penguins"
    else:
        uri = str(tmp_path / "models" / "penguins")
    base = ModelBasePath(uri)
    seen, partial, stop, polled = set(), [], threading.Event(), threading.Event()

    def reader():
        cache = tmp_path / "reader-cache"
        while not stop.is_set():
            for version in base.versions():
                if version not in seen:
                    seen.add(version)
                    if not complete(base, version, cache):
                        partial.append(version)
            polled.set()

    thread = threading.Thread(target=reader)
    thread.start()
    versions = []
    try:
        for _ in range(3):
            versions.append(base.publish(trained / "model"))
            # Let the reader finish a whole pass after each publish (it also polls during the
            # next one): on a busy machine it could otherwise miss all three.
            for _ in range(2):
                polled.clear()
                polled.wait(timeout=60)
    finally:
        stop.set()
        thread.join()
    assert versions == [1, 2, 3]
    assert base.versions() == [1, 2, 3]
    assert seen == {1, 2, 3} and not partial


def test_push_refuses_an_unblessed_model_even_when_called_directly(trained, tmp_path):
    with pytest.raises(NotBlessed, match=r"not blessed.*accuracy = 0\.5: >= 0\.9"):
        push(trained / "model", trained / "unblessed", str(tmp_path / "base"),
             sample=sample(trained))
    assert not (tmp_path / "base").exists()


def test_a_model_that_fails_its_infra_check_is_not_pushed(trained, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(trained / "model", broken)
    shutil.rmtree(broken / "variables")
    with pytest.raises(InfraCheckFailed, match="does not load and answer in a fresh process"):
        push(broken, trained / "blessed", str(tmp_path / "base"), sample=sample(trained))
    assert ModelBasePath(str(tmp_path / "base")).versions() == []


def test_blessed_model_is_pushed_after_its_infra_check(trained, tmp_path):
    result = push(trained / "model", trained / "blessed", str(tmp_path / "base"),
                  sample=sample(trained))
    assert result.version == 1 and result.infra["outputs"]["probabilities"] == [8, 3]
    assert "Pushed version 1" in result.markdown()
    with pytest.raises(InputError, match="not a SavedModel"):
        ModelBasePath(str(tmp_path / "base")).publish(tmp_path)


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_a_rerun_push_of_the_same_model_adds_no_version(trained, tmp_path, where, bucket):
    """A push task retried after it had published (killed before it reported) finds its version;
    a changed model, blessed again, is a new version."""
    base = (f"gs://{bucket('push-test')}/{tmp_path.name}/penguins" if where == "gcs"
            else str(tmp_path / "base"))
    rows = sample(trained)
    first = push(trained / "model", trained / "blessed", base, sample=rows)
    again = push(trained / "model", trained / "blessed", base, sample=rows)
    assert (first.version, first.new) == (1, True) and (again.version, again.new) == (1, False)
    assert again.markdown().startswith("# Version 1 already holds this model; no version added")
    changed = tmp_path / "changed"
    shutil.copytree(trained / "model", changed)
    (changed / "assets.extra" / "note.txt").write_text("retrained\n")
    with pytest.raises(StaleBaseline, match="another run published v1 after this model was "
                                            "evaluated without a baseline; re-run evaluate"):
        push(changed, trained / "blessed", base, sample=rows)
    against_v1 = evaluation(tmp_path / "ev", baseline_uri=ModelBasePath(base).version_uri(1))
    assert push(changed, against_v1, base, sample=rows).version == 2
    assert ModelBasePath(base).versions() == [1, 2]


def evaluation(folder: Path, **fields) -> Path:
    """A blessing evaluation.json, as evaluate writes it, with `fields`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evaluation.json").write_text(json.dumps({"blessed": True, "checks": [],
                                                        **fields}))
    return folder


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_push_refuses_when_another_run_published_after_its_evaluation(
        trained, tmp_path, where, bucket):
    """Two training runs evaluated against v1: the first to push publishes v2, the other is
    refused, never published without being compared with v2. Its summary names the skipped
    hand-made folder."""
    uri = (f"gs://{bucket('push-test')}/{tmp_path.name}/penguins" if where == "gcs"
           else str(tmp_path / "base"))
    base = ModelBasePath(uri)
    rows = sample(trained)
    assert push(trained / "model", trained / "blessed", uri, sample=rows).version == 1
    runs = []
    for name in ("run-a", "run-b"):
        runs.append(tmp_path / name)
        shutil.copytree(trained / "model", runs[-1])
        (runs[-1] / "assets.extra" / "run.txt").write_text(name)
    against_v1 = evaluation(tmp_path / "ev", baseline_uri=base.version_uri(1))
    first = push(runs[0], against_v1, uri, sample=rows)
    assert (first.version, first.new, first.skipped) == (2, True, [])
    assert "- baseline: v1, still the newest" in first.markdown()
    with pytest.raises(StaleBaseline) as refused:
        push(runs[1], against_v1, uri, sample=rows)
    assert str(refused.value) == ("push: another run published v2 after this model was "
                                  "evaluated against v1; re-run evaluate")
    assert base.versions() == [1, 2]
    # re-evaluated against v2; meanwhile someone copied a folder 3/ by hand
    if base.gcs:
        from conveyor import gcp

        gcp.storage_client().bucket(base.bucket_name).blob(
            base._key("3/saved_model.pb")).upload_from_string(b"by hand")
    else:
        (Path(uri) / "3").mkdir()
        (Path(uri) / "3" / "notes.txt").write_text("by hand")
    result = push(runs[1], evaluation(tmp_path / "ev2", baseline_uri=base.version_uri(2)), uri,
                  sample=rows)
    assert (result.version, result.skipped) == (4, [3])
    assert ("- skipped version numbers 3: numeric folders under the base path that conveyor "
            "did not publish (never written into)") in result.markdown()
    # an explicit baseline outside the base path is the user's comparison: not checked
    other = push(tmp_path / "run-a", evaluation(tmp_path / "ev3", baseline_uri="/elsewhere/7"),
                 uri, sample=rows)
    assert other.version == 5 and "not a version of this base path" in other.markdown()


def evaluate_in_a_fresh_process(model: Path, dataset: Path, out: Path) -> dict:
    """Evaluate as the KFP task does: a new interpreter, TensorFlow imported only for it."""
    code = ("import sys; from conveyor.evaluate.evaluate import evaluate_model; "
            "from conveyor.evaluate.outputs import write_outputs; "
            "r = evaluate_model(sys.argv[1], sys.argv[2], thresholds={'accuracy': {'min': 0.5}});"
            " write_outputs(r, sys.argv[3], sys.argv[3] + '/report.md')")
    subprocess.run([sys.executable, "-c", code, str(model), str(dataset), str(out)], check=True)
    return json.loads((out / "evaluation.json").read_text())


def test_push_reuses_the_verdict_of_a_fresh_evaluate_for_the_same_files_only(
        trained, tmp_path, monkeypatch):
    evaluation_json = evaluate_in_a_fresh_process(trained / "model", trained / "ds",
                                                  tmp_path / "ev")
    assert evaluation_json["blessed"] and evaluation_json["infra"]["rows"] > 0
    assert evaluation_json["infra"]["outputs"]["probabilities"] == [1, 3]
    assert "push reuses this" in (tmp_path / "ev" / "report.md").read_text()
    started = []
    real_check = infra.check
    monkeypatch.setattr(infra, "check", lambda *a: started.append(a) or real_check(*a))

    result = push(trained / "model", tmp_path / "ev", str(tmp_path / "base"),
                  sample=sample(trained))
    assert (result.version, result.infra["where"], started) == (1, "evaluate", [])
    assert "answered by evaluate's process (the same files)" in result.markdown()

    # Other files than the ones evaluated: the verdict does not cover them. (The same
    # evaluation, as if it had been made against v1, so that the baseline check lets it pass.)
    changed = tmp_path / "changed"
    shutil.copytree(trained / "model", changed)
    (changed / "assets.extra" / "note.txt").write_text("retrained\n")
    v1 = ModelBasePath(str(tmp_path / "base")).version_uri(1)
    against_v1 = evaluation(tmp_path / "ev-v1", **{
        **evaluation_json, "baseline_uri": v1, "newest_version_uri": v1})
    result = push(changed, against_v1, str(tmp_path / "base"), sample=sample(trained))
    assert (result.version, result.infra["where"], len(started)) == (2, "push", 1)
    assert "in a fresh process" in result.markdown()


def test_an_evaluation_in_a_process_that_had_tensorflow_records_no_verdict(trained, tmp_path):
    """This process imported TensorFlow (it trained the model): it may be the saver, so its
    evaluation cannot stand for a fresh load, and push checks for itself."""
    from conveyor.evaluate.evaluate import evaluate_model

    result = evaluate_model(trained / "model", trained / "ds")
    assert result.infra is None and "imported before" in result.infra_note
