"""Vertex AI: each pushed version is a version of one Model Registry model, deployed to an
endpoint with a share of the traffic, promoted or rolled back by `conveyor.promote`.

- Upload: the first version creates the model (`model_id`) and is its `champion` (and, being
  the first, its default version). Later versions are uploaded with `parent_model` as new
  versions of it: a challenger with the alias `challenger` and *not* the default version (the
  default, what a request without a version gets, stays the champion); a push in champion mode
  takes the `champion` alias (removed from the version that had it first) and `default`.
- Deploy: the version (`<model>@<version id>`) is deployed to the endpoint with
  `traffic_percent` of the traffic (`canary_split`: the others keep their proportions of the
  rest); 100 in champion mode.
- Promote (`promote_on_vertex`): the challenger takes `champion` and `default` and loses
  `challenger`, the old champion loses `champion`; the old champion is undeployed with the
  traffic split set to 100 % for the challenger. Roll back: the challenger is undeployed with
  100 % back to the champion, and loses its `challenger` alias (the version stays in the
  registry, as a base path keeps every version).

The requests are built by the `*_request` functions and sent by google-cloud-aiplatform's
clients over REST (`Clients`: Application Default Credentials and the regional endpoint, or an
`api_endpoint` and credentials given, as tests give a loopback recorder). The model's
`artifact_uri` is the pushed version's gs:// folder, so the same files serve on TF Serving,
KServe and Vertex AI.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.errors import InputError

#: Vertex AI's prebuilt TensorFlow serving container (a parameter: pick the one matching your TF).
PREBUILT_TF_CPU = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest"
CHAMPION, CHALLENGER, DEFAULT = "champion", "challenger", "default"
_MODEL_ID = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_ENDPOINT = re.compile(r"projects/([^/]+)/locations/([^/]+)/endpoints/([^/]+)")
_MODEL = re.compile(r"projects/([^/]+)/locations/([^/]+)/models/([^/@]+)")


def canary_split(current: Mapping[str, int], percent: int) -> dict[str, int]:
    """Traffic after deploying a new model ("0") with `percent`: the rest keeps its proportions."""
    if not 1 <= percent <= 100:
        raise InputError(f"vertex traffic_percent: must be 1 to 100, got {percent}")
    total = sum(current.values())
    if not current or total == 0 or percent == 100:
        return {"0": 100, **{k: 0 for k in current}}
    rest = 100 - percent
    shares = {k: v * rest // total for k, v in current.items()}
    largest_remainders = sorted(current, key=lambda k: -(current[k] * rest % total))
    for k in largest_remainders[:rest - sum(shares.values())]:
        shares[k] += 1
    return {"0": percent, **shares}


def parse_endpoint(endpoint: str) -> tuple[str, str]:
    """(project, location) of projects/P/locations/L/endpoints/E."""
    match = _ENDPOINT.fullmatch(endpoint or "")
    if not match:
        raise InputError(f"vertex_endpoint: {endpoint!r} is not projects/P/locations/L/endpoints/E")
    return match[1], match[2]


def registry_model(endpoint: str, model: str) -> str:
    """The Model Registry model the versions go to: `model` as a resource name in the
    endpoint's project and location, or a model ID there (a base path's name such as
    `Penguins v2` becomes the ID `penguins-v2`)."""
    project, location = parse_endpoint(endpoint)
    if model.startswith("projects/"):
        match = _MODEL.fullmatch(model)
        if not match or (match[1], match[2]) != (project, location):
            raise InputError(f"vertex_model: {model!r} is not projects/{project}/locations/"
                             f"{location}/models/ID (the endpoint's project and location)")
        return model
    model_id = re.sub(r"[^a-z0-9_-]+", "-", model.lower()).strip("-")
    if model_id and not model_id[0].isalpha():
        model_id = f"m-{model_id}"
    model_id = model_id[:63].rstrip("-")
    if not _MODEL_ID.fullmatch(model_id):
        raise InputError(f"vertex_model: {model!r} gives no Model Registry ID (up to 63 of "
                         "a-z, 0-9, '_', '-', starting with a letter); give vertex_model")
    return f"projects/{project}/locations/{location}/models/{model_id}"


def upload_request(version_uri: str, *, project: str, location: str, display_name: str,
                   serving_image: str = PREBUILT_TF_CPU, labels: Mapping[str, str] | None = None,
                   parent_model: str = "", model_id: str = "", aliases: Sequence[str] = ()):
    """UploadModelRequest: a new model (`model_id`), or a new version of `parent_model`, with
    version `aliases` (without `default`, a new version is not the default one)."""
    from google.cloud import aiplatform_v1 as v1

    if not version_uri.startswith("gs://"):
        raise InputError(f"vertex: the model must be pushed to gs:// first, not {version_uri!r}")
    return v1.UploadModelRequest(
        parent=f"projects/{project}/locations/{location}", parent_model=parent_model,
        model_id=model_id,
        model=v1.Model(display_name=display_name, artifact_uri=version_uri,
                       container_spec=v1.ModelContainerSpec(image_uri=serving_image),
                       labels=dict(labels or {}), version_aliases=list(aliases)))


def deploy_request(endpoint: str, model: str, *, current_split: Mapping[str, int],
                   traffic_percent: int = 10, machine_type: str = "n1-standard-2",
                   min_replicas: int = 1, max_replicas: int = 2, display_name: str = ""):
    from google.cloud import aiplatform_v1 as v1

    return v1.DeployModelRequest(
        endpoint=endpoint,
        deployed_model=v1.DeployedModel(
            model=model, display_name=display_name,
            dedicated_resources=v1.DedicatedResources(
                machine_spec=v1.MachineSpec(machine_type=machine_type),
                min_replica_count=min_replicas, max_replica_count=max_replicas)),
        traffic_split=canary_split(current_split, traffic_percent))


def aliases_request(version_name: str, aliases: Sequence[str]):
    """MergeVersionAliasesRequest: `-alias` removes an alias from the version."""
    from google.cloud import aiplatform_v1 as v1

    return v1.MergeVersionAliasesRequest(name=version_name, version_aliases=list(aliases))


def undeploy_request(endpoint: str, deployed_model_id: str, traffic: Mapping[str, int]):
    from google.cloud import aiplatform_v1 as v1

    return v1.UndeployModelRequest(endpoint=endpoint, deployed_model_id=deployed_model_id,
                                   traffic_split=dict(traffic))


@dataclasses.dataclass
class Clients:
    """google-cloud-aiplatform's model and endpoint clients for one location, over REST."""

    models: Any
    endpoints: Any

    @classmethod
    def for_endpoint(cls, endpoint: str, api_endpoint: str = "", credentials=None) -> Clients:
        from google.cloud import aiplatform_v1 as v1

        _, location = parse_endpoint(endpoint)
        options = {"api_endpoint": api_endpoint or f"{location}-aiplatform.googleapis.com"}
        return cls(v1.ModelServiceClient(client_options=options, credentials=credentials,
                                         transport="rest"),
                   v1.EndpointServiceClient(client_options=options, credentials=credentials,
                                            transport="rest"))

    def model_exists(self, model: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            self.models.get_model(name=model)
        except NotFound:
            return False
        return True

    def version(self, model: str, alias: str) -> str | None:
        """The version ID holding `alias`, or None."""
        from google.api_core.exceptions import NotFound

        try:
            return self.models.get_model(name=f"{model}@{alias}").version_id or None
        except NotFound:
            return None


def push_to_vertex(version_uri: str, endpoint: str, *, display_name: str,
                   traffic_percent: int = 10, serving_image: str = PREBUILT_TF_CPU,
                   machine_type: str = "n1-standard-2", model: str = "",
                   challenger: bool = True, clients: Clients | None = None) -> dict[str, str]:
    """Upload the version into the registry model `model` (resource name; default: from the
    display name) and deploy it (see the module docstring). Returns resource names and ids."""
    project, location = parse_endpoint(endpoint)
    model = model or registry_model(endpoint, display_name.rsplit("-v", 1)[0])
    clients = clients or Clients.for_endpoint(endpoint)
    exists = clients.model_exists(model)
    if not exists:  # the first version: the model's champion and default
        request = upload_request(version_uri, project=project, location=location,
                                 display_name=display_name, serving_image=serving_image,
                                 model_id=model.rsplit("/", 1)[1], aliases=[CHAMPION])
        percent, role = traffic_percent if challenger else 100, CHAMPION
    elif challenger:
        request = upload_request(version_uri, project=project, location=location,
                                 display_name=display_name, serving_image=serving_image,
                                 parent_model=model, aliases=[CHALLENGER])
        percent, role = traffic_percent, CHALLENGER
    else:
        old = clients.version(model, CHAMPION)
        if old is not None:
            clients.models.merge_version_aliases(aliases_request(f"{model}@{old}",
                                                                 [f"-{CHAMPION}"]))
        request = upload_request(version_uri, project=project, location=location,
                                 display_name=display_name, serving_image=serving_image,
                                 parent_model=model, aliases=[CHAMPION, DEFAULT])
        percent, role = 100, CHAMPION
    uploaded = clients.models.upload_model(request).result()
    version = f"{uploaded.model}@{uploaded.model_version_id}"
    current = dict(clients.endpoints.get_endpoint(name=endpoint).traffic_split)
    deployed = clients.endpoints.deploy_model(deploy_request(
        endpoint, version, current_split=current, traffic_percent=percent,
        machine_type=machine_type, display_name=display_name)).result()
    return {"model": uploaded.model, "version": version, "role": role,
            "deployed_model_id": deployed.deployed_model.id, "traffic_percent": str(percent)}


def promote_on_vertex(endpoint: str, model: str, *, promote: bool,
                      clients: Clients | None = None) -> dict[str, Any]:
    """Promote the `challenger` version of `model` on `endpoint`, or roll it back (see the
    module docstring). Raises InputError when the model has no challenger, or the versions are
    not deployed on the endpoint as a canary (nothing changed)."""
    clients = clients or Clients.for_endpoint(endpoint)
    champion, challenger = clients.version(model, CHAMPION), clients.version(model, CHALLENGER)
    if challenger is None:
        raise InputError(f"promote: {model} has no version with the alias {CHALLENGER!r}; "
                         "nothing to promote or roll back")
    deployed = {}  # version id -> deployed model id, for versions of `model`
    split = {}
    found = clients.endpoints.get_endpoint(name=endpoint)
    for d in found.deployed_models:
        if d.model.split("@")[0] == model:
            deployed[d.model_version_id] = d.id
    split = dict(found.traffic_split)
    if challenger not in deployed:
        raise InputError(f"promote: {model}@{challenger} (the challenger) is not deployed on "
                         f"{endpoint} (deployed versions: {sorted(deployed) or 'none'})")
    new_id = deployed[challenger]
    old_id = deployed.get(champion) if champion is not None else None
    if promote:
        if champion is not None:
            clients.models.merge_version_aliases(aliases_request(f"{model}@{champion}",
                                                                 [f"-{CHAMPION}"]))
        clients.models.merge_version_aliases(aliases_request(
            f"{model}@{challenger}", [CHAMPION, DEFAULT, f"-{CHALLENGER}"]))
        if old_id is not None:
            traffic = {k: 0 for k in split if k != old_id} | {new_id: 100}
            clients.endpoints.undeploy_model(undeploy_request(endpoint, old_id, traffic)).result()
        else:
            traffic = {k: 0 for k in split} | {new_id: 100}
            from google.cloud import aiplatform_v1 as v1
            from google.protobuf import field_mask_pb2

            clients.endpoints.update_endpoint(endpoint=v1.Endpoint(
                name=endpoint, traffic_split=traffic),
                update_mask=field_mask_pb2.FieldMask(paths=["traffic_split"]))
        return {"action": "promoted", "champion": f"{model}@{challenger}",
                "undeployed": old_id or "", "traffic": traffic}
    if old_id is None:
        raise InputError(f"promote: cannot roll back on {endpoint}: the champion "
                         f"{model}@{champion} is not deployed there to take the traffic back")
    traffic = {k: 0 for k in split if k != new_id} | {old_id: 100}
    clients.endpoints.undeploy_model(undeploy_request(endpoint, new_id, traffic)).result()
    clients.models.merge_version_aliases(aliases_request(f"{model}@{challenger}",
                                                         [f"-{CHALLENGER}"]))
    return {"action": "rolled back", "champion": f"{model}@{champion}", "undeployed": new_id,
            "traffic": traffic}
