"""One version drives everything; the package's import surface stays light."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import conveyor
from conveyor import images

REPO = Path(__file__).resolve().parents[2]


def test_setup_reads_the_one_version():
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == conveyor.__version__


def test_image_tags_come_from_the_version_and_registry():
    assert images.image() == f"{images.DEFAULT_REGISTRY}/conveyor:{conveyor.__version__}"
    assert images.image("r.example/x/", "gpu") == f"r.example/x/conveyor:{conveyor.__version__}-gpu"
    assert set(images.image_map()) == set(images.BASE_IMAGES)


def test_build_script_and_dockerfile_agree_with_the_image_map():
    # The bases are named only in conveyor.images: the Dockerfile's BASE_IMAGE has no default and
    # build.sh reads them from `python -m conveyor.images` (run for real in
    # tests/distribution/test_security.py).
    dockerfile = (REPO / images.DOCKERFILE).read_text()
    build = (REPO / "images" / "build.sh").read_text()
    assert "\nARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n" in dockerfile
    assert "python3 -m conveyor.images" in build
    for base in images.BASE_IMAGES.values():
        assert base.split("@")[0] not in dockerfile + build


def test_retarget_moves_only_conveyor_images():
    spec = {"deploymentSpec": {"executors": {
        "a": {"container": {"image": images.image()}},
        "b": {"container": {"image": "python:3.11"}},
        "c": {"container": {"image": images.image(variant="gpu")}}}}}
    moved = images.retarget(spec, "eu.gcr.io/p")["deploymentSpec"]["executors"]
    assert moved["a"]["container"]["image"] == images.image("eu.gcr.io/p")
    assert moved["b"]["container"]["image"] == "python:3.11"
    assert moved["c"]["container"]["image"] == images.image("eu.gcr.io/p", "gpu")


def test_import_conveyor_loads_no_kfp_tensorflow_or_cloud_client():
    code = ("import sys, conveyor, conveyor.ingest.tasks, conveyor.io; "
            "print(sorted(m for m in ('kfp', 'tensorflow', 'google.cloud.bigquery') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_component_modules_import_only_kfp_and_conveyor_at_module_scope():
    # The wrappers must stay importable with the kfp-only install; their bodies import the rest.
    allowed = re.compile(r"^(kfp|conveyor)(\.|$)|^__future__$|^typing$")
    for path in (REPO / "components" / "conveyor").rglob("component.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert allowed.match(name or ""), f"{path}: module-scope import of {name}"


def test_components_are_exported_and_use_conveyors_image():
    from conveyor import components

    assert components.__all__
    for name in components.__all__:
        component = getattr(components, name)
        assert component.component_spec.implementation.container.image == images.image()
