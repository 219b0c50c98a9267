"""Push to a KServe InferenceService: point its predictor's `storageUri` at the pushed version.

KServe rolls the predictor to the new URI (with `canaryTrafficPercent` if the service sets it).
The patch is built by `storage_uri_patch`; `push_to_kserve` sends it with the kubernetes client
(in-cluster credentials, else the local kubeconfig).
"""

from __future__ import annotations

from conveyor.errors import InputError

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def storage_uri_patch(uri: str, model_format: str = "tensorflow") -> dict:
    return {"spec": {"predictor": {"model": {"modelFormat": {"name": model_format},
                                             "storageUri": uri}}}}


def parse_service(service: str) -> tuple[str, str]:
    namespace, _, name = service.partition("/")
    if not namespace or not name or "/" in name:
        raise InputError(f"kserve_service: {service!r} is not namespace/name")
    return namespace, name


def push_to_kserve(uri: str, service: str, api_client=None) -> dict:
    from kubernetes import client, config

    namespace, name = parse_service(service)
    if api_client is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    api = client.CustomObjectsApi(api_client)
    return api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                              storage_uri_patch(uri))
