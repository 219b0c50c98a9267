"""Evaluate with real SavedModels: the baseline never blocks (corrupt, hand-written, old-format,
foreign and incompatible versions are skipped and named), a baseline that never saw a label
class is scored on the rows it knows, the naive floor judges alone when nothing is left, and a
breaking serving signature is refused unless allowed.

Versions are made by copying the session's trained penguins model and editing the copy, or by
wrapping its signature in a new SavedModel (other inputs, other classes): no extra training,
except the shuffled-label model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conveyor.evaluate.evaluate import evaluate_model
from conveyor.evaluate.outputs import markdown, write_outputs
from conveyor.registry import ModelBasePath
from conveyor.reports.evaluate import render

pytestmark = [pytest.mark.local, pytest.mark.slow]

EQUAL_OK = {"accuracy": {"min_improvement": 0.0}}  # a copy of the candidate passes vs itself


@pytest.fixture(scope="module")
def candidate(penguin_model):
    return penguin_model / "model"


@pytest.fixture(scope="module")
def dataset(penguin_model):
    return penguin_model / "ds"


def edit_transform(model: Path, change) -> None:
    path = model / "assets.extra" / "transform.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def copy_of(candidate: Path, folder: Path, change=None) -> Path:
    shutil.copytree(candidate, folder)
    if change is not None:
        edit_transform(folder, change)
    return folder


def wrapped(candidate: Path, folder: Path, *, drop: dict | None = None, add: tuple = (),
            keep_classes: list[int] | None = None) -> Path:
    """A new SavedModel around the candidate's signature: inputs in `drop` (name -> the value
    fed instead) removed, float inputs `add` added (ignored), and, with `keep_classes`, only
    those classes' probabilities (renormalized). Its transform.json is edited to match."""
    import tensorflow as tf

    holder = tf.Module()
    holder.inner = tf.saved_model.load(str(candidate))
    inner = holder.inner.signatures["serving_default"]
    spec = dict(inner.structured_input_signature[1])
    drop = drop or {}
    takes = {n: s for n, s in spec.items() if n not in drop}
    takes.update({n: tf.TensorSpec([None], tf.float32, name=n) for n in add})
    first = sorted(n for n in spec if n not in drop)[0]

    @tf.function(input_signature=[takes])
    def serve(features):
        rows = tf.shape(features[first])
        feed = {n: features[n] if n not in drop else tf.fill(rows, tf.constant(drop[n],
                                                                               spec[n].dtype))
                for n in spec}
        out = dict(inner(**feed))
        if keep_classes is None:
            return out
        p = tf.gather(out["probabilities"], keep_classes, axis=1)
        p = p / tf.reduce_sum(p, axis=1, keepdims=True)
        return {"probabilities": p, "class_id": tf.argmax(p, axis=1)}

    tf.saved_model.save(holder, str(folder), signatures={"serving_default": serve})
    shutil.copytree(candidate / "assets.extra", folder / "assets.extra")

    def change(data):
        for name in drop:
            del data["features"][name]
        for name in add:
            data["features"][name] = {"kind": "numeric", "transform": "none", "impute": 0.0,
                                      "mean": 0.0, "std": 1.0, "min": 0.0, "max": 1.0,
                                      "input": name}
        if keep_classes is not None:
            data["label_classes"] = [data["label_classes"][i] for i in keep_classes]
            data["label_counts"] = [data["label_counts"][i] for i in keep_classes]

    edit_transform(folder, change)
    return folder


def publish(base: Path, *models: Path) -> ModelBasePath:
    """Versions 1..n of `models`, as conveyor publishes them."""
    mbp = ModelBasePath(str(base))
    for model in models:
        mbp.publish(model)
    return mbp


def corrupt(candidate: Path, folder: Path) -> Path:
    shutil.copytree(candidate, folder)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01not a SavedModel proto \xff\xfe")
    return folder


def hand_written(candidate: Path, folder: Path) -> Path:
    """A SavedModel copied in by hand, without conveyor's assets.extra."""
    shutil.copytree(candidate, folder)
    shutil.rmtree(folder / "assets.extra")
    return folder


