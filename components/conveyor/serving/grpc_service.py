"""The gRPC side of `conveyor serve`: TensorFlow Serving's PredictionService, with TF Serving's
own protos (the `tensorflow-serving-api` package), so its clients and stubs work unchanged.

    tensorflow.serving.PredictionService on --grpc-port (default 8500, TF Serving's; 0: none)
      Predict           PredictRequest.inputs: a TensorProto per input, one value per row
                        (shape [n] or [n, 1]); output_filter honoured; outputs as TensorProto
      Classify          tf.Example rows (input.example_list, or example_list_with_context):
      Regress           the same rows and answers as REST's :classify and :regress
                        (`serving.examples`): a label and score per class, or a value per row
      GetModelMetadata  metadata_field ["signature_def"]: the SavedModel's SignatureDefMap,
                        packed in an Any, as TF Serving answers
      MultiInference    UNIMPLEMENTED

`model_spec` picks the version as the REST paths do: `name` must be the served model's
(NOT_FOUND otherwise), then `version`, or `version_label` (`champion`, `challenger`, ...),
or neither: the default version, or the challenger's `--canary-percent` share chosen by the
`x-request-id` metadata (made up when absent). Every answer's `model_spec` names the version
that answered; the initial metadata carries `x-request-id` and `x-model-version`.

Errors use TF Serving's status codes, with the same messages as REST: INVALID_ARGUMENT for
what REST answers 400, NOT_FOUND for 404, RESOURCE_EXHAUSTED for more rows than
`--max-instances` (413) or a message over `--max-request-bytes`, INTERNAL when the model
itself fails. Requests are counted in conveyor's metrics (with the HTTP status REST would
have answered) and in TF Serving's with entrypoint="GRPC" and API predict/classify/regress;
the prediction log takes them in :predict's form, as REST's.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from conveyor.errors import InputError
from conveyor.serving import examples
from conveyor.serving.loaded import Loaded, RequestError, TooManyInstances, plain
from conveyor.serving.log_format import Entry, request_id
from conveyor.serving.metrics import ServingMetrics
from conveyor.serving.models import ModelManager, canary
from conveyor.serving.prediction_log import PredictionLog

log = logging.getLogger("conveyor.serve")
WORKERS = 8  # RPCs answered at once; more wait in gRPC's queue
GRACE_SECONDS = 10.0  # a clean stop lets RPCs under way finish for this long

#: The HTTP status REST answers -> the gRPC code this service answers for the same failure.
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL}


class Failed(Exception):
    """An RPC to answer with an error: the HTTP status REST would answer, and the message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _values(name: str, proto: Any) -> list:
    """A TensorProto input as a list of Python values, one per row: what REST's columnar
    'inputs' would hold (bytes decoded as UTF-8)."""
    import tensorflow as tf

    try:
        array = tf.make_ndarray(proto)
    except Exception as exc:  # a malformed TensorProto: wrong content size, unknown dtype
        raise RequestError(f"input '{name}' is not a readable TensorProto: "
                           f"{type(exc).__name__}: {exc}") from None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise RequestError(f"input '{name}' has shape {list(array.shape)}; each input takes "
                           "one value per row: shape [n] or [n, 1]")
    if array.dtype.kind not in "SO":
        return array.tolist()
    out = []
    for i, value in enumerate(array.tolist()):
        try:
            out.append(value.decode("utf-8") if isinstance(value, bytes) else value)
        except UnicodeDecodeError:
            raise RequestError(f"input '{name}' value #{i} is not UTF-8 text") from None
    return out


def _features(example: Any, where: str) -> dict[str, list]:
    """A tf.train.Example's features as REST's example object: a list of values per feature
    (an empty one is a missing value)."""
    out: dict[str, list] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind is None:
            out[name] = []
        elif kind == "bytes_list":
            try:
                out[name] = [v.decode("utf-8") for v in feature.bytes_list.value]
            except UnicodeDecodeError:
                raise RequestError(f"{where}.{name} is not UTF-8 text") from None
        else:
            out[name] = list(getattr(feature, kind).value)
    return out


