"""One definition per parameter (`conveyor.params`, and each step's own: train's
hyper-parameters, evaluate's thresholds, validate's policies), one retry policy for the
pipelines' tasks (`conveyor.pipelines.retry`), and fail-fast in every task body."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from kfp import dsl

from conveyor import params
from conveyor.errors import InputError
from conveyor.failfast import marker

PACKAGE = Path(params.__file__).resolve().parent


def test_an_unknown_name_is_named_with_a_close_match_and_the_known_ones():
    message = params.unknown("hyperparameters", ["lerning_rate"], ["learning_rate", "epochs"])
    assert message == ("hyperparameters: unknown name(s) ['lerning_rate'] (did you mean "
                       "'learning_rate'?) (known: learning_rate, epochs)")
    assert "did you mean" not in params.unknown("x", ["zzz"], ["learning_rate"])
    assert params.did_you_mean(["epoch", "sead"], ["epochs", "seed"]) == \
        " (did you mean: 'epoch' -> 'epochs', 'sead' -> 'seed'?)"


def test_defaults_are_fresh_copies_and_docstrings_come_from_the_definitions():
    first = params.default("split_ratios")
    first["test"] = 0.1
    assert params.default("split_ratios") == {"train": 0.8, "eval": 0.2}
    with pytest.raises(InputError, match="has no default"):
        params.default("label")
    with pytest.raises(InputError, match="did you mean 'split_key'"):
        params.parameter("split_kye")
    doc = params.docstring("Do it.", ["project", "mine"], mine="Mine.")
    assert doc.splitlines() == ["Do it.", "", "Args:",
                                f"    project: {params.PARAMETERS['project'].doc}",
                                "    mine: Mine."]


@pytest.mark.parametrize("value, words", [
    ({"lerning_rate": 0.1}, "did you mean 'learning_rate'?"),
    ({"learning_rate": "fast"}, "learning_rate='fast': must be a number"),
    ({"epochs": 2.5}, "epochs=2.5: must be a whole number"),
    ({"hidden_units": 64}, "hidden_units=64: must be a list of whole numbers"),
    ({"model": "dnm"}, "did you mean 'dnn'?"),
    ([1], "a JSON object of names and values"),
])
def test_hyperparameters_are_checked_without_tensorflow(value, words):
    from conveyor.train.hyperparameters import Hyperparameters, check

    [problem] = check(value)
    assert problem.startswith("hyperparameters: ") and words in problem, problem
    assert check({"learning_rate": "0.01", "epochs": 3.0, "hidden_units": [8.0]}) == []
    assert Hyperparameters.from_dict({"epochs": 3.0}).epochs == 3


def test_thresholds_are_checked_by_their_names_and_keys():
    from conveyor.evaluate.thresholds import check

    assert check({"auc": {"min": 0.7}, "log_loss": {"min_improvement_over_naive": 0.1},
                  "naive_floor": False}) == []
    problems = check({"acuracy": {"min": 0.5}, "auc": {"mni": 0.5}, "rmse": {"max": "x"},
                      "naive_floor": "no"})
    assert any("unknown metric 'acuracy' (did you mean 'accuracy'?)" in p for p in problems)
    assert any("unknown rule 'mni' (did you mean 'min'?)" in p for p in problems)
    assert any("'rmse' max must be a finite number" in p for p in problems)
    assert any("'naive_floor' is true or false" in p for p in problems)


def test_the_policies_are_validates():
    from conveyor.validate.policies import POLICIES, check

    assert POLICIES == ("fail", "warn") and check("warn") == []
    assert check("warm", "drift_policy") == [
        "drift_policy: 'warm' is not one of ('fail', 'warn') (did you mean 'warn'?)"]


def test_every_retried_task_has_the_one_policy_and_no_set_retry_is_hand_written():
    from conveyor.pipelines import PIPELINES, retry

    for path in (PACKAGE / "pipelines").glob("*.py"):
        if path.name != "retry.py":
            assert ".set_retry(" not in path.read_text(), path
    retried = set()
    for name, module in PIPELINES.items():
        spec = importlib.import_module(module).pipeline.pipeline_spec
        policies = []
        for component in [spec.root, *spec.components.values()]:
            if component.WhichOneof("implementation") == "dag":
                policies += [t.retry_policy for t in component.dag.tasks.values()
                             if t.HasField("retry_policy")]
        if policies:
            retried.add(name)
        for policy in policies:
            assert (policy.max_retry_count, policy.backoff_duration.seconds,
                    policy.backoff_factor) == (retry.RETRIES, 2, retry.BACKOFF_FACTOR), name
    assert retried == set(PIPELINES) - {"batch_prediction"}


def _calls_fail_once(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
        node.func, "attr", "")) == "fail_once" for node in ast.walk(tree))


def test_every_task_body_runs_under_fail_fast():
    bodies = sorted(PACKAGE.glob("*/tasks.py"))
    assert len(bodies) >= 9
    assert [p.parent.name for p in bodies if not _calls_fail_once(p)] == []


def test_a_task_that_failed_on_bad_input_fails_its_retry_at_once(tmp_path):
    from conveyor.transform import tasks

    out = dsl.Artifact(uri=str(tmp_path / "task" / "preprocessing"))
    missing = dsl.Dataset(uri=str(tmp_path / "no-dataset"))
    with pytest.raises(InputError, match="not a conveyor Dataset"):
        tasks.transform(missing, out, label="y")
    assert marker(out.path).exists()
    with pytest.raises(InputError, match=r"transform: not retried"):
        tasks.transform(missing, out, label="y")


def test_submit_checks_names_and_values_by_the_same_definitions():
    from conveyor.pipelines.resolve import check_names as check_params
    from conveyor.pipelines.resolve import parse_params

    with pytest.raises(InputError) as info:
        check_params("training", {"labl": "y", "policy": "warm",
                                  "thresholds": {"acuracy": {"min": 0.5}}})
    message = str(info.value)
    for words in ("has no parameter(s) ['labl'] (did you mean 'label'?)",
                  "policy: 'warm' is not one of", "unknown metric 'acuracy'"):
        assert words in message, message
    check_params("training", {"label": "y", "policy": "warn"})
    with pytest.raises(InputError, match="--param: label is given twice"):
        parse_params(["label=a", "label=b"])