def old_format(candidate: Path, folder: Path) -> Path:
    return copy_of(candidate, folder, lambda d: d.update(format="conveyor.transform/v0"))


def dropped_column(candidate: Path, folder: Path) -> Path:
    """A version trained on a column this data no longer has (renamed 'island' -> 'Île')."""
    def change(data):
        data["features"]["Île"] = data["features"].pop("island")
    return copy_of(candidate, folder, change)


def reasons(result) -> dict[str, str]:
    return {s["uri"].rsplit("/", 1)[1]: s["reason"] for s in result.skipped_baselines}


def test_unusable_newer_versions_are_skipped_and_the_newest_usable_one_is_the_baseline(
        candidate, dataset, tmp_path):
    work = tmp_path / "made"
    base = publish(tmp_path / "base", copy_of(candidate, work / "good"),
                   corrupt(candidate, work / "corrupt"),
                   hand_written(candidate, work / "hand"),
                   old_format(candidate, work / "old"),
                   dropped_column(candidate, work / "dropped"))
    shutil.copytree(candidate, tmp_path / "base" / "007")  # TF Serving would serve it as v7
    assert base.versions() == [1, 2, 3, 4, 5]
    results = [evaluate_model(candidate, dataset, model_base_path=base.uri, thresholds=EQUAL_OK)
               for _ in range(2)]  # a second run finds the same
    for result in results:
        assert result.baseline_uri == base.version_uri(1) and result.baseline_version == 1
        assert result.newest_version_uri == base.version_uri(5)
        assert result.blessed, [c.line() for c in result.checks]
        why = reasons(result)
        assert set(why) == {"007", "2", "3", "4", "5"}
        assert "'007' is not a canonical version number" in why["007"]
        assert "as version 7" in why["007"]
        assert why["2"].startswith("it does not load")
        assert "not a conveyor model" in why["3"] and "transform.json" in why["3"]
        assert "not a conveyor model" in why["4"] and "conveyor.transform/v1" in why["4"]
        assert why["5"] == "it needs column(s) ['Île'] that split 'eval' does not have"
    report = markdown(results[0])
    assert "## Baselines skipped" in report
    assert f"- {base.version_uri(2)}: it does not load" in report
    # v5 loads, so it is the served contract: the same inputs and outputs as the candidate.
    assert results[0].signature_diff["against"] == base.version_uri(5)
    assert not results[0].signature_diff["breaking"]


def test_only_the_5_newest_versions_are_tried_then_the_naive_floor_judges_alone(
        candidate, dataset, tmp_path):
    work = tmp_path / "made"
    good = copy_of(candidate, work / "good")
    bad = [corrupt(candidate, work / f"corrupt{i}") for i in range(5)]
    base = publish(tmp_path / "base", good, *bad)
    result = evaluate_model(candidate, dataset, model_base_path=base.uri)
    assert result.baseline_uri is None and result.baseline_metrics is None
    assert sorted(reasons(result)) == ["2", "3", "4", "5", "6"]  # v1 is beyond the bound
    assert result.signature_diff is None  # nothing loadable is served among them
    assert result.blessed  # judged against the naive floor alone, which it beats
    floor = [c for c in result.checks if c.reference == "naive"]
    assert {c.metric for c in floor} == {"accuracy", "log_loss"} and all(c.passed for c in floor)
    assert "judged against the naive reference alone" in markdown(result)


