"""Compiled specs are products: checked in, deterministic, fresh, and loadable."""

from pathlib import Path

import pytest
import yaml

from conveyor import compile as compiler
from conveyor import images
from conveyor.pipelines import distributed

pytestmark = pytest.mark.golden
REPO = Path(__file__).resolve().parents[2]
SPECS = compiler.spec_paths(REPO)
KFP_SPECS = sorted(name for name in SPECS if not name.startswith("manifest:"))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    root = tmp_path_factory.mktemp("compiled")
    compiler.compile_all(root)
    return compiler.spec_paths(root)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_checked_in_spec_is_fresh(name, fresh):
    # Fails when a component or pipeline changed without `make compile`.
    assert SPECS[name].exists(), f"{SPECS[name]} missing: run make compile"
    assert compiler.normalize(SPECS[name].read_text()) == \
        compiler.normalize(fresh[name].read_text()), f"{SPECS[name]} is stale: run make compile"


def test_compiling_twice_gives_the_same_bytes(fresh, tmp_path):
    again = compiler.compile_all(tmp_path)
    for name, path in zip(compiler.spec_paths(tmp_path), again):
        assert path.read_bytes() == fresh[name].read_bytes()


@pytest.mark.parametrize("name", KFP_SPECS)
def test_spec_round_trips_through_kfp(name, tmp_path):
    # Load the checked-in YAML as a component and compile it again: the same spec comes back.
    from kfp import compiler as kfp_compiler
    from kfp import components

    loaded = components.load_component_from_file(str(SPECS[name]))
    out = tmp_path / "again.yaml"
    kfp_compiler.Compiler().compile(loaded, str(out))
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(SPECS[name].read_text())


@pytest.mark.parametrize("name", KFP_SPECS)
def test_every_executor_runs_conveyors_image_without_pip_installs(name):
    spec = yaml.safe_load(SPECS[name].read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert executors
    for executor in executors.values():
        container = executor["container"]
        if container["image"] == distributed.GCPC_IMAGE:  # a Vertex AI custom job's launcher:
            gpu = "accelerator_count" in " ".join(container["args"])  # its pools run conveyor
            values = {"service_account": "", "accelerator_type": "T4", "accelerator_count": 1}
            pools = distributed.payload_of(executor, values)["job_spec"]["worker_pool_specs"]
            for pool in pools:
                assert pool["container_spec"]["image_uri"] == images.image(
                    variant="gpu" if gpu else "cpu")
                assert "pip install" not in " ".join(pool["container_spec"]["command"])
            continue
        # Only training on GPUs uses the GPU image, and it is given accelerators.
        gpu = "accelerator" in container.get("resources", {})
        assert container["image"] == images.image(variant="gpu" if gpu else "cpu")
        assert "pip install" not in " ".join(container["command"])


def test_registry_is_a_compile_parameter(tmp_path):
    path = compiler.compile_one("pipeline:training", tmp_path / "p.yaml", registry="eu.gcr.io/acme")
    spec = yaml.safe_load(path.read_text())
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == \
        {images.image("eu.gcr.io/acme"), images.image("eu.gcr.io/acme", "gpu")}


def test_registry_reaches_the_worker_pools_of_a_custom_job(tmp_path):
    path = compiler.compile_one("pipeline:training_distributed", tmp_path / "p.yaml",
                                registry="eu.gcr.io/acme")
    text = path.read_text()
    assert images.DEFAULT_REGISTRY not in text
    spec = yaml.safe_load(text)
    used = set()
    for executor in spec["deploymentSpec"]["executors"].values():
        if executor["container"]["image"] == distributed.GCPC_IMAGE:
            payload = distributed.payload_of(executor, {
                "service_account": "", "accelerator_type": "T4", "accelerator_count": 1})
            used |= {p["container_spec"]["image_uri"]
                     for p in payload["job_spec"]["worker_pool_specs"]}
    assert used == {images.image("eu.gcr.io/acme"), images.image("eu.gcr.io/acme", "gpu")}


@pytest.mark.parametrize("pipeline", ["training", "continuous_training"])
def test_training_runs_on_gpus_only_when_given_a_gpu_count(pipeline):
    spec = yaml.safe_load((REPO / "pipelines" / pipeline / "pipeline.yaml").read_text())
    assert spec["root"]["inputDefinitions"]["parameters"]["train_gpus"]["defaultValue"] == 0
    executors = spec["deploymentSpec"]["executors"]
    on_gpu = {name: e["container"] for name, e in executors.items()
              if "accelerator" in e["container"].get("resources", {})}
    assert on_gpu  # one per place the pipeline trains (continuous training has two)
    for name, container in on_gpu.items():
        assert name.startswith("exec-train")
        assert container["resources"]["accelerator"] == {
            "resourceCount": "{{$.inputs.parameters['pipelinechannel--train_gpus']}}",
            "resourceType": "{{$.inputs.parameters['pipelinechannel--train_accelerator']}}"}
    # The branch conditions: CPU when the count is 0, the GPU image otherwise.
    conditions = [task["triggerPolicy"]["condition"]
                  for component in [spec["root"], *spec["components"].values()]
                  for task in component.get("dag", {}).get("tasks", {}).values()
                  if "triggerPolicy" in task and "train_gpus" in task["triggerPolicy"].get(
                      "condition", "")]
    assert len(conditions) == 2 * len(on_gpu)
    assert any("== 0" in c and "!" not in c for c in conditions)
    assert any(c.startswith("!(") for c in conditions)


@pytest.mark.parametrize("pipeline, required", [
    ("training", {"label", "model_base_path"}),
    ("continuous_training", {"label", "model_base_path"}),
    ("batch_prediction", {"output_table", "model_base_path"}),
])
def test_pipeline_parameters_have_descriptions_and_only_the_users_own_are_required(
        pipeline, required):
    """No demo defaults: what only the user can know (their label, their base path) has none,
    so the Kubeflow UI asks for it; everything else has a default and every parameter a text."""
    spec = yaml.safe_load((REPO / "pipelines" / pipeline / "pipeline.yaml").read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {n for n, p in params.items() if "defaultValue" not in p} == required
    for name, param in params.items():
        assert param.get("description"), name
        assert "penguins" not in str(param.get("defaultValue", "")), name


def test_dict_defaults_in_the_header_comment_are_sorted():
    # kfp renders them in protobuf map order, which differs between processes.
    text = "# Inputs:\n#    split_ratios: dict [Default: {'train': 0.8, 'eval': 0.2}]\nx: 1\n"
    assert compiler._sorted_header_defaults(text) == \
        "# Inputs:\n#    split_ratios: dict [Default: {'eval': 0.2, 'train': 0.8}]\nx: 1\n"


@pytest.mark.parametrize("pipeline", ["training", "continuous_training", "batch_prediction"])
def test_steps_that_read_changing_state_are_never_cached(pipeline):
    spec = yaml.safe_load((REPO / "pipelines" / pipeline / "pipeline.yaml").read_text())

    def tasks(dag):
        yield from dag["tasks"].items()
    every = {}
    for component in [spec["root"], *spec["components"].values()]:
        if "dag" in component:
            every.update(dict(tasks(component["dag"])))
    for name, task in every.items():
        if name.split("-")[0] in ("bigquery", "evaluate", "push", "batch"):
            assert task.get("cachingOptions", {}).get("enableCache") is not True, name
            assert "cachingOptions" in task, name
