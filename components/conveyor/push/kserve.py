"""Push to a KServe InferenceService: point its predictor's `storageUri` at the pushed version.

KServe rolls the predictor to the new URI. A challenger is pushed with `canaryTrafficPercent`:
KServe then sends that share of the traffic to the new revision and the rest to the last one
rolled out completely (the champion). `conveyor.promote` promotes it by removing
`canaryTrafficPercent` (a merge patch with null: the new revision takes all the traffic) or rolls
it back by pointing `storageUri` at the champion again without canary (the challenger's revision
gets no traffic). The patches are built by `storage_uri_patch` and `canary_patch`; they are sent
with the kubernetes client (in-cluster credentials, else the local kubeconfig) as merge patches.
"""

from __future__ import annotations

from conveyor.errors import InputError
from conveyor.gcp.kubernetes import custom_objects_api

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def storage_uri_patch(uri: str, model_format: str = "tensorflow",
                      canary_percent: int | None = None) -> dict:
    """Point the predictor at `uri`; with `canary_percent`, as a canary with that share."""
    predictor: dict = {"model": {"modelFormat": {"name": model_format}, "storageUri": uri}}
    if canary_percent is not None:
        if isinstance(canary_percent, bool) or not 1 <= canary_percent <= 99:
            raise InputError(f"kserve canary percent: must be 1 to 99, got {canary_percent!r}")
        predictor["canaryTrafficPercent"] = canary_percent
    return {"spec": {"predictor": predictor}}


def canary_patch(promote: bool, champion_uri: str = "", model_format: str = "tensorflow") -> dict:
    """Promote the canary (remove canaryTrafficPercent: null in a merge patch), or roll back
    to `champion_uri` (the champion's version, all the traffic)."""
    if promote:
        return {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    if not champion_uri:
        raise InputError("kserve rollback: the champion's URI is needed to roll back to it")
    patch = storage_uri_patch(champion_uri, model_format)
    patch["spec"]["predictor"]["canaryTrafficPercent"] = None
    return patch


def parse_service(service: str) -> tuple[str, str]:
    namespace, _, name = service.partition("/")
    if not namespace or not name or "/" in name:
        raise InputError(f"kserve_service: {service!r} is not namespace/name")
    return namespace, name


def patch_service(service: str, patch: dict, api_client=None) -> dict:
    namespace, name = parse_service(service)
    return custom_objects_api(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, patch)


def push_to_kserve(uri: str, service: str, api_client=None,
                   canary_percent: int | None = None) -> dict:
    patch = storage_uri_patch(uri, canary_percent=canary_percent)
    return patch_service(service, patch, api_client)


def promote_on_kserve(service: str, *, promote: bool, champion_uri: str = "",
                      api_client=None) -> dict:
    return patch_service(service, canary_patch(promote, champion_uri), api_client)