def test_a_baseline_that_never_saw_a_class_is_scored_on_the_rows_it_knows(
        candidate, dataset, tmp_path):
    """The served model knew Adelie and Gentoo only; the candidate (and the eval split) has
    Chinstrap too. Not fatal, and not blamed on train or the transform."""
    older = wrapped(candidate, tmp_path / "two-classes", keep_classes=[0, 2])
    base = publish(tmp_path / "base", older)
    result = evaluate_model(candidate, dataset, model_base_path=base.uri)
    assert result.baseline_uri == base.version_uri(1) and not result.skipped_baselines
    chinstrap = int(result.metrics["overall"]["examples"]
                    - result.baseline_metrics["overall"]["examples"])
    assert chinstrap > 0
    assert f"label class(es) 'Chinstrap' ({chinstrap} rows) of 'species'" in result.baseline_note
    assert "train" not in result.baseline_note and "transform" not in result.baseline_note
    common = result.candidate_on_baseline_rows
    assert common["examples"] == result.baseline_metrics["overall"]["examples"]
    compared = [c for c in result.checks if c.reference == "baseline"]
    assert compared and compared[0].value == common["accuracy"]
    assert "candidate on baseline rows" in markdown(result)
    # The contract changed: a third probability (breaking: clients read positions), and an
    # output class_label added beside two others (not breaking).
    diff = result.signature_diff
    assert diff["outputs"]["added"] == ["class_label"] and diff["breaking"]
    assert diff["reasons"] == ["output 'probabilities' changed from float32 [None, 2] to "
                               "float32 [None, 3]"]
    assert not result.blessed
    assert "signature" in [c.metric for c in result.checks if not c.passed]


def test_a_binary_baseline_with_other_classes_is_skipped_naming_them(candidate, dataset,
                                                                       tmp_path):
    def binary(data):
        data["feature_spec"]["task"] = "binary"
    other = copy_of(candidate, tmp_path / "binary", binary)
    base = publish(tmp_path / "base", other)
    result = evaluate_model(candidate, dataset, model_base_path=base.uri)
    assert reasons(result) == {"1": "it is a binary model, the candidate a multiclass one"}
    assert result.blessed and result.baseline_uri is None


def test_an_explicit_baseline_that_cannot_be_evaluated_does_not_block(candidate, dataset,
                                                                        tmp_path):
    broken = corrupt(candidate, tmp_path / "given")
    base = publish(tmp_path / "base", copy_of(candidate, tmp_path / "good"))
    result = evaluate_model(candidate, dataset, baseline_path=broken, model_base_path=base.uri,
                            thresholds=EQUAL_OK)
    assert reasons(result) == {"given": reasons(result)["given"]}
    assert reasons(result)["given"].startswith("it does not load")
    assert result.baseline_uri == base.version_uri(1) and result.blessed


@pytest.mark.parametrize("allow", [False, True])
def test_an_input_removed_from_the_served_signature_is_refused_unless_allowed(
        candidate, dataset, tmp_path, allow):
    """The served version takes an input `beak_colour` the candidate no longer takes (its column is
    gone, so it is no baseline either): clients sending it are fine, but the served contract
    changed, and the gate says so by default."""
    served = wrapped(candidate, tmp_path / "served", add=("beak_colour",))
    base = publish(tmp_path / "base", served)
    result = evaluate_model(candidate, dataset, model_base_path=base.uri,
                            allow_breaking_signature=allow)
    diff = result.signature_diff
    assert diff["against"] == base.version_uri(1) and diff["inputs"]["removed"] == ["beak_colour"]
    assert diff["breaking"] and "input 'beak_colour' removed" in diff["reasons"]
    assert reasons(result) == {
        "1": "it needs column(s) ['beak_colour'] that split 'eval' does not have"}
    gate = [c for c in result.checks if c.metric == "signature"]
    assert len(gate) == 1 and gate[0].passed is allow and result.blessed is allow
    if not allow:
        assert base.version_uri(1) in gate[0].rule and "'beak_colour' removed" in gate[0].rule
    assert "**breaking**" in markdown(result)


