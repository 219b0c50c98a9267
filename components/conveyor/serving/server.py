"""The HTTP side of `conveyor serve`: TensorFlow Serving's REST API, metrics, health.

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    {"instances": [...]} or
                                                                 {"inputs": {...}}
    POST ...:classify, ...:regress                   {"examples": [...], "context": {...}}
                                                     (`serving.examples`)
    GET  /metrics                                    Prometheus text format (`metrics`)
    GET  /monitoring/prometheus/metrics              TF Serving's metric names (`tf_metrics`)
    GET  /healthz                                    liveness
    GET  /readyz                                     readiness, as JSON: the model, the version
                                                     served (200; 503 while none is), the newer
                                                     versions skipped, with their reasons, and
                                                     any labels fallback (`labels_error`,
                                                     `fallback`: see `serving.models`)

Errors are TensorFlow Serving's shape, `{"error": "..."}`: 400 for a bad request, 404 for an
unknown model, version or path, 405 for a wrong method, 413 for a body over `max_body_bytes`
(counted while it is read, so a chunked body without Content-Length is cut off too, before any
JSON parsing) or more than `max_instances` rows. A request never gets a 500 for what it holds;
a 500 means the model itself failed. Like TensorFlow Serving, the body is read as JSON whatever
its Content-Type (curl's `-d` sends a form type), and the server binds to loopback unless told.

With `monitoring_uri` (`--monitoring-uri`: a monitoring.json file, or a folder or gs:// prefix
where the monitor publishes them), `/metrics` also has the newest monitoring result's drift per
feature, re-read at most every `MONITORING_REFRESH` seconds on the model poll:
`conveyor_feature_drift{model, feature}` (the distance), `conveyor_feature_drift_threshold`,
`conveyor_feature_drifted` (1 or 0), `conveyor_prediction_drift{model, output}`,
`conveyor_monitoring_drifted`, `conveyor_monitoring_window_end_seconds` and
`conveyor_monitoring_version` (the version it judged). A file that cannot be read keeps the
gauges as they were, logged once per file (`conveyor_monitoring_read_failures_total`).

Version labels (TensorFlow Serving's): with a `labels.json` at the base path, a request without
a version or label goes to the `champion`, `/labels/{l}` to the version labelled `l`, and, with
`canary_percent` (`--canary-percent`), that share of the requests without a version or label to
the `challenger`, chosen by the request id (deterministic: a retried request with the same
X-Request-Id meets the same version; independent of the prediction log's sampling). The
version that answered is in the `X-Model-Version` header, the log and the request metrics.
A broken labels file, or a champion that cannot be served, never takes the server down (see
`conveyor.serving.models`): `conveyor_serving_labels_fallback{model, reason}` is 1 meanwhile.

Every predict answer carries an `X-Request-Id` header: the client's own, else one made up. With a
`PredictionLog` (`--log-predictions`), a sample of predict requests chosen by that id is handed
to it after the answer is made (it only enqueues; see `conveyor.serving.prediction_log`).

TF Serving's gRPC PredictionService (Predict, Classify, Regress, GetModelMetadata) answers on its
own port, `grpc_port` (`--grpc-port`, default 8500 as TF Serving's; 0: none), for the same
model, versions and labels, counted in the same metrics: see `conveyor.serving.grpc_service`.

Slow and idle connections are cut off, and their number bounded, by `conveyor.serving.listener`
(`--read-timeout`, `--idle-timeout`, `--max-connections`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from conveyor.errors import InputError
from conveyor.model import quiet
from conveyor.serving import MAX_BODY_BYTES, MAX_INSTANCES, examples
from conveyor.serving.leftovers import claim
from conveyor.serving.listener import ConnectionLimits, log_to_stderr, run
from conveyor.serving.loaded import Loaded, RequestError, TooManyInstances
from conveyor.serving.log_format import Entry, request_id
from conveyor.serving.metrics import ServingMetrics
from conveyor.serving.models import ModelManager, canary
from conveyor.serving.prediction_log import PredictionLog
from conveyor.serving.tf_metrics import PATH as TF_METRICS_PATH

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|"
                   r"/labels/(?P<label>[^/:]+))?(?P<suffix>/metadata|:predict|:classify|:regress)?$")


class ServingJSON(JSONResponse):
    """JSON as TensorFlow Serving writes it: a NaN or infinite output is written as `NaN` or
    `Infinity` rather than failing the response."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=True,
                          separators=(",", ":")).encode("utf-8")


