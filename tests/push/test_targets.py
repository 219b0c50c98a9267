"""Vertex AI and KServe push targets: the requests they send, built and checked offline.

No Vertex AI or Kubernetes API can run here. The Vertex requests are checked as built; the KServe
patch is sent by the real kubernetes client to a loopback HTTP server that records it.
"""

import pytest
from support import loopback_api

from conveyor.errors import InputError
from conveyor.push import kserve, vertex


@pytest.mark.parametrize("current, percent, expected", [
    ({}, 10, {"0": 100}),
    ({"111": 100}, 10, {"0": 10, "111": 90}),
    ({"111": 70, "222": 30}, 10, {"0": 10, "111": 63, "222": 27}),
    ({"111": 50, "222": 50}, 15, {"0": 15, "111": 43, "222": 42}),
    ({"111": 100}, 100, {"0": 100, "111": 0}),
])
def test_canary_split_keeps_proportions_and_sums_to_100(current, percent, expected):
    split = vertex.canary_split(current, percent)
    assert split == expected and sum(split.values()) == 100


def test_vertex_requests():
    upload = vertex.upload_request("gs://b/models/penguins/3", project="p", location="europe-west4",
                                   display_name="penguins-v3")
    assert upload.parent == "projects/p/locations/europe-west4"
    assert upload.model.artifact_uri == "gs://b/models/penguins/3"
    assert upload.model.container_spec.image_uri == vertex.PREBUILT_TF_CPU
    deploy = vertex.deploy_request("projects/p/locations/l/endpoints/9",
                                   "projects/p/locations/l/models/5", current_split={"1": 100},
                                   traffic_percent=20)
    assert dict(deploy.traffic_split) == {"0": 20, "1": 80}
    assert deploy.deployed_model.dedicated_resources.min_replica_count == 1
    with pytest.raises(InputError, match="pushed to gs:// first"):
        vertex.upload_request("/local/3", project="p", location="l", display_name="x")
    with pytest.raises(InputError, match="1 to 100"):
        vertex.canary_split({}, 0)
    with pytest.raises(InputError, match="not projects/P/locations/L/endpoints/E"):
        vertex.push_to_vertex("gs://b/m/1", "endpoints/9", display_name="x")


def test_kserve_patch_is_sent_by_the_kubernetes_client():
    from kubernetes import client

    def answer_patch(method, path, body):
        return {"kind": "InferenceService", **body}

    with loopback_api(answer_patch) as (url, seen):
        answer = kserve.push_to_kserve("gs://b/models/penguins/4", "ml/penguins",
                                       client.ApiClient(client.Configuration(host=url)))
    ((method, path, body, content_type),) = seen
    assert method == "PATCH"
    assert path == "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/penguins"
    assert content_type == "application/merge-patch+json"
    assert body["spec"]["predictor"]["model"] == {
        "modelFormat": {"name": "tensorflow"}, "storageUri": "gs://b/models/penguins/4"}
    assert answer["kind"] == "InferenceService"
    with pytest.raises(InputError, match="namespace/name"):
        kserve.parse_service("penguins")