def test_an_input_added_since_the_served_version_is_breaking(candidate, dataset, tmp_path):
    """The served version never took `sex`; its clients do not send it, and TF Serving's row
    format refuses a request without one of the signature's inputs."""
    served = wrapped(candidate, tmp_path / "served", drop={"sex": ""})
    base = publish(tmp_path / "base", served)
    result = evaluate_model(candidate, dataset, model_base_path=base.uri, thresholds=EQUAL_OK)
    assert result.baseline_uri == base.version_uri(1)  # it is a fine baseline
    assert result.signature_diff["inputs"]["added"] == ["sex"]
    assert not result.blessed
    failed = [c for c in result.checks if not c.passed]
    assert [c.metric for c in failed] == ["signature"]
    assert "input 'sex' added" in failed[0].rule
    allowed = evaluate_model(candidate, dataset, model_base_path=base.uri, thresholds=EQUAL_OK,
                             allow_breaking_signature=True)
    assert allowed.blessed
    # Through push: the refused one publishes nothing, the allowed one becomes version 2.
    from conveyor.model.infra import sample_rows
    from conveyor.push.push import NotBlessed, push
    from conveyor.transform.fit import Fitted

    sample = sample_rows(dataset, "eval", Fitted.load(candidate / "assets.extra"))
    for name, outcome in (("refused", result), ("allowed", allowed)):
        write_outputs(outcome, tmp_path / name, tmp_path / f"{name}.md")
    with pytest.raises(NotBlessed, match="signature"):
        push(candidate, tmp_path / "refused", base.uri, sample=sample)
    assert base.versions() == [1]
    pushed = push(candidate, tmp_path / "allowed", base.uri, sample=sample)
    assert pushed.version == 2 and base.versions() == [1, 2]


def test_a_constant_model_is_not_blessed_without_a_baseline(candidate, dataset, tmp_path):
    """It answers the train prior whatever the row: the naive reference itself."""
    import tensorflow as tf

    holder = tf.Module()
    holder.inner = tf.saved_model.load(str(candidate))
    inner = holder.inner.signatures["serving_default"]
    spec = dict(inner.structured_input_signature[1])
    counts = json.loads((candidate / "assets.extra" / "transform.json").read_text())[
        "label_counts"]
    prior = tf.constant([c / sum(counts) for c in counts], tf.float32)

    @tf.function(input_signature=[spec])
    def serve(features):
        rows = tf.shape(features["island"])[0]
        p = tf.tile(prior[None, :], [rows, 1])
        return {"probabilities": p, "class_id": tf.argmax(p, axis=1)}

    tf.saved_model.save(holder, str(tmp_path / "constant"), signatures={"serving_default": serve})
    shutil.copytree(candidate / "assets.extra", tmp_path / "constant" / "assets.extra")
    result = evaluate_model(tmp_path / "constant", dataset)
    assert not result.blessed
    floor = {c.metric: c for c in result.checks if c.reference == "naive"}
    assert not floor["accuracy"].passed and not floor["log_loss"].passed
    assert floor["accuracy"].value == pytest.approx(result.naive_metrics["overall"]["accuracy"])


def test_a_model_trained_on_shuffled_labels_is_not_blessed(penguin_model, tmp_path):
    import numpy as np
    import pyarrow as pa
    from support import fit_transform, train_model, write_dataset

    from conveyor.local.seed import penguins

    table = penguins()
    species = table.column("species").to_numpy(zero_copy_only=False)
    shuffled = np.random.default_rng(7).permutation(species)
    table = table.set_column(table.schema.get_field_index("species"), "species",
                             pa.array(shuffled, pa.string()))
    ds = write_dataset(tmp_path / "ds", table)
    model = train_model(ds, fit_transform(ds, tmp_path / "t"), tmp_path / "model",
                        hparams={"epochs": 8, "batch_size": 32, "learning_rate": 0.01})
    result = evaluate_model(model, ds)
    assert not result.blessed, [c.line() for c in result.checks]
    assert any(not c.passed for c in result.checks if c.reference == "naive")


