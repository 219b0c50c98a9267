"""TF Serving's gRPC PredictionService on `conveyor serve` (issue 28), called as TF Serving's own
client examples call it: tensorflow-serving-api's PredictionServiceStub, tf.make_tensor_proto
inputs, tf.train.Example rows; each answer checked against the same server's REST answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from support import free_ports

from conveyor.registry import LABELS, ModelBasePath

pytestmark = pytest.mark.local
ROWS = [
    {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
     "flipper_length_mm": 218.0, "body_mass_g": 4950.0, "sex": "female", "year": 2008},
    {"island": "Dream", "bill_length_mm": 39.0, "bill_depth_mm": 18.5,
     "flipper_length_mm": 190.0, "body_mass_g": 3700.0, "sex": "", "year": 2007},
]


def call(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text.startswith("{") else {"text": text}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read().decode())


class Serve:
    """`conveyor serve` as a process: REST and gRPC on free loopback ports."""

    def __init__(self, base_uri: str, name: str, log_path: Path, *options: str):
        self.port, self.grpc_port = free_ports(2)
        self.url, self.name = f"http://127.0.0.1:{self.port}", name
        self.log_path = log_path
        with log_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "serve", "--model-base-path", base_uri,
                 "--model-name", name, "--port", str(self.port),
                 "--grpc-port", str(self.grpc_port), *options],
                stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if call(f"{self.url}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert self.proc.poll() is None, log_path.read_text()
            time.sleep(0.3)
        else:
            self.stop()
            raise AssertionError(f"conveyor serve did not get ready: {log_path.read_text()}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def stop(self) -> int:
        if hasattr(self, "channel"):
            self.channel.close()
        self.proc.terminate()
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def penguins(penguin_model, tmp_path_factory):
    """A server of penguins versions 1 and 2 (the same model), champion 1, challenger 2."""
    root = tmp_path_factory.mktemp("grpc")
    base = ModelBasePath(str(root / "penguins"))
    base.publish(penguin_model / "model")
    base.publish(penguin_model / "model")
    (Path(base.uri) / LABELS).write_text(json.dumps({"champion": 1, "challenger": 2}))
    serve = Serve(base.uri, "penguins", root / "stderr.txt")
    deadline = time.monotonic() + 120  # ready on the champion; the challenger may still load
    while sorted(call(f"{serve.url}/readyz")[1]["loaded_versions"]) != [1, 2]:
        assert time.monotonic() < deadline, call(f"{serve.url}/readyz")
        time.sleep(0.3)
    yield serve
    serve.stop()


def tensors(rows: list[dict]) -> dict:
    """The rows as TF Serving's Python clients send them: one tf.make_tensor_proto per input."""
    import tensorflow as tf

    out = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        dtype = (tf.string if isinstance(values[0], str) else
                 tf.int64 if isinstance(values[0], int) else tf.float32)
        out[name] = tf.make_tensor_proto(values, dtype=dtype)
    return out


def example(row: dict):
    """A row as a tf.train.Example, as TF Serving's classify clients build them."""
    import tensorflow as tf

    feature = {}
    for name, value in row.items():
        if isinstance(value, str):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        elif isinstance(value, int):
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def predict_request(name: str, rows: list[dict], **spec):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = "serving_default"
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for key, proto in tensors(rows).items():
        request.inputs[key].CopyFrom(proto)
    return request


def failure(call_rpc) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call_rpc()
    return caught.value.code(), caught.value.details()


def test_predict_answers_what_rest_predict_answers(penguins):
    import tensorflow as tf

    status, rest = call(f"{penguins.url}/v1/models/penguins:predict", {"instances": ROWS})
    assert status == 200, rest
    answer = penguins.stub.Predict(predict_request("penguins", ROWS), 30)
    probabilities = tf.make_ndarray(answer.outputs["probabilities"]).ravel().tolist()
    assert probabilities == pytest.approx(
        [p for row in rest["predictions"] for p in row["probabilities"]], abs=1e-6)
    assert answer.model_spec.name == "penguins" and answer.model_spec.version.value == 1
    request = predict_request("penguins", ROWS, version_label="challenger")
    request.output_filter.append("probabilities")
    filtered = penguins.stub.Predict(request, 30)
    assert list(filtered.outputs) == ["probabilities"] and filtered.model_spec.version.value == 2
    metrics = call(f"{penguins.url}/monitoring/prometheus/metrics")[1]["text"]
    assert ('request_latency_count{API="predict",entrypoint="GRPC",model_name="penguins"} 2'
            in metrics)


