"""The HTTP side of `conveyor serve`: TensorFlow Serving's REST API, metrics, health.

    GET  /v1/models/{name}[/versions/{v}]            status
    GET  /v1/models/{name}[/versions/{v}]/metadata   signature
    POST /v1/models/{name}[/versions/{v}]:predict    {"instances": [...]} or {"inputs": {...}}
    GET  /metrics                                    Prometheus text format
    GET  /healthz, /readyz                           liveness; readiness (a version is loaded)

Errors are TensorFlow Serving's shape, `{"error": "..."}`, with 400 for a bad request and 404
for an unknown model or version.
"""

from __future__ import annotations

import json
import re
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from conveyor.serving.models import ModelManager, RequestError

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                   r"(?P<suffix>/metadata|:predict)?$")


def create_app(manager: ModelManager) -> Starlette:
    registry = CollectorRegistry()
    requests = Counter("conveyor_serving_requests", "Requests served", ["model", "version",
                                                                         "status"],
                       registry=registry)
    latency = Histogram("conveyor_serving_request_seconds", "Request latency", ["model", "version"],
                        registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
    loaded_version = Gauge("conveyor_serving_loaded_version", "Newest loaded version", ["model"],
                           registry=registry)
    manager.on_load = lambda loaded: loaded_version.labels(manager.name).set(loaded.version)
    if manager.current is not None:
        loaded_version.labels(manager.name).set(manager.current.version)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def models(request: Request) -> Response:
        match = _PATH.match(request.url.path)
        if not match:
            return error(404, f"no such path {request.url.path}")
        name, version, suffix = match["name"], match["version"], match["suffix"] or ""
        if name != manager.name:
            return error(404, f"Servable not found for request: Latest({name})")
        model = manager.get(int(version) if version else None)
        if model is None:
            what = f"Specific({name}, {version})" if version else f"Latest({name})"
            return error(404, f"Servable not found for request: {what}")
        if suffix == ":predict":
            if request.method != "POST":
                return error(405, "predict takes POST")
            return predict(request, model)
        if request.method != "GET":
            return error(405, "status and metadata take GET")
        if suffix == "/metadata":
            return JSONResponse({"model_spec": {"name": name, "signature_name": "",
                                                "version": str(model.version)},
                                 "metadata": model.metadata()})
        versions = [model.version] if version else sorted(manager.loaded, reverse=True)
        return JSONResponse({"model_version_status": [
            {"version": str(v), "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}} for v in versions]})

    def predict(request: Request, model) -> Response:
        start = time.perf_counter()
        status = "400"
        try:
            body = json.loads(request.state.body or b"null")
            if not isinstance(body, dict):
                raise RequestError("the body must be a JSON object")
            answer = model.predict(body)
            status = "200"
            return JSONResponse(answer)
        except json.JSONDecodeError as exc:
            return error(400, f"the body is not JSON: {exc}")
        except RequestError as exc:
            return error(400, str(exc))
        except Exception as exc:  # noqa: BLE001  (a model failure is the server's, not the client's)
            status = "500"
            return error(500, f"{type(exc).__name__}: {exc}")
        finally:
            requests.labels(manager.name, str(model.version), status).inc()
            latency.labels(manager.name, str(model.version)).observe(time.perf_counter() - start)

    async def read_body(request: Request) -> Response:
        request.state.body = await request.body() if request.method == "POST" else b""
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(models, request)

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    def readyz(request: Request) -> Response:
        if manager.current is None:
            return PlainTextResponse("no version loaded", status_code=503)
        return PlainTextResponse(f"serving version {manager.current.version}")

    return Starlette(routes=[
        Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz),
        Route("/v1/models/{rest:path}", read_body, methods=["GET", "POST"]),
    ])


def serve(base_path: str, name: str, host: str = "127.0.0.1", port: int = 8501,
          poll_seconds: float = 2.0) -> None:
    import uvicorn

    manager = ModelManager(base_path, name, poll_seconds)
    manager.start()
    app = create_app(manager)
    print(f"conveyor serve: model {name!r} from {base_path} on http://{host}:{port} "
          f"(version {manager.current.version if manager.current else 'none yet'})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
