"""Push a blessed model: refuse an unblessed one, run the infra check, publish a new version.

The infra check (`conveyor.model.infra`) loads the model in a fresh process and calls it on sample
rows; when the evaluation recorded a verdict for exactly these files, made in a process that
loaded TensorFlow only to evaluate them, that verdict stands and no other process is started.

A push is idempotent: when the latest version already holds exactly these files (a retry of a
push whose task was killed after it published, or an identical push running at the same time),
that version is reported and none is added.

A push publishes only if the newest version when its model was evaluated (evaluation.json's
`newest_version_uri`; for older evaluations, `baseline_uri`) is still the newest one: when
another run published meanwhile, it raises
`StaleBaseline` ("another run published vN after this model was evaluated against vM; re-run
evaluate"), checked atomically with the publication (`ModelBasePath.publish_model`). An
evaluation without a baseline stands only for an empty base path: once a version exists, the
model was compared with nothing that is served, so it is refused the same way ("... evaluated
without a baseline"). A baseline given explicitly that is not a version of this base path is the
user's own choice of comparison and is not checked (the summary says so).

Canary (`mode`, docs/promotion.md). "champion": the new version is served at once (without a
labels file, as TensorFlow Serving does: the newest version; with one, the `champion` label
moves to it and any challenger is dropped). "challenger": the version is published and labelled
`challenger` in the base path's `labels.json`; the champion stays served (without a labels file
it becomes the version that was served, the newest before this push; the first version of a base
path is its champion), until `conveyor.promote` promotes or rolls it back. "auto" (the default):
"challenger" when the base path's labels name a champion (or, with a Vertex AI endpoint, when
the Model Registry model already has versions), else "champion", so a base path without labels
behaves as it always did. The labels are written after the version is published: a push killed
in between leaves an unlabelled version nobody serves by default, and its retry labels it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from conveyor.errors import ConveyorError, InputError
from conveyor.model import infra
from conveyor.model.layout import ASSETS_EXTRA, EVALUATION_FILE, PREDICTIONS_FILE, STATISTICS_FILE
from conveyor.registry import ModelBasePath, StaleBaseline

__all__ = ["MODES", "NotBlessed", "PushResult", "StaleBaseline", "blessing", "push"]

MODES = ("auto", "champion", "challenger")


class NotBlessed(ConveyorError):
    """The evaluation did not bless the model; nothing is pushed."""


@dataclasses.dataclass
class PushResult:
    version: int
    uri: str
    target: str
    infra: dict
    deployments: dict = dataclasses.field(default_factory=dict)  # vertex / kserve results
    new: bool = True  # False: the latest version already held this model; nothing was added
    skipped: list[int] = dataclasses.field(default_factory=list)  # numeric folders not conveyor's
    baseline: str = ""  # what the publication was checked against
    mode: str = "champion"  # champion or challenger, as resolved
    labels: dict = dataclasses.field(default_factory=dict)  # the base path's labels after push

    def markdown(self) -> str:
        title = (f"# Pushed version {self.version}" if self.new else
                 f"# Version {self.version} already holds this model; no version added")
        where = ("by evaluate's process (the same files)" if self.infra.get("where") == "evaluate"
                 else "in a fresh process")
        lines = [title, "", f"- target: {self.target}",
                 f"- uri: {self.uri}",
                 f"- infra check: {self.infra['rows']} rows answered {where}, outputs "
                 + ", ".join(f"`{k}` {v}" for k, v in self.infra["outputs"].items())]
        if self.baseline and self.new:
            lines.append(f"- baseline: {self.baseline}")
        if self.skipped:
            lines.append("- skipped version numbers " + ", ".join(map(str, self.skipped))
                         + ": numeric folders under the base path that conveyor did not publish "
                         "(never written into)")
        if self.labels:
            lines.append(f"- mode: {self.mode}; labels: " + ", ".join(
                f"{k} v{v}" for k, v in sorted(self.labels.items())))
        lines += [f"- {name}: {value}" for name, value in self.deployments.items()]
        return "\n".join(lines) + "\n"


def _evaluation(evaluation_dir: str | Path) -> dict:
    path = Path(evaluation_dir) / EVALUATION_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise NotBlessed(
            f"push: no readable evaluation at {path} ({exc}); refusing to push") from None


def blessing(evaluation_dir: str | Path) -> tuple[bool, list[str]]:
    data = _evaluation(evaluation_dir)
    failed = [f"{c['metric']} = {c['value']:.6g}: {c['rule']}" for c in data.get("checks", [])
              if not c["passed"]]
    return bool(data.get("blessed")), failed


def _baseline(base: ModelBasePath, uri: str | None) -> tuple[int | None, str]:
    """The version of `base` the model was evaluated against (0: none), and a note on it;
    None when the baseline is not a version of `base` (not checked)."""
    if not uri:
        return 0, "none at evaluation; the base path had to be still empty"
    version = base.version_of(uri)
    if version is None:
        return None, f"{uri} (not a version of this base path; not checked for newer versions)"
    return version, f"v{version}, still the newest version when this one was published"


def push(model_dir: str | Path, evaluation_dir: str | Path, model_base_path: str, *,
         sample: dict, statistics_dir: str | Path | None = None, vertex_endpoint: str = "",
         vertex_traffic_percent: int = 10, vertex_serving_image: str = "",
         vertex_model: str = "", kserve_service: str = "", kserve_canary_percent: int = 10,
         mode: str = "auto", vertex_options: dict | None = None) -> PushResult:
    """Publish `model_dir` under `model_base_path` if its evaluation blessed it and it serves,
    as the served version or as a challenger (`mode`); then, if asked, upload that version into
    a Vertex AI Model Registry model and deploy it to an endpoint (a challenger with a share of
    the traffic) and/or point a KServe InferenceService at it (a challenger as its canary).
    `vertex_options`: {api_endpoint, credentials} for the Vertex clients (tests)."""
    if mode not in MODES:
        raise InputError(f"mode: {mode!r}; expected one of {', '.join(MODES)}")
    blessed, failed = blessing(evaluation_dir)
    if not blessed:
        raise NotBlessed("push: the model is not blessed; nothing pushed. Failed checks: "
                         + ("; ".join(failed) or "none recorded"))
    base = ModelBasePath(model_base_path)
    labels_before = base.labels()  # a malformed labels file fails here, before anything
    if vertex_endpoint and not base.gcs:
        raise InputError("vertex_endpoint: Vertex AI serves models from gs://; "
                         f"model_base_path is {model_base_path!r}")
    evaluation = _evaluation(evaluation_dir)
    vertex_clients = registry = None
    if vertex_endpoint:
        from conveyor.push import vertex

        vertex_clients = vertex.Clients.for_endpoint(vertex_endpoint, **(vertex_options or {}))
        registry = vertex.registry_model(vertex_endpoint, vertex_model or Path(base.uri).name)
    if mode == "auto":
        if vertex_clients is not None and registry is not None:  # set together, above
            mode = "challenger" if vertex_clients.model_exists(registry) else "champion"
        else:
            mode = "challenger" if "champion" in labels_before else "champion"
    # The newest version evaluate saw (it may have judged against an older one, or the naive
    # floor alone, when newer versions could not be evaluated); evaluations written before
    # that field existed name only their baseline.
    seen = (evaluation["newest_version_uri"] if "newest_version_uri" in evaluation
            else evaluation.get("baseline_uri"))
    baseline, note = _baseline(base, seen)
    recorded = evaluation.get("infra")
    if infra.reusable(recorded, model_dir):
        answered = recorded
    else:
        answered = infra.check(model_dir, sample)
    # What the monitor compares serving traffic with travels with the version: the training
    # data's statistics, and the statistics of the predictions evaluate scored.
    extras = {STATISTICS_FILE: Path(statistics_dir) / STATISTICS_FILE} if statistics_dir else {}
    if (Path(evaluation_dir) / PREDICTIONS_FILE).exists():
        extras[PREDICTIONS_FILE] = Path(evaluation_dir) / PREDICTIONS_FILE
    with tempfile.TemporaryDirectory(prefix="conveyor-push-") as scratch:
        if extras:
            staged = Path(scratch) / "model"
            shutil.copytree(model_dir, staged)
            for name, source in extras.items():
                shutil.copy(source, staged / ASSETS_EXTRA / name)
            model_dir = staged
        published = base.publish_model(model_dir, dedupe=True, baseline=baseline)
    version = published.version
    labels = _label(base, version, mode, previous=_previous(base, version))
    result = PushResult(version, base.version_uri(version), base.uri, answered,
                        new=published.new, skipped=published.skipped, baseline=note, mode=mode,
                        labels=labels)
    if vertex_endpoint and registry is not None:  # registry: set with vertex_endpoint, above
        from conveyor.push.vertex import PREBUILT_TF_CPU, push_to_vertex

        result.deployments["vertex"] = push_to_vertex(
            result.uri, vertex_endpoint, display_name=f"{Path(base.uri).name}-v{version}",
            traffic_percent=vertex_traffic_percent,
            serving_image=vertex_serving_image or PREBUILT_TF_CPU, model=registry,
            challenger=mode == "challenger", clients=vertex_clients)
    if kserve_service:
        from conveyor.push.kserve import push_to_kserve

        canary = kserve_canary_percent if mode == "challenger" else None
        push_to_kserve(result.uri, kserve_service, canary_percent=canary)
        result.deployments["kserve"] = (
            f"{kserve_service} storageUri -> {result.uri}"
            + (f" as its canary ({canary}% of the traffic)" if canary is not None else ""))
    return result


def _previous(base: ModelBasePath, version: int) -> int | None:
    """The newest published version below `version` (what was served before it, unlabelled)."""
    older = [v for v in base.versions() if v < version]
    return older[-1] if older else None


def _label(base: ModelBasePath, version: int, mode: str, previous: int | None) -> dict:
    """Label `version` as `mode` says; the labels after it ({} when the base path keeps none)."""
    def change(labels: dict) -> dict:
        if mode == "champion":
            if not labels:
                return {}  # no labels file: the newest version is served, as always
            labels.pop("challenger", None)
            labels["champion"] = version
            return labels
        champion = labels.get("champion", previous if previous != version else None)
        if champion is None or champion == version:  # the first version: nothing to challenge
            labels.pop("challenger", None)
            labels["champion"] = version
            return labels
        labels["champion"], labels["challenger"] = champion, version
        return labels

    return base.update_labels(change)
