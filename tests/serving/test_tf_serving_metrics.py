"""TF Serving's Prometheus metrics at TF Serving's path (issue 28): the names, labels and units
that dashboards and alerts written for TF Serving query, read back with prometheus_client's own
text parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.serving import ROW, app_client

from conveyor.registry import ModelBasePath
from conveyor.serving.models import ModelManager
from conveyor.serving.tf_metrics import PATH, TfServingMetrics


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} as a Prometheus server stores `text`: parsed by
    prometheus_client's parser (which would fail on a malformed line), counter samples under the
    name they are exposed with (the parser adds `_total`; the server does not)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = family.name if family.type == "counter" else s.name
            assert f"\n{name}{{" in f"\n{text}", name  # exposed as such
            out[(name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_names_keep_tf_servings_form_without_a_total_suffix():
    metrics = TfServingMetrics('shops "eu"')
    metrics.request(200, 0.002, 0.001)
    metrics.request(400, 0.0005, 0.0001)
    metrics.request(413, 0.0001, None)
    text = metrics.text()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "_total" not in text and "_created" not in text
    got = samples(text)
    model = ("model_name", 'shops "eu"')
    assert got[(":tensorflow:serving:request_count", (model, ("status", "OK")))] == 1
    assert got[(":tensorflow:serving:request_count",
                (model, ("status", "INVALID_ARGUMENT")))] == 1
    assert got[(":tensorflow:serving:request_count",
                (model, ("status", "RESOURCE_EXHAUSTED")))] == 1
    request = (("API", "predict"), ("entrypoint", "REST"), model)
    assert got[(":tensorflow:serving:request_latency_count", request)] == 3
    assert got[(":tensorflow:serving:request_latency_sum", request)] == pytest.approx(2600)  # µs
    runtime = (("API", "predict"), model, ("runtime", "TF2"))
    assert got[(":tensorflow:serving:runtime_latency_count", runtime)] == 2
    buckets = {dict(labels)["le"]: value for (name, labels), value in got.items()
               if name == ":tensorflow:serving:request_latency_bucket"}
    assert buckets["80"] == 0 and buckets["160"] == 1 and buckets["640"] == 2
    assert buckets["2560"] == 3 and buckets["+Inf"] == 3  # cumulative


@pytest.mark.local
def test_a_served_model_counts_requests_latency_and_loads_at_tf_servings_path(
        penguin_model, tmp_path):
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(penguin_model / "model")
    manager = ModelManager(base.uri, "penguins")
    manager.poll_once()
    with app_client(manager) as client:
        for body in ({"instances": [ROW]}, {"instances": [ROW, ROW]},
                     {"instances": [{**ROW, "year": "x"}]}):
            client.post("/v1/models/penguins:predict", json=body)
        response = client.get(PATH)
        own = client.get("/metrics").text
    assert response.status_code == 200
    got = samples(response.text)
    model = ("model_name", "penguins")
    assert got[(":tensorflow:serving:request_count", (model, ("status", "OK")))] == 2
    assert got[(":tensorflow:serving:request_count",
                (model, ("status", "INVALID_ARGUMENT")))] == 1
    assert got[(":tensorflow:serving:request_latency_count",
                (("API", "predict"), ("entrypoint", "REST"), model))] == 3
    assert got[(":tensorflow:serving:runtime_latency_count",
                (("API", "predict"), model, ("runtime", "TF2")))] == 3
    assert got[(":tensorflow:cc:saved_model:load_attempt_count",
                (("model_path", f"{base.uri}/1"), ("status", "success")))] == 1
    assert "conveyor_serving_requests_total" in own  # conveyor's own names stay at /metrics
