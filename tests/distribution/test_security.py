"""What conveyor ships carries no credentials; its image runs unprivileged from pinned bases.

A credential scanner runs over every compiled spec, every rendered manifest and everything the
image build copies in; it is a small function, tested here against planted credentials so a
scanner that finds nothing cannot pass unnoticed. The image checks read the Dockerfile and run
images/build.sh and images/pin.sh for real against a stand-in `docker` (no Docker engine here).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conveyor import compile as compiler
from conveyor import images

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
KUSTOMIZATIONS = sorted(p.parent.relative_to(MANIFESTS).as_posix()
                        for p in MANIFESTS.rglob("kustomization.yaml"))

# -- the credential scanner -------------------------------------------------------------------

#: Credentials recognisable from their text alone.
PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "service-account key": re.compile(r'"private_key(?:_id)?"\s*:\s*"[^"]+"'),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    "Google OAuth token": re.compile(r"\bya29\.[0-9A-Za-z_-]{20,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    # `password: "x"`, `"token": "x"`, `secret = 'x'`: a quoted literal (so `token: str` in code
    # and `password: ${VAR}` references do not count).
    "literal password or token": re.compile(
        r"""(?i)["']?\b(?:password|passwd|token|secret|api_key|client_secret)\b["']?\s*[:=]\s*"""
        r"""(["'])(?![$<{])[^"'\s]+\1"""),
}
#: Mapping keys (and env var names) whose value must not be a literal in YAML.
SECRET_KEY = re.compile(r"(?i)^(?:.*_)?(?:password|passwd|token|secret|api_?key|client_?secret|"
                        r"access_?key(?:_id)?|secret_?access_?key|private_?key)$")
#: Values that refer to a secret rather than being one.
PLACEHOLDER = re.compile(r"^(?:|\$\{.*\}|\$\(.*\)|\{\{.*\}\}|<.*>)$")


def find_credentials(text: str) -> list[str]:
    """The kinds of credential found in text, one entry per hit."""
    return [kind for kind, pattern in PATTERNS.items() for _ in pattern.finditer(text)]


def find_credentials_in_yaml(docs: list) -> list[str]:
    """find_credentials over every string of parsed YAML (escapes undone), plus literal values
    under secret-like keys, env entries with a literal secret-like value, and Secret objects."""
    found: list[str] = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            if node.get("kind") == "Secret" and (node.get("data") or node.get("stringData")):
                found.append(f"Secret object with data at {path}")
            name, value = node.get("name"), node.get("value")
            if isinstance(name, str) and SECRET_KEY.match(name) and isinstance(value, str) \
                    and not PLACEHOLDER.match(value):
                found.append(f"literal value of {name} at {path}")
            for key, child in node.items():
                if isinstance(key, str) and SECRET_KEY.match(key) and isinstance(child, str) \
                        and not PLACEHOLDER.match(child):
                    found.append(f"literal {key} at {path}")
                walk(child, f"{path}.{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{path}[{i}]")
        elif isinstance(node, str):
            found.extend(f"{kind} at {path}" for kind in find_credentials(node))

    for i, doc in enumerate(docs):
        walk(doc, f"doc{i}")
    return found