def error(status: int, message: str) -> Response:
    return ServingJSON({"error": message}, status_code=status)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (BodyTooLarge) as soon as it passes `limit` bytes: a declared
    Content-Length is checked first, then the bytes are counted as they arrive."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the body is not UTF-8 text: {exc}") from None
    if not text.strip():
        raise RequestError("the body is empty; send a JSON object with 'instances' or 'inputs'")
    try:
        body = json.loads(text)
    except RecursionError:
        raise RequestError("the body is not usable JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise RequestError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    return body


log = logging.getLogger("conveyor.serve")


def predict(raw: bytes, model: Loaded, max_instances: int,
            verb: str = ":predict") -> tuple[int, Any, Any, Any]:
    """(status, answer, then the body and answer for the prediction log in :predict's form:
    the body None if it did not parse, or for a 413, whose rows are not logged). `verb` is
    :predict, :classify or :regress (`serving.examples`)."""
    body, logged = None, None
    try:
        body = parse_body(raw)
        if verb == ":predict":
            answer = model.predict(body, max_instances)
            return 200, answer, body, answer
        body = {"instances": examples.instances(body)}
        logged = model.predict(body, max_instances)
        shaped = (examples.classify(logged["predictions"], model.classes) if verb == ":classify"
                  else examples.regress(logged["predictions"]))
        return 200, shaped, body, logged
    except TooManyInstances as exc:
        return 413, {"error": str(exc)}, None, {"error": str(exc)}
    except RequestError as exc:
        return 400, {"error": str(exc)}, body, logged or {"error": str(exc)}
    except Exception as exc:  # the model failed: the server's fault
        failed = {"error": f"{type(exc).__name__}: {exc}"}
        return 500, failed, body, failed


class Endpoints:
    """The server's routes, as methods: /v1/models (status, metadata, predict), /metrics,
    /healthz, /readyz, and TensorFlow Serving's error shape for Starlette's own errors."""

    def __init__(self, manager: ModelManager, metrics: ServingMetrics, max_body_bytes: int,
                 max_instances: int, prediction_log: PredictionLog | None):
        self.manager, self.serving_metrics, self.prediction_log = manager, metrics, prediction_log
        self.max_body_bytes, self.max_instances = max_body_bytes, max_instances

    def resolve(self, request: Request) -> tuple[Loaded, str, bool] | Response:
        """The model version a /v1/models path names, its suffix and whether the path named a
        version (or a label), or the error to answer."""
        manager = self.manager
        match = _PATH.match(request.url.path)
        if not match:
            return error(404, f"no such path {request.url.path}; this server answers "
                              f"/v1/models/{manager.name}[/versions/N|/labels/L]"
                              "[/metadata|:predict]")
        name, version, suffix = match["name"], match["version"], match["suffix"] or ""
        label = match["label"]
        if name != manager.name:
            return error(404, f"Servable not found for request: Latest({name})")
        if label is not None:
            model = manager.get_label(label)
            if model is None:
                known = ", ".join(f"{k} ({v})" for k, v in sorted(manager.labels.items()))
                return error(404, f"Servable not found for request: Label({name}, {label}) "
                                  f"(labels: {known or 'none'}; a labelled version may still "
                                  "be loading, see /readyz)")
        else:
            model = manager.get(int(version) if version else None)
        if model is None:
            what = f"Specific({name}, {version})" if version else f"Latest({name})"
            return error(404, f"Servable not found for request: {what}")
        if suffix.startswith(":") and request.method != "POST":
            return error(405, f"{suffix[1:]} takes POST")
        if not suffix.startswith(":") and request.method != "GET":
            return error(405, "status and metadata take GET")
        return model, suffix, version is not None or label is not None

    def describe(self, model: Loaded, suffix: str, specific: bool) -> Response:
        """A version's status (all loaded versions' without a version or label), or metadata."""
        if suffix == "/metadata":
            return ServingJSON({"model_spec": {"name": self.manager.name, "signature_name": "",
                                               "version": str(model.version)},
                                "metadata": model.metadata()})
        versions = [model.version] if specific else sorted(self.manager.loaded, reverse=True)
        return ServingJSON({"model_version_status": [
            {"version": str(v), "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}} for v in versions]})

    async def models(self, request: Request) -> Response:
        """GET status or metadata, POST :predict."""
        if isinstance(target := self.resolve(request), Response):
            return target
        model, suffix, specific = target
        return (await self.predict(request, model, specific, suffix) if suffix.startswith(":")
                else self.describe(model, suffix, specific))

    async def predict(self, request: Request, model: Loaded, specific: bool,
                      verb: str = ":predict") -> Response:
        """Answer a predict request (the challenger's share, if any, when it names no version),
        count it and hand it to the prediction log."""
        manager, limit = self.manager, self.max_body_bytes
        start, received = time.perf_counter(), time.time()
        rid = request_id(request.headers.get("x-request-id"))
        if not specific and manager.canary_percent and canary(rid, manager.canary_percent):
            model = manager.get_label("challenger") or model
        raw, body, runtime, logged = b"", None, None, None
        try:
            raw = await read_body(request, limit)
        except ClientDisconnect:  # the client left mid-body: nobody to answer
            return Response(status_code=400)
        except BodyTooLarge:
            status, answer = 413, {"error": f"the request body is larger than this server's "
                                            f"limit of {limit} bytes (--max-request-bytes)"}
            logged = answer
        else:
            began = time.perf_counter()
            status, answer, body, logged = await run_in_threadpool(
                predict, raw, model, self.max_instances, verb)
            runtime = time.perf_counter() - began
        seconds = time.perf_counter() - start
        self.serving_metrics.observe(model.version, status, seconds, runtime)
        if self.prediction_log is not None and self.prediction_log.sampled(rid):
            self.prediction_log.submit(Entry(rid, received, manager.name, model.version,
                                             model.log_signature, status, body, logged,
                                             seconds * 1000, len(raw)))
        return ServingJSON(answer, status_code=status,
                           headers={"X-Request-Id": rid, "X-Model-Version": str(model.version)})

    def metrics(self, request: Request) -> Response:
        text = generate_latest(self.serving_metrics.registry)
        if self.prediction_log is not None:
            text += generate_latest(self.prediction_log.registry)
        return Response(text, media_type="text/plain; version=0.0.4")

    def tf_metrics(self, request: Request) -> Response:
        return Response(self.serving_metrics.tf.text(), media_type="text/plain; version=0.0.4")

    def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    def readyz(self, request: Request) -> Response:
        status = self.manager.status()
        if status["version"] is None:
            why = ("the first poll is running" if status["state"] == "LOADING"
                   else status["polling_error"] or
                   ("no version loads" if status["skipped"] else "the base path has no version"))
            return ServingJSON({**status, "error": f"no version of {self.manager.name} is "
                                                   f"loaded: {why}"}, status_code=503)
        return ServingJSON(status)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        http = cast(HTTPException, exc)  # registered for HTTPException only (`create_app`)
        return error(http.status_code, f"{http.detail}: {request.method} {request.url.path}")


def create_app(manager: ModelManager, max_body_bytes: int = MAX_BODY_BYTES,
               max_instances: int = MAX_INSTANCES,
               prediction_log: PredictionLog | None = None,
               monitoring_uri: str = "", canary_percent: float = 0.0) -> Starlette:
    """The Starlette app serving `manager`'s model (see the module). The manager learns the
    canary share (its status reports it) and calls the metrics' hooks on each load and poll."""
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"canary_percent: {canary_percent!r}, expected 0 to 100")
    manager.canary_percent = float(canary_percent)
    metrics = ServingMetrics(manager, monitoring_uri)
    manager.on_load = metrics.loaded
    manager.on_poll = metrics.polled
    metrics.polled(manager)
    if manager.current is not None:
        metrics.loaded(manager.current)
    endpoints = Endpoints(manager, metrics, max_body_bytes, max_instances, prediction_log)
    app = Starlette(routes=[
        Route("/metrics", endpoints.metrics), Route("/healthz", endpoints.healthz),
        Route("/readyz", endpoints.readyz), Route(TF_METRICS_PATH, endpoints.tf_metrics),
        Route("/v1/models/{rest:path}", endpoints.models, methods=["GET", "POST"]),
    ], exception_handlers={HTTPException: endpoints.http_error})
    app.state.serving_metrics = metrics
    return app


def serve(base_path: str, name: str, host: str = "127.0.0.1", port: int = 8501,
          poll_seconds: float = 2.0, max_body_bytes: int = MAX_BODY_BYTES,
          max_instances: int = MAX_INSTANCES,
          prediction_log: PredictionLog | None = None, monitoring_uri: str = "",
          canary_percent: float = 0.0, limits: ConnectionLimits | None = None,
          grpc_port: int = 8500) -> None:
    """Serve `base_path` until interrupted; on loopback unless `host` says otherwise: the REST
    API on `port`, TF Serving's gRPC PredictionService on `grpc_port` (0: none), both started
    and stopped together (SIGTERM or SIGINT: each lets the requests under way finish).

    `poll_seconds` 0 loads a version once and never polls again (TF Serving's
    file_system_poll_wait_seconds=0). The connections' deadlines and limit are `limits`
    (`conveyor.serving.listener`). With a `prediction_log`, its prefix is checked first (an
    InputError if it cannot be written: nothing is served), and a clean stop writes every row it
    queued before the process ends. Versions fetched from gs:// go to a cache in TMPDIR that a
    clean stop removes, and a restart removes a killed predecessor's (`leftovers`)."""
    limits = limits or ConnectionLimits()
    limits.check()
    if not (isinstance(poll_seconds, (int, float)) and 0 <= poll_seconds < math.inf):
        raise InputError(f"--poll-seconds: expected 0 (load once, never poll again) or a "
                         f"positive number of seconds, got {poll_seconds!r}")
    log_to_stderr()
    quiet.tensorflow()  # imported now, without its native start-up notices (model.quiet)
    if prediction_log is not None:
        prediction_log.check()
    cache = claim(Path(tempfile.gettempdir()), "conveyor-serve-", "download cache")
    manager = ModelManager(base_path, name, poll_seconds, cache_dir=str(cache.path))
    app = create_app(manager, max_body_bytes, max_instances, prediction_log, monitoring_uri,
                     canary_percent)
    grpc_server = None
    if grpc_port:  # bound before anything starts: a port in use stops here, with its flag
        from conveyor.serving import grpc_service

        service = grpc_service.PredictionService(manager, app.state.serving_metrics,
                                                 max_instances, prediction_log)
        try:
            grpc_server = grpc_service.start(service, host, grpc_port, max_body_bytes)
        except BaseException:
            cache.release()
            raise
    if prediction_log is not None:
        prediction_log.start()
    manager.start()  # the first version loads in the background; /readyz says when
    print(f"conveyor serve: model {name!r} from {base_path} on http://{host}:{port}"
          + (f" and gRPC {host}:{grpc_port}" if grpc_port else "")
          + f" (the newest version that loads, see /readyz; requests up to {max_body_bytes} "
          f"bytes and {max_instances} instances)"
          + (f"; logging predictions to {prediction_log.describe}" if prediction_log else "")
          + (f"; drift gauges from {monitoring_uri}" if monitoring_uri else "")
          + (f"; the challenger (if labelled) answers {canary_percent:g}% of the requests"
             if canary_percent else ""), flush=True)
    try:
        run(app, host, port, limits, app.state.serving_metrics.registry)
    finally:
        if grpc_server is not None:
            grpc_service.stop(grpc_server)
        manager.stop()
        if prediction_log is not None:  # uvicorn has answered every request in flight
            prediction_log.close()
        cache.release()  # the versions fetched into it
