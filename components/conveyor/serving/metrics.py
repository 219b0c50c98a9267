"""The Prometheus side of `conveyor serve`: its own request and version metrics, TF Serving's
(`tf_metrics`), and the monitoring gauges (the newest monitoring result, see `serving.server`).
"""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from conveyor.serving.loaded import Loaded
from conveyor.serving.models import ModelManager
from conveyor.serving.tf_metrics import TfServingMetrics

log = logging.getLogger("conveyor.serve")


MONITORING_REFRESH = 30.0  # seconds between reads of the newest monitoring result


class MonitoringGauges:
    """The newest monitoring.json under `uri` as Prometheus gauges (see the module docstring)."""

    def __init__(self, uri: str, model: str, registry: CollectorRegistry,
                 refresh_seconds: float | None = None, clock=time.monotonic):
        self.uri, self.model = uri.rstrip("/") if uri != "/" else uri, model
        self.refresh_seconds = MONITORING_REFRESH if refresh_seconds is None else refresh_seconds
        self._clock = clock
        self._last = -float("inf")
        self._seen: str | None = None  # the file the gauges show (name and stamp)
        self._failed: str | None = None
        labels = ["model", "feature"]
        self.drift = Gauge("conveyor_feature_drift", "Drift distance of each feature in the "
                           "newest monitoring window (Jensen-Shannon or L-infinity)", labels,
                           registry=registry)
        self.threshold = Gauge("conveyor_feature_drift_threshold",
                               "Drift threshold of each feature", labels, registry=registry)
        self.drifted = Gauge("conveyor_feature_drifted", "1 if the feature drifted beyond its "
                             "threshold and sampling noise", labels, registry=registry)
        self.prediction = Gauge("conveyor_prediction_drift", "Drift distance of the "
                                "predictions", ["model", "output"], registry=registry)
        self.overall = Gauge("conveyor_monitoring_drifted", "1 if the newest monitoring window "
                             "drifted", ["model"], registry=registry)
        self.window_end = Gauge("conveyor_monitoring_window_end_seconds", "End of the newest "
                                "monitoring window (Unix time)", ["model"], registry=registry)
        self.version = Gauge("conveyor_monitoring_version", "Model version the newest monitoring "
                             "window was compared with", ["model"], registry=registry)
        self.failures = Counter("conveyor_monitoring_read_failures", "Monitoring results that "
                                "could not be found or read", ["model"], registry=registry)
        self.failures.labels(model)

    def maybe_refresh(self) -> None:
        now = self._clock()
        if now - self._last >= self.refresh_seconds:
            self._last = now
            self.refresh()

    def refresh(self) -> None:
        try:
            found = self._newest()
            if found is None or found[1] == self._seen:
                return
            self.show(json.loads(found[0]()))
            self._seen, self._failed = found[1], None
        except Exception as exc:  # monitoring must never disturb serving
            self.failures.labels(self.model).inc()
            what = f"{type(exc).__name__}: {exc}"
            if what != self._failed:
                self._failed = what
                log.warning("monitoring: cannot read the newest result under %s: %s", self.uri,
                            " ".join(what.split())[:300])

    def show(self, data: dict) -> None:
        m = self.model
        for gauge in (self.drift, self.threshold, self.drifted, self.prediction):
            gauge.clear()
        for f in data.get("features", []):
            self.drift.labels(m, f["column"]).set(float(f["distance"]))
            self.threshold.labels(m, f["column"]).set(float(f["threshold"]))
            self.drifted.labels(m, f["column"]).set(1.0 if f["drifted"] else 0.0)
        p = data.get("prediction") or {}
        if p.get("distance") is not None:
            self.prediction.labels(m, p.get("output", "")).set(float(p["distance"]))
        self.overall.labels(m).set(1.0 if data.get("drifted") else 0.0)
        end = (data.get("window") or {}).get("end")
        if end:
            import datetime

            moment = datetime.datetime.fromisoformat(end.replace("Z", "+00:00"))
            self.window_end.labels(m).set(moment.timestamp())
        version = (data.get("served") or {}).get("version")
        if version is not None:
            self.version.labels(m).set(float(version))

    @staticmethod
    def _candidate(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        return base.startswith("monitoring") and base.endswith(".json")

    def _newest(self):
        """(read(), identity) of the newest monitoring file, or None."""
        from pathlib import Path

        if self.uri.startswith("gs://"):
            from conveyor import gcp
            from conveyor.gcp import retry

            bucket_name, _, prefix = self.uri[5:].partition("/")
            bucket = gcp.storage_client().bucket(bucket_name)
            if prefix.endswith(".json"):
                blob = bucket.get_blob(prefix, retry=retry.storage())
                blobs = [blob] if blob is not None else []
            else:
                blobs = [b for b in bucket.list_blobs(prefix=f"{prefix}/" if prefix else None,
                                                      retry=retry.storage())
                         if self._candidate(b.name)]
            if not blobs:
                return None
            blob = max(blobs, key=lambda b: (b.updated, b.name))
            return ((lambda: blob.download_as_bytes(retry=retry.storage())),
                    f"{blob.name}@{blob.generation}")
        path = Path(self.uri)
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = [p for p in path.rglob("monitoring*.json") if not p.name.startswith(".")]
        else:
            return None
        if not files:
            return None
        newest = max(files, key=lambda p: (p.stat().st_mtime_ns, str(p)))
        stamp = newest.stat().st_mtime_ns
        return (newest.read_bytes, f"{newest}@{stamp}")


class ServingMetrics:
    """The server's Prometheus registry: requests and their latency per version, the newest
    loaded version, the versions skipped and the failed loads (kept current by the manager's
    `on_load` and `on_poll` hooks), and the monitoring gauges when there are any."""

    def __init__(self, manager: ModelManager, monitoring_uri: str = ""):
        self.registry = registry = CollectorRegistry()
        self.monitoring = (MonitoringGauges(monitoring_uri, manager.name, registry)
                           if monitoring_uri else None)
        self.requests = Counter("conveyor_serving_requests", "Requests served",
                                ["model", "version", "status"], registry=registry)
        self.latency = Histogram(
            "conveyor_serving_request_seconds", "Request latency", ["model", "version"],
            registry=registry, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1, 2.5))
        per_model = ["model"]
        self.loaded_version = Gauge("conveyor_serving_loaded_version", "Newest loaded version",
                                    per_model, registry=registry)
        self.skipped = Gauge("conveyor_serving_skipped_versions", "Versions newer than the "
                             "served one that are not served", per_model, registry=registry)
        self.failures = Gauge("conveyor_serving_load_failures", "Load attempts that failed "
                              "since the server started", per_model, registry=registry)
        self.fallback = Gauge("conveyor_serving_labels_fallback", "1 while serving falls back "
                              "(reason: labels_file, champion; see /readyz)", ["model", "reason"],
                              registry=registry)
        self.model, self.base_uri = manager.name, manager.base.uri
        self.tf = TfServingMetrics(manager.name)  # TF Serving's names, at its path
        self._failures_seen = 0

    def loaded(self, loaded: Loaded) -> None:
        """The manager's `on_load`: a version was loaded."""
        self.loaded_version.labels(self.model).set(loaded.version)
        self.tf.load_attempt(f"{self.base_uri.rstrip('/')}/{loaded.version}", ok=True)

    def polled(self, manager: ModelManager) -> None:
        """The manager's `on_poll`: after each poll of the base path."""
        self.skipped.labels(manager.name).set(len(manager.skipped()))
        self.failures.labels(manager.name).set(manager.load_failures)
        for _ in range(manager.load_failures - self._failures_seen):
            self.tf.load_attempt(self.base_uri, ok=False)
        self._failures_seen = manager.load_failures
        for reason, on in manager.fallbacks().items():
            self.fallback.labels(manager.name, reason).set(1.0 if on else 0.0)
        if self.monitoring is not None:
            self.monitoring.maybe_refresh()

    def observe(self, version: int, status: int, seconds: float,
                runtime: float | None = None, api: str = "predict",
                entrypoint: str = "REST") -> None:
        """One predict request answered (`runtime`: the seconds parsing it and running the
        model took; None if it never got that far). A gRPC request is counted with its
        HTTP equivalent as `status` (`serving.grpc_service`)."""
        self.requests.labels(self.model, str(version), str(status)).inc()
        self.latency.labels(self.model, str(version)).observe(seconds)
        self.tf.request(status, seconds, runtime, api, entrypoint)
