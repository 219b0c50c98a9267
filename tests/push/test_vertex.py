"""Vertex AI registry versions, canary deployment, promotion and rollback: the requests that
google-cloud-aiplatform's real clients send (REST transport), recorded by a loopback server.

No Vertex AI API can run here. The loopback server answers as the API does for these calls (a
model that does not exist is a 404; operations come back done), keeping just enough state
(versions, aliases, deployed models, the traffic split) for the answers to follow the requests,
so each step is checked on what the client really sent.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from google.auth.credentials import AnonymousCredentials

from conveyor.errors import InputError
from conveyor.push import kserve, vertex

PROJECT, LOCATION = "acme", "europe-west4"
ENDPOINT = f"projects/{PROJECT}/locations/{LOCATION}/endpoints/77"
MODEL = f"projects/{PROJECT}/locations/{LOCATION}/models/penguins"
V1 = "type.googleapis.com/google.cloud.aiplatform.v1."


class FakeVertex:
    """What the recorder answers: registry versions with aliases, one endpoint's deployments."""

    def __init__(self):
        self.versions: dict[str, list[str]] = {}  # version id -> aliases
        self.deployed: dict[str, str] = {}  # deployed model id -> version id
        self.split: dict[str, int] = {}
        self.seen: list[tuple[str, str, dict | None]] = []

    def operation(self, kind: str, response: dict) -> dict:
        return {"name": f"projects/{PROJECT}/locations/{LOCATION}/operations/{len(self.seen)}",
                "done": True, "response": {"@type": V1 + kind, **response}}

    def model(self, version: str) -> dict:
        return {"name": MODEL, "versionId": version, "versionAliases": self.versions[version],
                "displayName": f"penguins-v{version}"}

    def answer(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        path = urllib.parse.unquote(path.split("?")[0])
        self.seen.append((method, path, body))
        if method == "GET" and path.startswith(f"/v1/{MODEL}"):
            ref = path[len(f"/v1/{MODEL}"):].lstrip("@")
            if not self.versions:
                return 404, {"error": {"code": 404, "message": "model not found",
                                       "status": "NOT_FOUND"}}
            if not ref:
                ref = next(v for v, a in self.versions.items() if "default" in a)
            for version, aliases in self.versions.items():
                if ref in (version, *aliases):
                    return 200, self.model(version)
            return 404, {"error": {"code": 404, "message": f"no version {ref}",
                                   "status": "NOT_FOUND"}}
        if path.endswith("/models:upload"):
            version = str(len(self.versions) + 1)
            aliases = list(body["model"].get("versionAliases", []))
            if not self.versions or "default" in aliases:
                for a in self.versions.values():
                    if "default" in a:
                        a.remove("default")
                aliases = sorted({*aliases, "default"})
            self.versions[version] = aliases
            return 200, self.operation("UploadModelResponse",
                                       {"model": MODEL, "modelVersionId": version})
        if path.endswith(":mergeVersionAliases"):
            version = path.split("@")[1].split(":")[0]
            for alias in body["versionAliases"]:
                if alias.startswith("-"):
                    self.versions[version].remove(alias[1:])
                else:
                    for a in self.versions.values():
                        if alias in a:
                            a.remove(alias)
                    self.versions[version].append(alias)
            return 200, self.model(version)
        if method == "GET" and path == f"/v1/{ENDPOINT}":
            return 200, {"name": ENDPOINT, "trafficSplit": self.split, "deployedModels": [
                {"id": d, "model": MODEL, "modelVersionId": v} for d, v in self.deployed.items()]}
        if path.endswith(":deployModel"):
            new = str(1000 + len(self.deployed) + 1)
            self.deployed[new] = body["deployedModel"]["model"].split("@")[1]
            self.split = {(new if k == "0" else k): v for k, v in body["trafficSplit"].items()}
            return 200, self.operation("DeployModelResponse", {"deployedModel": {"id": new}})
        if path.endswith(":undeployModel"):
            del self.deployed[body["deployedModelId"]]
            self.split = dict(body["trafficSplit"])
            return 200, self.operation("UndeployModelResponse", {})
        if method == "PATCH" and path == f"/v1/{ENDPOINT}":
            self.split = dict(body["trafficSplit"])
            return 200, {"name": ENDPOINT, "trafficSplit": self.split}
        return 404, {"error": {"code": 404, "message": f"unexpected {method} {path}"}}


@pytest.fixture()
def fake():
    state = FakeVertex()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, payload = state.answer(self.command, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _answer

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.clients = vertex.Clients.for_endpoint(
        ENDPOINT, api_endpoint=f"http://127.0.0.1:{server.server_port}",
        credentials=AnonymousCredentials())
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def sent(fake, suffix: str) -> list[dict]:
    return [b for m, p, b in fake.seen if m in ("POST", "PATCH") and p.endswith(suffix)]


def push(fake, version: int, challenger: bool = True, percent: int = 10) -> dict:
    return vertex.push_to_vertex(f"gs://acme-models/penguins/{version}", ENDPOINT,
                                 display_name=f"penguins-v{version}", traffic_percent=percent,
                                 model=MODEL, challenger=challenger, clients=fake.clients)


def test_first_version_creates_the_model_as_champion_then_a_challenger_is_a_canary(fake):
    first = push(fake, 1)
    (upload,) = sent(fake, "/models:upload")
    assert upload["modelId"] == "penguins" and not upload.get("parentModel")
    assert [p for m, p, b in fake.seen if p.endswith(":upload")] == [
        f"/v1/projects/{PROJECT}/locations/{LOCATION}/models:upload"]  # the parent
    assert upload["model"]["versionAliases"] == ["champion"]
    assert upload["model"]["artifactUri"] == "gs://acme-models/penguins/1"
    (deploy,) = sent(fake, ":deployModel")
    assert deploy["deployedModel"]["model"] == f"{MODEL}@1"
    assert deploy["trafficSplit"] == {"0": 100}  # nothing else on the endpoint
    assert first["role"] == "champion" and first["version"] == f"{MODEL}@1"

    fake.seen.clear()
    second = push(fake, 2, percent=15)
    (upload,) = sent(fake, "/models:upload")
    assert upload["parentModel"] == MODEL and not upload.get("modelId")
    assert upload["model"]["versionAliases"] == ["challenger"]  # not "default"
    assert fake.versions == {"1": ["champion", "default"], "2": ["challenger"]}
    (deploy,) = sent(fake, ":deployModel")
    assert deploy["deployedModel"]["model"] == f"{MODEL}@2"
    assert deploy["trafficSplit"] == {"0": 15, first["deployed_model_id"]: 85}
    assert second["role"] == "challenger" and second["traffic_percent"] == "15"
    assert fake.split == {second["deployed_model_id"]: 15, first["deployed_model_id"]: 85}


def test_promote_moves_the_aliases_and_all_traffic_and_undeploys_the_old_champion(fake):
    first, second = push(fake, 1), push(fake, 2)
    fake.seen.clear()
    done = vertex.promote_on_vertex(ENDPOINT, MODEL, promote=True, clients=fake.clients)
    merges = [(p.split("@")[1].split(":")[0], sorted(b["versionAliases"]))
              for m, p, b in fake.seen if p.endswith(":mergeVersionAliases")]
    assert merges == [("1", ["-champion"]), ("2", ["-challenger", "champion", "default"])]
    (undeploy,) = sent(fake, ":undeployModel")
    assert [p for m, p, b in fake.seen if p.endswith(":undeployModel")] == [
        f"/v1/{ENDPOINT}:undeployModel"]
    assert undeploy["deployedModelId"] == first["deployed_model_id"]
    assert undeploy["trafficSplit"] == {second["deployed_model_id"]: 100}
    assert fake.versions == {"1": [], "2": ["champion", "default"]}
    assert fake.deployed == {second["deployed_model_id"]: "2"}
    assert done["action"] == "promoted" and done["champion"] == f"{MODEL}@2"
    with pytest.raises(InputError, match="no version with the alias 'challenger'"):
        vertex.promote_on_vertex(ENDPOINT, MODEL, promote=True, clients=fake.clients)


def test_rollback_gives_the_traffic_back_undeploys_the_challenger_and_drops_its_alias(fake):
    first, second = push(fake, 1), push(fake, 2, percent=30)
    fake.seen.clear()
    done = vertex.promote_on_vertex(ENDPOINT, MODEL, promote=False, clients=fake.clients)
    (undeploy,) = sent(fake, ":undeployModel")
    assert undeploy["deployedModelId"] == second["deployed_model_id"]
    assert undeploy["trafficSplit"] == {first["deployed_model_id"]: 100}
    merges = [(p.split("@")[1].split(":")[0], b["versionAliases"])
              for m, p, b in fake.seen if p.endswith(":mergeVersionAliases")]
    assert merges == [("2", ["-challenger"])]
    assert fake.versions == {"1": ["champion", "default"], "2": []}
    assert fake.split == {first["deployed_model_id"]: 100}
    assert done["action"] == "rolled back" and done["undeployed"] == second["deployed_model_id"]
    # A third version challenges the champion again, beside it only.
    third = push(fake, 3)
    assert fake.split == {third["deployed_model_id"]: 10, first["deployed_model_id"]: 90}


def test_a_champion_push_takes_the_aliases_and_all_the_traffic(fake):
    push(fake, 1)
    fake.seen.clear()
    push(fake, 2, challenger=False)
    (upload,) = sent(fake, "/models:upload")
    assert sorted(upload["model"]["versionAliases"]) == ["champion", "default"]
    assert fake.versions == {"1": [], "2": ["champion", "default"]}
    (deploy,) = sent(fake, ":deployModel")
    assert deploy["trafficSplit"]["0"] == 100 and sum(deploy["trafficSplit"].values()) == 100


def test_a_challenger_not_deployed_on_the_endpoint_changes_nothing(fake):
    push(fake, 1)
    fake.clients.models.upload_model(vertex.upload_request(
        "gs://acme-models/penguins/2", project=PROJECT, location=LOCATION,
        display_name="penguins-v2", parent_model=MODEL, aliases=["challenger"])).result()
    fake.seen.clear()
    with pytest.raises(InputError, match="not deployed on"):
        vertex.promote_on_vertex(ENDPOINT, MODEL, promote=True, clients=fake.clients)
    assert not sent(fake, ":mergeVersionAliases") and not sent(fake, ":undeployModel")


def test_registry_model_names():
    assert vertex.registry_model(ENDPOINT, "penguins") == MODEL
    assert vertex.registry_model(ENDPOINT, "Penguins Ünï v2") == (
        f"projects/{PROJECT}/locations/{LOCATION}/models/penguins-n-v2")
    assert vertex.registry_model(ENDPOINT, "2024_model").endswith("/models/m-2024_model")
    with pytest.raises(InputError, match="the endpoint's project and location"):
        vertex.registry_model(ENDPOINT, "projects/other/locations/us/models/x")
    with pytest.raises(InputError, match="gives no Model Registry ID"):
        vertex.registry_model(ENDPOINT, "€€€")


def test_kserve_canary_patches():
    patch = kserve.storage_uri_patch("gs://b/p/2", canary_percent=10)
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert kserve.canary_patch(True) == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    back = kserve.canary_patch(False, "gs://b/p/1")["spec"]["predictor"]
    assert back["model"]["storageUri"] == "gs://b/p/1" and back["canaryTrafficPercent"] is None
    with pytest.raises(InputError, match="1 to 99"):
        kserve.storage_uri_patch("gs://b/p/2", canary_percent=100)
