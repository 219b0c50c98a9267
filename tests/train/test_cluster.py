"""The training process's role from TF_CONFIG / CLUSTER_SPEC (no TensorFlow needed)."""

import json
import subprocess
import sys

import pytest

from conveyor.errors import InputError
from conveyor.train.cluster import SINGLE, Cluster, from_environment, parse


def tf_config(cluster, task_type, index):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_no_variable_is_a_single_worker_as_today():
    assert from_environment({}) == SINGLE
    assert from_environment({"TF_CONFIG": "  ", "CLUSTER_SPEC": ""}) == SINGLE
    assert not SINGLE.multi_worker and SINGLE.is_chief and SINGLE.num_workers == 1


def test_one_worker_in_a_cluster_is_a_single_worker():
    one = from_environment({"TF_CONFIG": tf_config({"worker": ["10.0.0.1:2222"]}, "worker", 0)})
    assert not one.multi_worker and one.is_chief and one.num_workers == 1
    assert one.source == "TF_CONFIG"
    chief_only = parse(tf_config({"chief": ["h:1"], "evaluator": ["h:2"]}, "chief", 0))
    assert not chief_only.multi_worker and chief_only.is_chief


def test_chief_and_workers_are_numbered_chief_first():
    cluster = {"chief": ["c:1"], "worker": ["w0:1", "w1:1", "w2:1"], "evaluator": ["e:1"]}
    roles = [parse(tf_config(cluster, "chief", 0))] + [
        parse(tf_config(cluster, "worker", i)) for i in range(3)]
    assert [r.worker_index for r in roles] == [0, 1, 2, 3]
    assert [r.is_chief for r in roles] == [True, False, False, False]
    assert {r.num_workers for r in roles} == {4}
    # the strategy's cluster holds the training tasks only (no evaluator in the ring)
    assert roles[2].spec == {"chief": ("c:1",), "worker": ("w0:1", "w1:1", "w2:1")}
    assert roles[2] == Cluster("worker", 1, 4, False, 2, roles[2].spec, "TF_CONFIG")


def test_without_a_chief_entry_worker_zero_is_the_chief():
    cluster = {"worker": ["127.0.0.1:5000", "127.0.0.1:5001"]}
    first, second = (parse(tf_config(cluster, "worker", i)) for i in (0, 1))
    assert first.is_chief and not second.is_chief
    assert (first.worker_index, second.worker_index) == (0, 1)
    assert "worker 1 of 2" in second.describe() and "non-chief" in second.describe()


def test_vertex_cluster_spec_maps_worker_pools():
    spec = {"cluster": {"workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
                        "workerpool1": ["cmle-training-workerpool1-ab-0:2222",
                                        "cmle-training-workerpool1-ab-1:2222"],
                        "workerpool2": ["cmle-training-workerpool2-ab-0:2222"]},
            "environment": "cloud", "task": {"type": "workerpool1", "index": 1, "trial": ""},
            "job": "{\"python_module\":\"\",\"package_uris\":[]}"}
    role = from_environment({"CLUSTER_SPEC": json.dumps(spec)})
    assert role.source == "CLUSTER_SPEC"
    assert (role.task_type, role.task_index, role.worker_index) == ("worker", 1, 2)
    assert role.num_workers == 3 and not role.is_chief
    assert set(role.spec) == {"chief", "worker"}  # the reduction-server pool takes no part
    chief = parse(json.dumps({**spec, "task": {"type": "workerpool0", "index": 0}}),
                  "CLUSTER_SPEC")
    assert chief.is_chief and chief.task_type == "chief"
    with pytest.raises(InputError, match="'ps':0.*chief and worker tasks only"):
        parse(json.dumps({**spec, "task": {"type": "workerpool2", "index": 0}}), "CLUSTER_SPEC")


def test_tf_config_wins_over_cluster_spec():
    tf = tf_config({"worker": ["a:1", "b:1"]}, "worker", 1)
    vertex = json.dumps({"cluster": {"workerpool0": ["x:1"]},
                         "task": {"type": "workerpool0", "index": 0}})
    role = from_environment({"TF_CONFIG": tf, "CLUSTER_SPEC": vertex})
    assert role.source == "TF_CONFIG" and role.worker_index == 1


@pytest.mark.parametrize("text, words", [
    ("{not json", "TF_CONFIG: not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"cluster": ["a:1"]}', "'cluster' must be an object"),
    (tf_config({"worker": "a:1"}, "worker", 0), "cluster['worker'] must be a list"),
    (tf_config({"worker": ["a:1", "nohost"]}, "worker", 0), "'nohost' is not 'host:port'"),
    (tf_config({"worker": ["a:1", "b:x"]}, "worker", 0), "'b:x' is not 'host:port'"),
    (tf_config({"worker": ["a:1", "b:2"], "master": ["m:1"]}, "worker", 0),
     "unknown task type(s) ['master']"),
    (tf_config({"chief": ["a:1", "b:1"]}, "chief", 0), "2 'chief' tasks"),
    (json.dumps({"cluster": {"worker": ["a:1", "b:1"]}}), "'task' must be an object"),
    (tf_config({"worker": ["a:1", "b:1"]}, "", 0), "task 'type' must be"),
    (tf_config({"worker": ["a:1", "b:1"]}, "chief", 0), "task type 'chief' is not in 'cluster'"),
    (tf_config({"worker": ["a:1", "b:1"]}, "worker", 2), "index 2 is out of range"),
    (tf_config({"worker": ["a:1", "b:1"]}, "worker", -1), "whole number >= 0, got -1"),
    (tf_config({"worker": ["a:1", "b:1"]}, "worker", True), "whole number >= 0, got True"),
    (tf_config({"worker": ["a:1", "b:1"]}, "worker", 1.5), "whole number >= 0, got 1.5"),
    (tf_config({"ps": ["p:1"], "worker": ["a:1", "b:1"]}, "ps", 0), "no parameter servers"),
    (tf_config({"evaluator": ["e:1"]}, "evaluator", 0), "names no chief or worker task"),
])
def test_malformed_configs_are_named(text, words):
    with pytest.raises(InputError) as err:
        parse(text)
    assert words in str(err.value)
    assert str(err.value).startswith("TF_CONFIG: ")


def test_cluster_spec_errors_name_it():
    with pytest.raises(InputError, match=r"CLUSTER_SPEC: unknown worker pool 'workerpool7'"):
        from_environment({"CLUSTER_SPEC": json.dumps({
            "cluster": {"workerpool7": ["a:1"]}, "task": {"type": "workerpool7", "index": 0}})})
    with pytest.raises(InputError, match="CLUSTER_SPEC: not valid JSON"):
        from_environment({"CLUSTER_SPEC": "cluster=a"})


def test_unicode_hosts_and_string_indexes_are_read_as_given():
    # Kubernetes and Vertex hand indexes as numbers; a quoted digit string is accepted too
    role = parse(tf_config({"worker": ["wörker-0.svc:2222", "wörker-1.svc:2222"]}, "worker", "1"))
    assert role.worker_index == 1 and role.spec["worker"][0] == "wörker-0.svc:2222"


def test_importable_without_tensorflow():
    code = ("import sys, conveyor.train.cluster as c; c.from_environment(); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