def test_a_corrupt_newest_version_on_cloud_storage_is_skipped(candidate, dataset, tmp_path,
                                                              bucket):
    uri = f"gs://{bucket('evaluate-test')}/{tmp_path.name}/penguins"
    base = ModelBasePath(uri)
    base.publish(copy_of(candidate, tmp_path / "good"))
    base.publish(corrupt(candidate, tmp_path / "corrupt"))
    result = evaluate_model(candidate, dataset, model_base_path=uri, thresholds=EQUAL_OK)
    assert result.baseline_uri == f"{uri}/1" and result.newest_version_uri == f"{uri}/2"
    assert reasons(result)["2"].startswith("it does not load") and result.blessed
    assert base.versions() == [1, 2]


# -- blessing that means something: a paired test against the baseline ----------------------

def wrong_on(candidate: Path, folder: Path, values: list[float]) -> Path:
    """The candidate, except on rows whose bill_length_mm is one of `values`: there its class
    probabilities are rolled by one class, so its answer changes (to a wrong one where the
    candidate was right)."""
    import tensorflow as tf

    holder = tf.Module()
    holder.inner = tf.saved_model.load(str(candidate))
    inner = holder.inner.signatures["serving_default"]
    spec = dict(inner.structured_input_signature[1])
    chosen = tf.constant(values, spec["bill_length_mm"].dtype)

    @tf.function(input_signature=[spec])
    def serve(features):
        out = dict(inner(**features))
        hit = tf.reduce_any(tf.equal(features["bill_length_mm"][:, None], chosen[None, :]), axis=1)
        p = tf.where(hit[:, None], tf.roll(out["probabilities"], 1, axis=1), out["probabilities"])
        return {"probabilities": p, "class_id": tf.argmax(p, axis=1)}

    tf.saved_model.save(holder, str(folder), signatures={"serving_default": serve})
    shutil.copytree(candidate / "assets.extra", folder / "assets.extra")
    return folder


@pytest.fixture(scope="module")
def rows_the_candidate_gets_right(candidate, dataset):
    """bill_length_mm values that identify one eval row each, on which the candidate is right."""
    import numpy as np

    from conveyor.evaluate.loading import ServingModel
    from conveyor.io import Dataset

    table = Dataset(dataset).read_table("eval")
    model = ServingModel(candidate)
    guess = model.predict(table.combine_chunks().to_batches()[0]).argmax(axis=1)
    classes = list(model.fitted.label_classes)
    truth = [classes.index(s) if s in classes else -1 for s in table.column("species").to_pylist()]
    lengths = table.column("bill_length_mm").to_pylist()
    once = {v for v in lengths if v is not None and lengths.count(v) == 1}
    return [v for v, g, t in zip(lengths, guess, truth) if v in once and g == t and np.isfinite(v)]


def test_better_by_noise_is_not_blessed_but_clearly_better_is(candidate, dataset, tmp_path,
                                                               rows_the_candidate_gets_right):
    """Served: the candidate wrong on 2 rows it gets right (an accuracy 2 rows lower), then wrong
    on 30. Better by 2 rows is what a retrain on the same data often is: the default (paired
    McNemar mid-p at 0.05: p = 0.125) does not bless it, plain `min_improvement` does; better
    by 30 is blessed in both modes. The interval is in the report either way."""
    right = rows_the_candidate_gets_right
    assert len(right) >= 30, len(right)
    plain = {"accuracy": {"min_improvement": 0.0}}
    for count, blessed_by_default in ((2, False), (30, True)):
        served = wrong_on(candidate, tmp_path / f"served-{count}", right[:count])
        base = publish(tmp_path / f"base-{count}", served)
        result = evaluate_model(candidate, dataset, model_base_path=base.uri)
        paired = result.comparison["accuracy"]
        assert paired["improvement"] == pytest.approx(count / paired["rows"])
        assert f"{count} rows only the candidate gets right, 0 only the baseline" in paired["note"]
        assert result.blessed is blessed_by_default, [c.line() for c in result.checks]
        test = [c for c in result.checks if "significantly" in c.rule]
        assert len(test) == 1 and test[0].passed is blessed_by_default
        assert (paired["p_value"] < 0.05) is blessed_by_default
        assert "Improvement over the baseline, paired on the same rows" in markdown(result)
        assert "Improvement over the baseline, paired on the same rows" in render(result)
        assert evaluate_model(candidate, dataset, model_base_path=base.uri,
                              thresholds=plain).blessed
    # A rerun of the served model itself is never an improvement.
    same = evaluate_model(served, dataset, model_base_path=base.uri)
    assert same.comparison["accuracy"]["improvement"] == 0 and not same.blessed


