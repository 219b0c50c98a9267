"""manifests/conveyor-serving: `conveyor serve` in conveyor's image. Its command line is one
conveyor's own CLI accepts, its image is the one this version builds, and it serves the path the
pipelines push to. (tests/container runs this same container spec with `docker run`.)"""

from pathlib import Path

import yaml

from conveyor import cli, images
from conveyor.compile import SCHEDULE

SERVING = Path(__file__).resolve().parents[2] / "manifests" / "conveyor-serving" / "serving.yaml"


def container() -> dict:
    docs = [d for d in yaml.safe_load_all(SERVING.read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def test_the_image_is_this_versions():
    assert container()["image"] == images.image()


def test_the_command_line_is_one_conveyor_serve_accepts():
    spec = container()
    assert spec["command"] == ["conveyor", "serve"]
    args = cli.parser().parse_args(["serve", *spec["args"]])
    assert args.model_base_path == SCHEDULE["parameters"]["model_base_path"]
    assert args.host == "0.0.0.0"  # a pod is reached through its Service, not its loopback
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert args.port == ports["http"]
    assert args.grpc_port == ports["grpc"]  # TF Serving's PredictionService


def test_the_probes_are_servings_own_endpoints():
    spec = container()
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