def scan_file(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    found = find_credentials(text)
    if path.suffix in (".yaml", ".yml"):
        found += find_credentials_in_yaml(list(yaml.safe_load_all(text)))
    return found


# Planted credentials are assembled at run time so this file holds none.
PLANTED = {
    "private key": "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----",
    "service-account key": json.dumps({"type": "service_account", "client_email": "x@p.iam",
                                       "private" + "_key": "-----...-----"}),
    "AWS access key id": "aws_access_key_id = " + "AKIA" + "IOSFODNN7" + "EXAMPLE",
    "GitHub token": "GH=" + "ghp_" + "a1B2" * 9,
    "Google OAuth token": "Authorization: Bearer " + "ya29." + "a0Af" * 8,
    "Google API key": "key=" + "AIza" + "SyD-" * 8 + "abc",
    "literal password or token": 'config = {"password": "' + "hunter" + '2"}',
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_scanner_finds_a_planted_credential(kind):
    assert kind in find_credentials(f"harmless line\n{PLANTED[kind]}\nmore text\n")


def test_scanner_finds_credentials_inside_yaml_structures():
    planted = yaml.safe_dump_all([
        {"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"key.json": "{}"}},
        {"spec": {"containers": [{"env": [{"name": "DB_PASSWORD", "value": "hunter" + "2"}]}]}},
        {"auth": {"token": "abc" + "123"}},
        # a JSON key embedded, escaped, in a YAML string (as a compiled spec would hold one)
        {"program": PLANTED["service-account key"]},
    ])
    found = "\n".join(find_credentials_in_yaml(list(yaml.safe_load_all(planted))))
    for expected in ("Secret object with data", "literal value of DB_PASSWORD",
                     "literal token", "service-account key at doc3.program"):
        assert expected in found


def test_scanner_ignores_references_and_code():
    clean = yaml.safe_dump_all([
        {"env": [{"name": "DB_PASSWORD",
                  "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
                 {"name": "API_TOKEN", "value": "${API_TOKEN}"}]},
        {"program": "def push(token: str = '', password: str = None):\n    return token\n",
         "serviceAccountName": "pipeline-runner"},
    ])
    assert find_credentials_in_yaml(list(yaml.safe_load_all(clean))) == []


def test_compiled_specs_carry_no_credentials():
    specs = compiler.spec_paths(REPO)
    assert len(specs) >= 10  # every component, both pipelines and the schedule
    found = {name: scan_file(path) for name, path in specs.items()}
    assert {name: hits for name, hits in found.items() if hits} == {}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rendered_manifests_carry_no_credentials(kustomization):
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render manifests"
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS / kustomization)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert find_credentials(out) == []
    assert find_credentials_in_yaml([d for d in yaml.safe_load_all(out) if d]) == []


# -- the image --------------------------------------------------------------------------------

DOCKERFILE = REPO / images.DOCKERFILE


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.read_text().splitlines()
                                           if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in joined.splitlines() if line.strip()]


def copy_sources(dockerfile: Path) -> list[Path]:
    """Every file the Dockerfile's COPY lines take from the build context."""
    files = []
    for instruction, args in instructions(dockerfile):
        if instruction == "COPY":
            for source in args.split()[:-1]:
                path = REPO / source
                files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() \
                    else [path]
    return files


def test_image_runs_as_a_fixed_unprivileged_uid():
    steps = instructions(DOCKERFILE)
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users, "no USER: the image would run as root"
    assert re.fullmatch(r"10001(:10001)?", users[-1]), f"last USER {users[-1]!r} is not 10001"
    assert [i for i, _ in steps].index("USER") > [i for i, _ in steps].index("RUN")
    run = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert "--uid 10001" in run and "--gid 10001" in run
    env = " ".join(args for instruction, args in steps if instruction == "ENV")
    for variable in ("HOME=/home/conveyor", "XDG_CACHE_HOME=/home/conveyor/",
                     "KERAS_HOME=/home/conveyor/"):
        assert variable in env
    # KFP's launcher writes artifacts of gs://, minio:// and s3:// roots under these roots.
    assert re.search(r"install -d -o 10001 .*/home/conveyor .*/gcs /minio /s3", run)


def test_image_build_takes_no_secrets():
    for instruction, args in instructions(DOCKERFILE):
        if instruction in ("ARG", "ENV"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", args)
            assert not [n for n in names if SECRET_KEY.match(n) or "CREDENTIALS" in n.upper()]
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in DOCKERFILE.read_text()


def test_build_context_is_allow_listed_and_carries_no_credentials():
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything is excluded unless allowed below
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {args.split()[i].split("/")[0] for instruction, args in instructions(DOCKERFILE)
              if instruction == "COPY" for i in range(len(args.split()) - 1)}
    assert allowed == copied
    files = copy_sources(DOCKERFILE)
    assert len(files) > 20
    found = {str(p.relative_to(REPO)): scan_file(p) for p in files
             if p.suffix not in (".pyc",) and "__pycache__" not in p.parts}
    assert {path: hits for path, hits in found.items() if hits} == {}


def test_base_image_has_no_default_and_an_unpinned_one_is_refused():
    steps = instructions(DOCKERFILE)
    assert steps[0] == ("ARG", "BASE_IMAGE"), "BASE_IMAGE must come from conveyor.images"
    assert steps[1] == ("FROM", "${BASE_IMAGE}")
    guard = next(args for instruction, args in steps
                 if instruction == "RUN" and "BASE_IMAGE" in args)
    pinned = "python:3.11-slim-bookworm@sha256:" + "0123456789abcdef" * 4

    def run(base: str) -> int:
        return subprocess.run(["sh", "-c", guard], env={"BASE_IMAGE": base, "PATH": os.defpath},
                              capture_output=True, check=False).returncode

    assert run(pinned) == 0
    for unpinned in ("python:3.11-slim-bookworm", "python:3.11-slim-bookworm@sha256:abc",
                     "python@sha256:" + "0" * 63 + "X", ""):
        assert run(unpinned) != 0, unpinned


def test_pinned_pattern():
    digest = "sha256:" + "ab" * 32
    assert images.PINNED.match(f"tensorflow/tensorflow:2.21.0-gpu@{digest}")
    assert images.PINNED.match(f"localhost:5000/py:3.11@{digest}")
    for ref in ("python:3.11-slim-bookworm", f"python@{digest}", f"python:3.11@{digest[:-1]}",
                f"python:3.11@{digest} "):
        assert not images.PINNED.match(ref), ref
    assert set(images.BASE_IMAGES) == set(images.VARIANTS)
    assert images.unpinned({"a": f"x:1@{digest}", "b": "y:2"}) == ["y:2"]


# images/build.sh and images/pin.sh, run in a copy of the files they use, with a stand-in docker
# that answers `buildx imagetools inspect` with a digest and records `buildx build` calls.
FAKE_DOCKER = """#!{python}
import hashlib, json, os, sys
args = sys.argv[1:]
with open(os.environ["DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:3] == ["buildx", "imagetools", "inspect"]:
    digest = "sha256:" + hashlib.sha256(args[3].encode()).hexdigest()
    print(json.dumps({{"mediaType": "application/vnd.oci.image.index.v1+json",
                      "digest": digest, "size": 1}}))
"""


@pytest.fixture
def build_tree(tmp_path):
    """A copy of images/ and the modules build.sh and pin.sh read, plus the stand-in docker."""
    tree = tmp_path / "repo"
    shutil.copytree(REPO / "images", tree / "images")
    package = tree / "components" / "conveyor"
    package.mkdir(parents=True)
    for name in ("__init__.py", "version.py", "images.py"):
        shutil.copy(REPO / "components" / "conveyor" / name, package / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "DOCKER_LOG": str(tmp_path / "docker.log")}
    return tree, env


def docker_calls(env) -> list[list[str]]:
    log = Path(env["DOCKER_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_build_refuses_unpinned_bases_before_building_anything(build_tree):
    tree, env = build_tree
    source = tree / "components" / "conveyor" / "images.py"
    text = source.read_text()
    for ref in images.BASE_IMAGES.values():
        text = text.replace(f'"{ref}"', f'"{ref.split("@")[0]}"')
    source.write_text(text)
    run = subprocess.run(["bash", str(tree / "images" / "build.sh"), "r.example/ml"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode != 0
    assert "not pinned by digest" in run.stderr
    for ref in images.BASE_IMAGES.values():
        assert ref.split("@")[0] in run.stderr
    assert docker_calls(env) == []


def test_pin_then_build_uses_the_pinned_digests_for_every_variant(build_tree):
    tree, env = build_tree
    pin = subprocess.run(["bash", str(tree / "images" / "pin.sh")], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert pin.returncode == 0, pin.stderr
    expected = {variant: f"{ref.split('@')[0]}@sha256:"
                         f"{hashlib.sha256(ref.split('@')[0].encode()).hexdigest()}"
                for variant, ref in images.BASE_IMAGES.items()}
    pinned_source = (tree / "components" / "conveyor" / "images.py").read_text()
    assert all(f'"{ref}"' in pinned_source for ref in expected.values())

    build = subprocess.run(["bash", str(tree / "images" / "build.sh"), "r.example/ml/", "--push"],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    assert build.returncode == 0, build.stderr
    builds = [call for call in docker_calls(env) if call[:2] == ["buildx", "build"]]
    assert len(builds) == len(images.VARIANTS)
    for variant, call in zip(images.VARIANTS, builds):
        assert f"BASE_IMAGE={expected[variant]}" in call
        assert images.image("r.example/ml", variant) in call
        assert "--push" in call and call[call.index("-f") + 1] == images.DOCKERFILE