def test_evaluate_records_the_predictions_it_scored_for_the_monitor(candidate, dataset, tmp_path):
    """predictions.json: the class_label counts of exactly the rows evaluate scored (the
    model's own answers on the eval split), in the format the monitor reads."""
    from collections import Counter

    import tensorflow as tf

    from conveyor.io import Dataset
    from conveyor.model.inputs import model_inputs
    from conveyor.model.predictions import PREDICTIONS_FORMAT
    from conveyor.transform.fit import Fitted

    result = evaluate_model(candidate, dataset)
    write_outputs(result, tmp_path / "evaluation", tmp_path / "report.md")
    record = json.loads((tmp_path / "evaluation" / "predictions.json").read_text())
    assert record == json.loads(json.dumps(result.predictions))
    assert (record["format"], record["task"], record["output"]) == (
        PREDICTIONS_FORMAT, "multiclass", "class_label")

    fitted = Fitted.load(candidate / "assets.extra")
    serve = tf.saved_model.load(str(candidate)).signatures["serving_default"]
    table = Dataset(dataset).read_table("eval")
    table = table.filter(table.column("species").is_valid())
    answered = serve(**{n: tf.constant(a) for n, a in model_inputs(
        table.combine_chunks().to_batches()[0], fitted).items()})["class_label"].numpy()
    expected = Counter(v.decode() for v in answered)
    assert dict(record["statistics"]["values"]) == dict(expected)
    assert record["statistics"]["count"] == table.num_rows



def test_the_champion_is_the_baseline_not_a_newer_rolled_back_challenger(candidate, dataset,
                                                                         tmp_path, capsys):
    """After a rollback the challenger stays published (v2, newer) and the labels name v1 the
    champion: the next candidate must beat what is served, v1. Unreadable labels fall back to
    the newest versions, with a note, and never block."""
    work = tmp_path / "made"
    base = publish(tmp_path / "base", copy_of(candidate, work / "v1"),
                   copy_of(candidate, work / "v2"))
    assert evaluate_model(candidate, dataset, model_base_path=base.uri).baseline_version == 2
    base.update_labels(lambda labels: {"champion": 1})
    result = evaluate_model(candidate, dataset, model_base_path=base.uri, thresholds=EQUAL_OK)
    assert result.baseline_version == 1 and result.baseline_uri == base.version_uri(1)
    assert result.signature_diff["against"] == base.version_uri(1)
    assert result.newest_version_uri == base.version_uri(2)

    (tmp_path / "base" / "labels.json").write_text("{not json")
    result = evaluate_model(candidate, dataset, model_base_path=base.uri)
    assert result.baseline_version == 2
    assert "trying the newest versions as baselines" in capsys.readouterr().out


def test_push_carries_the_scored_predictions_into_the_version(candidate, dataset, tmp_path):
    """evaluate's predictions.json reaches the pushed version's assets.extra, where the monitor
    reads the eval-time prediction distribution."""
    from conveyor.model.infra import sample_rows
    from conveyor.push.push import push
    from conveyor.transform.fit import Fitted

    result = evaluate_model(candidate, dataset)
    write_outputs(result, tmp_path / "evaluation", tmp_path / "report.md")
    fitted = Fitted.load(candidate / "assets.extra")
    pushed = push(candidate, tmp_path / "evaluation", str(tmp_path / "base"),
                  sample=sample_rows(dataset, "eval", fitted))
    folder = Path(pushed.uri)
    assert json.loads((folder / "assets.extra" / "predictions.json").read_text()) == \
        json.loads(json.dumps(result.predictions))
    assert not (candidate / "assets.extra" / "predictions.json").exists()  # the input untouched
