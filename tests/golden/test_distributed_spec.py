"""The training spec with train_replicas=2 (pipelines/training_distributed): it loads in Vertex
AI's PipelineJob (built offline, never submitted) and its train task is a CustomJob whose worker
pools are 1 chief + 1 worker running conveyor's train in conveyor's image; train_replicas=1 is
exactly the training spec; bad train_replicas fail at compile time."""

import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

from conveyor import images
from conveyor.errors import InputError
from conveyor.pipelines import distributed, steps, training

pytestmark = pytest.mark.golden
REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "pipelines" / "training_distributed" / "pipeline.yaml"


def compile_to(pipeline, path: Path) -> bytes:
    from kfp import compiler

    compiler.Compiler().compile(pipeline, str(path))
    return path.read_bytes()


def vertex_request(template: Path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    job = aiplatform.PipelineJob(
        display_name="conveyor-training-distributed", template_path=str(template),
        pipeline_root="gs://acme-ml/pipeline-root",
        parameter_values={"model_base_path": "gs://acme-ml/models/penguins",
                          "label": "species", "table": "acme-ml.zoo.Pingüinos"},
        project="acme-ml", location="europe-west4", credentials=AnonymousCredentials(),
        enable_caching=False,
    )
    return job._gca_resource


def train_tasks(spec: dict) -> dict[str, tuple[dict, dict]]:
    """Each train task of the pipeline (any depth) -> (task, its executor)."""
    out = {}
    for component in [spec["root"], *spec["components"].values()]:
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            if name == "train" or name.startswith("train-"):
                label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
                out[name] = (task, spec["deploymentSpec"]["executors"][label])
    return out


def compiled_train_container(component) -> dict:
    spec = json_format.MessageToDict(component.pipeline_spec)
    (executor,) = spec["deploymentSpec"]["executors"].values()
    return executor["container"]


@pytest.fixture(scope="module")
def request_spec():
    request = vertex_request(SPEC)
    # What Vertex AI receives: the pipeline spec as a protobuf Struct.
    return json_format.MessageToDict(request._pb.pipeline_spec), request


def test_the_distributed_spec_loads_in_vertex_pipeline_job(request_spec):
    spec, request = request_spec
    assert request.runtime_config.gcs_output_directory == "gs://acme-ml/pipeline-root"
    assert request.runtime_config.parameter_values["table"] == "acme-ml.zoo.Pingüinos"
    assert spec["pipelineInfo"]["name"] == "conveyor-training-distributed"
    assert "2 n1-standard-8 machines" in spec["pipelineInfo"]["description"]


def test_train_is_a_custom_job_of_one_chief_and_one_worker(request_spec):
    from google.cloud.aiplatform_v1.types import CustomJob

    spec, _ = request_spec
    tasks = train_tasks(spec)
    assert set(tasks) == {"train", "train-2"}  # the CPU and the GPU branch
    for name, gpu in (("train", False), ("train-2", True)):
        task, executor = tasks[name]
        container = executor["container"]
        assert container["image"] == distributed.GCPC_IMAGE
        assert container["command"] == distributed.LAUNCHER_COMMAND
        args = container["args"]
        assert args[args.index("--type") + 1] == "CustomJob"
        assert args[args.index("--project") + 1] == "{{$.inputs.parameters['project']}}"
        assert args[args.index("--gcp_resources") + 1] == \
            "{{$.outputs.parameters['gcp_resources'].output_file}}"
        values = {"service_account": "trainer@acme-ml.iam.gserviceaccount.com"}
        if gpu:
            values.update(accelerator_type="NVIDIA_L4", accelerator_count=2)
        payload = distributed.payload_of(executor, values)
        CustomJob(payload)  # Vertex AI's own message takes it: no unknown field, right types
        pools = payload["job_spec"]["worker_pool_specs"]
        assert [p["replica_count"] for p in pools] == [1, 1]  # pool 0 the chief, pool 1 a worker
        want = compiled_train_container(steps.train_gpu if gpu else steps.train)
        for pool in pools:
            cs = pool["container_spec"]
            assert cs["image_uri"] == images.image(variant="gpu" if gpu else "cpu")
            assert cs["command"] == want["command"]  # train's own program, source included
            assert cs["args"] == ["--executor_input", "{{$.json_escape[1]}}",
                                  "--function_to_execute", "train"]
            assert want["args"] == ["--executor_input", "{{$}}", "--function_to_execute", "train"]
            machine = pool["machine_spec"]
            assert machine["machine_type"] == "n1-standard-8"
            if gpu:
                assert (machine["accelerator_type"], machine["accelerator_count"]) == \
                    ("NVIDIA_L4", 2)
            else:
                assert "accelerator_type" not in machine and "accelerator_count" not in machine
        assert payload["job_spec"]["scheduling"]["restart_job_on_worker_restart"] is True
        assert payload["job_spec"]["service_account"] == values["service_account"]
        # The task is wired as the single-machine train task is: the same artifacts in.
        assert set(task["inputs"]["artifacts"]) == {"dataset", "preprocessing"}
        if gpu:
            assert task["inputs"]["parameters"]["accelerator_count"] == {
                "componentInputParameter": "pipelinechannel--train_gpus"}
            assert task["inputs"]["parameters"]["accelerator_type"] == {
                "componentInputParameter": "pipelinechannel--train_accelerator"}


def test_the_custom_job_has_trains_inputs_and_outputs():
    job = distributed.custom_job_train(2)
    train = steps.train.component_spec
    assert set(job.component_spec.inputs) == set(train.inputs) | {
        "project", "location", "service_account"}
    assert set(job.component_spec.outputs) == set(train.outputs) | {"gcp_resources"}
    for name, spec in train.inputs.items():
        assert job.component_spec.inputs[name].type == spec.type, name
        assert job.component_spec.inputs[name].default == spec.default, name
    for name, spec in train.outputs.items():
        assert job.component_spec.outputs[name].type == spec.type, name
    # Evaluate and push take the custom job's model as they take train's.
    spec = yaml.safe_load(SPEC.read_text())
    evaluates = [t for c in spec["components"].values()
                 for n, t in c.get("dag", {}).get("tasks", {}).items() if n.startswith("evaluate")]
    assert len(evaluates) == 2
    for task in evaluates:
        assert task["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
            "outputArtifactKey": "model", "producerTask": task["dependentTasks"][0]}


def test_the_executor_input_reaches_every_replica_intact():
    """What the backend does with `{{$.json_escape[1]}}`: the task's executor input, escaped
    once for the JSON string it sits in; the payload still parses and each replica gets the
    exact executor input, quotes, backslashes and non-ASCII names included."""
    executor_input = {"inputs": {"parameterValues": {
        "hyperparameters": {"note": 'say "hi"\\n', "Straße": 1.5}, "module_file": "gs://b/m ü.py"},
        "artifacts": {"dataset": {"artifacts": [{"uri": "gs://b/d", "metadata": {}}]}}},
        "outputs": {"outputFile": "/gcs/b/out.json"}}
    raw = json.dumps(executor_input)
    level1 = json.dumps(raw)[1:-1]  # escaped once, as for a value inside a JSON string
    executor = json_format.MessageToDict(distributed.custom_job_train(2).pipeline_spec)
    (executor,) = executor["deploymentSpec"]["executors"].values()
    args = executor["container"]["args"]
    i = args.index("--payload") + 1
    args[i] = args[i].replace("{{$.json_escape[1]}}", level1)
    payload = distributed.payload_of(executor, {"service_account": ""})
    for pool in payload["job_spec"]["worker_pool_specs"]:
        got = pool["container_spec"]["args"][1]
        assert got == raw and json.loads(got) == executor_input


@pytest.mark.parametrize("replicas, pools", [(3, [1, 2]), (8, [1, 7])])
def test_more_replicas_go_to_the_worker_pool(replicas, pools):
    executor = json_format.MessageToDict(
        distributed.custom_job_train(replicas, machine_type="e2-highmem-16").pipeline_spec)
    (executor,) = executor["deploymentSpec"]["executors"].values()
    payload = distributed.payload_of(executor, {"service_account": ""})
    specs = payload["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in specs] == pools
    assert {p["machine_spec"]["machine_type"] for p in specs} == {"e2-highmem-16"}
    assert payload["labels"]["conveyor-replicas"] == str(replicas)


def graph(spec: dict) -> dict:
    """A spec without what other steps' own code decides (their programs and parameters):
    the pipeline's name, inputs, every DAG task by task, each executor's image, arguments and
    resources."""
    return {"pipelineInfo": spec["pipelineInfo"], "root": spec["root"],
            "dags": {name: c["dag"] for name, c in spec["components"].items() if "dag" in c},
            "executors": {name: {k: v for k, v in e["container"].items() if k != "command"}
                          for name, e in spec["deploymentSpec"]["executors"].items()}}


def test_one_replica_compiles_to_the_training_spec(tmp_path):
    one = compile_to(training.make_pipeline(train_replicas=1), tmp_path / "one.yaml")
    today = compile_to(training.pipeline, tmp_path / "today.yaml")
    assert one == today
    # The checked-in spec (compiled before train_replicas existed, kept fresh by
    # test_specs.py) has the same graph: same tasks, wiring, resources, retries, conditions.
    checked_in = yaml.safe_load((REPO / "pipelines" / "training" / "pipeline.yaml").read_text())
    assert graph(yaml.safe_load(one)) == graph(checked_in)
    # and no custom job in it: every train task is conveyor's own container, with resources
    tasks = train_tasks(yaml.safe_load(one))
    for _, executor in tasks.values():
        assert executor["container"]["image"] in images.image_map().values()
        assert executor["container"]["resources"]["resourceMemoryRequest"] in ("4G", "12G")
    assert {t["taskInfo"]["name"] for t, _ in tasks.values()} == {"Train", "Train (GPU)"}


def test_the_distributed_spec_differs_from_training_only_in_the_train_tasks():
    # Both checked-in specs (conveyor compile writes them together).
    one = yaml.safe_load((REPO / "pipelines" / "training" / "pipeline.yaml").read_text())
    two = yaml.safe_load(SPEC.read_text())
    assert one["root"]["inputDefinitions"] == two["root"]["inputDefinitions"]
    one, two = graph(one)["executors"], graph(two)["executors"]
    assert set(one) == set(two)
    changed = {name for name in one if one[name] != two[name]}
    assert changed == {"exec-train", "exec-train-2"}


@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, "2", None, True, [2]])
def test_bad_train_replicas_are_refused_at_compile_time(bad):
    with pytest.raises(InputError, match=r"train_replicas: .*(not an integer|below 1)"):
        training.make_pipeline(train_replicas=bad)
    with pytest.raises(InputError, match="train_replicas"):
        steps.train_ops(bad)
    with pytest.raises(InputError, match="train_replicas"):
        distributed.custom_job_train(bad)


def test_bad_machine_type_and_timeout_are_named():
    with pytest.raises(InputError, match="train_machine_type"):
        training.make_pipeline(train_replicas=2, train_machine_type="")
    with pytest.raises(InputError, match="timeout: '1 hour'"):
        distributed.custom_job_train(2, timeout="1 hour")