def test_classify_answers_what_rest_classify_answers(penguins):
    from tensorflow_serving.apis import classification_pb2

    context = {"island": "Biscoe", "year": 2008}
    rest_rows = [{k: v for k, v in row.items() if k not in context} for row in ROWS]
    status, rest = call(f"{penguins.url}/v1/models/penguins:classify",
                        {"context": context, "examples": rest_rows})
    assert status == 200, rest
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "penguins"
    request.input.example_list_with_context.context.CopyFrom(example(context))
    request.input.example_list_with_context.examples.extend(example(r) for r in rest_rows)
    answer = penguins.stub.Classify(request, 30)
    got = [[[c.label, c.score] for c in row.classes] for row in answer.result.classifications]
    assert [[c for c, _ in row] for row in got] == [[c for c, _ in row] for row in rest["result"]]
    assert [s for row in got for _, s in row] == pytest.approx(
        [s for row in rest["result"] for _, s in row], abs=1e-6)
    assert [c for c, _ in got[0]] == ["Adelie", "Chinstrap", "Gentoo"]


def test_errors_carry_tf_serving_codes_and_rest_messages(penguins):
    from tensorflow_serving.apis import regression_pb2

    stub = penguins.stub
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "penguins"
    regress.input.example_list.examples.append(example(ROWS[0]))
    code, message = failure(lambda: stub.Regress(regress, 30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "use :classify" in message
    code, message = failure(lambda: stub.Predict(predict_request("other", ROWS), 30))
    assert code == grpc.StatusCode.NOT_FOUND and "Latest(other)" in message
    code, message = failure(lambda: stub.Predict(predict_request("penguins", ROWS, version=9),
                                                 30))
    assert code == grpc.StatusCode.NOT_FOUND and "Specific(penguins, 9)" in message
    code, _ = failure(lambda: stub.Predict(predict_request("penguins", ROWS,
                                                           version_label="nope"), 30))
    assert code == grpc.StatusCode.NOT_FOUND
    partial = [{k: v for k, v in row.items() if k not in ("sex", "year")} for row in ROWS]
    code, message = failure(lambda: stub.Predict(predict_request("penguins", partial), 30))
    rest = call(f"{penguins.url}/v1/models/penguins:predict",
                {"inputs": {k: [r[k] for r in partial] for k in partial[0]}})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and rest[0] == 400
    assert message == rest[1]["error"] and "'sex'" in message and "'year'" in message
    texts = predict_request("penguins", [{**row, "bill_length_mm": "long"} for row in ROWS])
    code, message = failure(lambda: stub.Predict(texts, 30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "input 'bill_length_mm' expects numbers; value #0 is 'long'"
    import tensorflow as tf

    wide = predict_request("penguins", ROWS)
    wide.inputs["year"].CopyFrom(tf.make_tensor_proto([[2008.0, 2009.0]] * 2, dtype=tf.float32))
    code, message = failure(lambda: stub.Predict(wide, 30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'year' has shape [2, 2]" in message
    request = predict_request("penguins", ROWS)
    request.output_filter.append("nothing")
    code, message = failure(lambda: stub.Predict(request, 30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'nothing'" in message


def test_get_model_metadata_lists_the_inputs_with_their_dtypes(penguins):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "penguins"
    request.metadata_field.append("signature_def")
    answer = penguins.stub.GetModelMetadata(request, 30)
    found = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(found)
    signature = found.signature_def["serving_default"]
    got = {name: info.dtype for name, info in signature.inputs.items()}
    from tensorflow.core.framework import types_pb2

    rest = call(f"{penguins.url}/v1/models/penguins/metadata")[1]
    inputs = rest["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert got == {name: types_pb2.DataType.Value(info["dtype"]) for name, info in inputs.items()}
    assert got["island"] == types_pb2.DT_STRING and got["year"] == types_pb2.DT_FLOAT
    assert answer.model_spec.version.value == 1
    request.metadata_field[:] = ["everything"]
    code, _ = failure(lambda: penguins.stub.GetModelMetadata(request, 30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_regress_answers_what_rest_regress_answers_and_stops_on_sigterm(regressor, tmp_path):
    from tensorflow_serving.apis import regression_pb2

    base = ModelBasePath(str(tmp_path / "mass"))
    base.publish(regressor)
    rows = [{**{k: v for k, v in row.items() if k != "body_mass_g"}, "species": "Gentoo"}
            for row in ROWS]
    serve = Serve(base.uri, "mass", tmp_path / "stderr.txt")
    try:
        status, rest = call(f"{serve.url}/v1/models/mass:regress", {"examples": rows})
        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "mass"
        request.input.example_list.examples.extend(example(r) for r in rows)
        answer = serve.stub.Regress(request, 30)
    finally:
        code = serve.stop()
    assert status == 200, rest
    assert [r.value for r in answer.result.regressions] == pytest.approx(rest["result"], rel=1e-5)
    assert answer.model_spec.version.value == 1
    assert "Traceback" not in serve.log_path.read_text(), serve.log_path.read_text()
    assert code in (0, 143), serve.log_path.read_text()


def test_a_grpc_port_in_use_is_refused_naming_the_flag(tmp_path):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", "serve", "--model-base-path", str(tmp_path),
             "--model-name", "m", "--port", str(free_ports(1)[0]), "--grpc-port", str(port)],
            capture_output=True, text=True, timeout=120, env={**os.environ})
    assert done.returncode == 2, done.stderr
    assert f"--grpc-port {port}" in done.stderr and "Traceback" not in done.stderr


def test_grpc_requests_are_logged_and_counted_as_rest_ones_are(penguin_model, tmp_path):
    """In one process: the service on a free port, a local prediction log, conveyor's metrics."""
    import pyarrow.parquet as pq
    from prometheus_client import generate_latest
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from conveyor.serving import grpc_service
    from conveyor.serving.metrics import ServingMetrics
    from conveyor.serving.models import ModelManager
    from conveyor.serving.prediction_log import PredictionLog

    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(penguin_model / "model")
    manager = ModelManager(base.uri, "penguins")
    manager.poll_once()
    metrics, log = ServingMetrics(manager), PredictionLog(str(tmp_path / "log"))
    log.start()
    (port,) = free_ports(1)
    server = grpc_service.start(grpc_service.PredictionService(manager, metrics, 10, log),
                                "127.0.0.1", port, 1 << 20)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(predict_request("penguins", ROWS), 30,
                         metadata=(("x-request-id", "grpc-1"),))
            code, message = failure(lambda: stub.Predict(
                predict_request("penguins", ROWS * 6), 30))
    finally:
        grpc_service.stop(server)
        log.close()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-instances" in message
    table = pq.read_table(next((tmp_path / "log").rglob("*.parquet"))).to_pylist()
    ok = [row for row in table if row["request_id"] == "grpc-1"]
    assert [row["status"] for row in ok] == [200, 200] and ok[0]["model_version"] == 1
    assert ok[0]["features"]["island"] == "Biscoe"
    text = generate_latest(metrics.registry).decode()
    assert 'conveyor_serving_requests_total{model="penguins",status="200",version="1"} 1.0' in text
    assert 'conveyor_serving_requests_total{model="penguins",status="413",version="1"} 1.0' in text
    exhausted = 'request_count{model_name="penguins",status="RESOURCE_EXHAUSTED"} 1'
    assert f":tensorflow:serving:{exhausted}" in metrics.tf.text()