def example_body(request_input: Any) -> dict[str, Any]:
    """A Classify or Regress request's `input` as REST's {"examples": [...], "context": {...}}."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return {"examples": [_features(e, f"examples[{i}]")
                             for i, e in enumerate(request_input.example_list.examples)]}
    if kind == "example_list_with_context":
        both = request_input.example_list_with_context
        return {"examples": [_features(e, f"examples[{i}]") for i, e in enumerate(both.examples)],
                "context": _features(both.context, "context")}
    raise RequestError("the request's input holds no examples: set input.example_list or "
                       "input.example_list_with_context")


@functools.lru_cache(maxsize=8)
def signature_defs(path: str) -> Any:
    """The SignatureDefMap of the SavedModel at `path` (its saved_model.pb, first meta graph)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    found = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in saved.meta_graphs[0].signature_def.items():
        found.signature_def[key].CopyFrom(signature)
    return found


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's PredictionService over `manager`'s model (see the module)."""

    def __init__(self, manager: ModelManager, metrics: ServingMetrics, max_instances: int,
                 prediction_log: PredictionLog | None = None):
        self.manager, self.metrics, self.max_instances = manager, metrics, max_instances
        self.prediction_log = prediction_log

    def resolve(self, spec: Any, rid: str) -> Loaded:
        """The version `spec` names (Failed 404 if none), as REST's paths resolve it."""
        manager, name = self.manager, spec.name
        if name != manager.name:
            raise Failed(404, f"Servable not found for request: Latest({name})")
        if spec.signature_name not in ("", "serving_default"):
            raise Failed(400, f"signature_name {spec.signature_name!r}: this model has only "
                              "'serving_default'")
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            model = manager.get_label(spec.version_label)
            if model is None:
                known = ", ".join(f"{k} ({v})" for k, v in sorted(manager.labels.items()))
                raise Failed(404, f"Servable not found for request: Label({name}, "
                                  f"{spec.version_label}) (labels: {known or 'none'}; a "
                                  "labelled version may still be loading, see /readyz)")
            return model
        if choice == "version":
            model = manager.get(spec.version.value)
            if model is None:
                raise Failed(404, f"Servable not found for request: Specific({name}, "
                                  f"{spec.version.value})")
            return model
        model = manager.get(None)
        if model is None:
            raise Failed(404, f"Servable not found for request: Latest({name})")
        if manager.canary_percent and canary(rid, manager.canary_percent):
            model = manager.get_label("challenger") or model
        return model

    def spec(self, model: Loaded) -> Any:
        spec = model_pb2.ModelSpec(name=self.manager.name, signature_name="serving_default")
        spec.version.value = model.version
        return spec

    def answer(self, api: str, request: Any, context: Any, work: Any) -> Any:
        """Resolve the model, run `work(model) -> (response, logged body, logged answer)`,
        count it, log it, and answer it (or abort with the status code of its failure)."""
        start, received = time.perf_counter(), time.time()
        metadata = dict(context.invocation_metadata() or ())
        rid = request_id(metadata.get("x-request-id"))
        try:
            model = self.resolve(request.model_spec, rid)
        except Failed as failed:
            context.abort(CODES[failed.status], failed.message)
        context.send_initial_metadata((("x-request-id", rid),
                                       ("x-model-version", str(model.version))))
        status, response, body, logged = 200, None, None, None
        began = time.perf_counter()
        try:
            response, body, logged = work(model)
        except Failed as failed:
            status, message = failed.status, failed.message
        except TooManyInstances as exc:
            status, message = 413, str(exc)
        except RequestError as exc:
            status, message = 400, str(exc)
        except Exception as exc:  # the model failed: the server's fault
            status, message = 500, f"{type(exc).__name__}: {exc}"
        runtime = time.perf_counter() - began
        seconds = time.perf_counter() - start
        self.metrics.observe(model.version, status, seconds, runtime, api, "GRPC")
        if self.prediction_log is not None and self.prediction_log.sampled(rid):
            self.prediction_log.submit(Entry(
                rid, received, self.manager.name, model.version, model.log_signature, status,
                body, logged if status == 200 else (logged or {"error": message}),
                seconds * 1000, request.ByteSize()))
        if status != 200:
            context.abort(CODES[status], message)
        return response

    def Predict(self, request: Any, context: Any) -> Any:
        def work(model: Loaded):
            body = {"inputs": {name: _values(name, proto)
                               for name, proto in request.inputs.items()}}
            columns, _ = model.columns(body, self.max_instances)
            wanted = list(request.output_filter)
            unknown = sorted(set(wanted) - set(model.outputs))
            if unknown:
                raise RequestError(f"output_filter names unknown output(s) {unknown}; the model "
                                   f"has {sorted(model.outputs)}")
            outputs = model.run(columns)
            response = predict_pb2.PredictResponse(model_spec=self.spec(model))
            for key in wanted or outputs:
                response.outputs[key].CopyFrom(_tensor_proto(outputs[key]))
            return response, body, {"outputs": {k: plain(v) for k, v in outputs.items()}}

        return self.answer("predict", request, context, work)

    def Classify(self, request: Any, context: Any) -> Any:
        def work(model: Loaded):
            rows = {"instances": examples.instances(example_body(request.input))}
            predicted = model.predict(rows, self.max_instances)
            shaped = examples.classify(predicted["predictions"], model.classes)
            response = classification_pb2.ClassificationResponse(model_spec=self.spec(model))
            for scores in shaped["result"]:
                response.result.classifications.add().classes.extend(
                    classification_pb2.Class(label=label, score=score) for label, score in scores)
            return response, rows, predicted

        return self.answer("classify", request, context, work)

    def Regress(self, request: Any, context: Any) -> Any:
        def work(model: Loaded):
            rows = {"instances": examples.instances(example_body(request.input))}
            predicted = model.predict(rows, self.max_instances)
            shaped = examples.regress(predicted["predictions"])
            response = regression_pb2.RegressionResponse(model_spec=self.spec(model))
            response.result.regressions.extend(
                regression_pb2.Regression(value=value) for value in shaped["result"])
            return response, rows, predicted

        return self.answer("regress", request, context, work)

    def GetModelMetadata(self, request: Any, context: Any) -> Any:
        fields = list(request.metadata_field)
        if not fields:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must "
                          "specify at least one metadata_field (this server has "
                          "'signature_def')")
        unknown = sorted(set(fields) - {"signature_def"})
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"metadata_field {unknown} is not "
                          "supported; this server has 'signature_def'")
        try:
            model = self.resolve(request.model_spec, request_id(None))
        except Failed as failed:
            context.abort(CODES[failed.status], failed.message)
        try:
            found = signature_defs(model.path)
        except Exception as exc:  # the version's files went away or do not parse
            context.abort(grpc.StatusCode.INTERNAL, f"cannot read the signatures of version "
                          f"{model.version}: {type(exc).__name__}: {exc}")
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=self.spec(model))
        response.metadata["signature_def"].Pack(found)
        return response


def _tensor_proto(array: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.make_tensor_proto(array)


def start(service: PredictionService, host: str, port: int, max_message_bytes: int) -> Any:
    """Serve `service` on host:port in gRPC's threads; the started grpc.Server (stop it with
    `stop`). An InputError naming --grpc-port if the port cannot be had."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="conveyor-grpc"),
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.so_reuseport", 0)])  # a port in use is an error, not shared
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio >= 1.50 raises when it cannot bind
        bound, why = 0, str(exc)
    else:
        why = "the address is not usable"
    if not bound:
        raise InputError(f"--grpc-port {port}: cannot listen on {address} for gRPC ({why}); "
                         "another process may hold the port: choose another, or 0 for no gRPC")
    server.start()
    return server


def stop(server: Any) -> None:
    """Stop taking RPCs; let those under way finish (up to GRACE_SECONDS)."""
    server.stop(GRACE_SECONDS).wait()
