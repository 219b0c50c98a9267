"""Push to a Vertex AI endpoint: upload the pushed version as a Vertex model served by a prebuilt
TensorFlow container, and deploy it to an endpoint as a canary with a share of the traffic.

The requests are built by `upload_request` and `deploy_request` (tested offline) and sent by
`push_to_vertex` with google-cloud-aiplatform's clients (Application Default Credentials). The
model's `artifact_uri` is the pushed version's gs:// folder, so the same files serve on TF Serving,
KServe and Vertex AI.
"""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.errors import InputError

#: Vertex AI's prebuilt TensorFlow serving container (a parameter: pick the one matching your TF).
PREBUILT_TF_CPU = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest"


def canary_split(current: Mapping[str, int], percent: int) -> dict[str, int]:
    """Traffic after deploying a new model ("0") with `percent`: the rest keeps its proportions."""
    if not 1 <= percent <= 100:
        raise InputError(f"vertex traffic_percent: must be 1 to 100, got {percent}")
    total = sum(current.values())
    if not current or total == 0 or percent == 100:
        return {"0": 100, **{k: 0 for k in current}}
    rest = 100 - percent
    shares = {k: v * rest // total for k, v in current.items()}
    for k in sorted(current, key=lambda k: -(current[k] * rest % total))[:rest - sum(shares.values())]:
        shares[k] += 1
    return {"0": percent, **shares}


def upload_request(version_uri: str, *, project: str, location: str, display_name: str,
                   serving_image: str = PREBUILT_TF_CPU, labels: Mapping[str, str] | None = None):
    from google.cloud import aiplatform_v1 as v1

    if not version_uri.startswith("gs://"):
        raise InputError(f"vertex: the model must be pushed to gs:// first, not {version_uri!r}")
    return v1.UploadModelRequest(
        parent=f"projects/{project}/locations/{location}",
        model=v1.Model(display_name=display_name, artifact_uri=version_uri,
                       container_spec=v1.ModelContainerSpec(image_uri=serving_image),
                       labels=dict(labels or {})))


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


def push_to_vertex(version_uri: str, endpoint: str, *, display_name: str,
                   traffic_percent: int = 10, serving_image: str = PREBUILT_TF_CPU,
                   machine_type: str = "n1-standard-2") -> dict[str, str]:
    """Upload and deploy; `endpoint` is projects/P/locations/L/endpoints/E. Returns resource names."""
    from google.cloud import aiplatform_v1 as v1

    parts = endpoint.split("/")
    if len(parts) != 6 or parts[0] != "projects" or parts[2] != "locations":
        raise InputError(f"vertex_endpoint: {endpoint!r} is not projects/P/locations/L/endpoints/E")
    project, location = parts[1], parts[3]
    options = {"api_endpoint": f"{location}-aiplatform.googleapis.com"}
    models = v1.ModelServiceClient(client_options=options)
    endpoints = v1.EndpointServiceClient(client_options=options)
    uploaded = models.upload_model(upload_request(
        version_uri, project=project, location=location, display_name=display_name,
        serving_image=serving_image)).result()
    current = dict(endpoints.get_endpoint(name=endpoint).traffic_split)
    deployed = endpoints.deploy_model(deploy_request(
        endpoint, uploaded.model, current_split=current, traffic_percent=traffic_percent,
        machine_type=machine_type, display_name=display_name)).result()
    return {"model": uploaded.model, "deployed_model_id": deployed.deployed_model.id}
