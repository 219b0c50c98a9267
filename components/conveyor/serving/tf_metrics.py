"""TensorFlow Serving's own Prometheus metrics, at TF Serving's own path, beside conveyor's.

Dashboards and alerts written for TF Serving (for example Grafana's TensorFlow mixin) read
`GET /monitoring/prometheus/metrics` and these names, with TF Serving's labels and units
(microseconds):

    :tensorflow:serving:request_count{model_name, status}             counter
    :tensorflow:serving:request_latency{model_name, API, entrypoint}  histogram, µs
    :tensorflow:serving:runtime_latency{model_name, API, runtime}     histogram, µs
    :tensorflow:cc:saved_model:load_attempt_count{model_path, status} counter

`status` is TF Serving's error code name (OK, INVALID_ARGUMENT, NOT_FOUND, ...), `API` is
`predict`, `classify` or `regress` (the gRPC methods; REST counts every verb as `predict`),
`entrypoint` is `REST` or `GRPC` (`serving.grpc_service`) and `runtime` is `TF2`. Request
latency runs from the first byte read (gRPC: from the decoded request) to the answer; runtime
latency is the part spent turning the body into tensors and running the model.
prometheus_client cannot write a counter without its `_total` suffix, which would break these
names, so the text is written here.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

PATH = "/monitoring/prometheus/metrics"

#: An HTTP status conveyor answers -> the error code TF Serving reports for it.
CODES = {200: "OK", 400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED",
         408: "DEADLINE_EXCEEDED", 413: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}

#: Histogram bucket bounds in µs: 10 µs to ~84 s, doubling.
BOUNDS = tuple(10.0 * 2 ** i for i in range(24))

Labels = tuple[tuple[str, str], ...]


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BOUNDS, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: Labels) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*BOUNDS, float("inf")), self.counts):
            running += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {running}")
        out.append(f"{name}_sum{_labels(labels)} {self.sum:g}")
        out.append(f"{name}_count{_labels(labels)} {running}")
        return out


class TfServingMetrics:
    """TF Serving's request, latency and load metrics of one served model (thread-safe)."""

    def __init__(self, model: str):
        self.model = model
        self._lock = threading.Lock()
        self._requests: dict[Labels, int] = defaultdict(int)
        self._loads: dict[Labels, int] = defaultdict(int)
        self._request_latency: dict[Labels, _Histogram] = defaultdict(_Histogram)
        self._runtime_latency: dict[Labels, _Histogram] = defaultdict(_Histogram)

    def request(self, http_status: int, seconds: float, runtime_seconds: float | None,
                api: str = "predict", entrypoint: str = "REST") -> None:
        """One predict request answered with `http_status` (a gRPC answer's HTTP equivalent),
        in `seconds`, of which `runtime_seconds` were spent in the model (None: it never
        reached the model)."""
        code = CODES.get(http_status, "INTERNAL" if http_status >= 500 else "UNKNOWN")
        with self._lock:
            self._requests[(("model_name", self.model), ("status", code))] += 1
            self._request_latency[(("API", api), ("entrypoint", entrypoint),
                                   ("model_name", self.model))].observe(seconds * 1e6)
            if runtime_seconds is not None:
                self._runtime_latency[(("API", api), ("model_name", self.model),
                                       ("runtime", "TF2"))].observe(runtime_seconds * 1e6)

    def load_attempt(self, model_path: str, ok: bool) -> None:
        with self._lock:
            self._loads[(("model_path", model_path), ("status", "success" if ok else "fail"))] += 1

    def text(self) -> str:
        """The metrics in Prometheus' text format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            _counter(lines, ":tensorflow:serving:request_count", self._requests)
            _histogram(lines, ":tensorflow:serving:request_latency", self._request_latency)
            _histogram(lines, ":tensorflow:serving:runtime_latency", self._runtime_latency)
            _counter(lines, ":tensorflow:cc:saved_model:load_attempt_count", self._loads)
        return "\n".join(lines) + "\n"


def _counter(lines: list[str], name: str, values: dict[Labels, int]) -> None:
    lines.append(f"# TYPE {name} counter")
    lines.extend(f"{name}{_labels(labels)} {count}" for labels, count in sorted(values.items()))


def _histogram(lines: list[str], name: str, values: dict[Labels, _Histogram]) -> None:
    lines.append(f"# TYPE {name} histogram")
    for labels, histogram in sorted(values.items()):
        lines.extend(histogram.lines(name, labels))


def _labels(labels: Labels) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
