"""Push a blessed model: refuse an unblessed one, run the infra check, publish a new version.

The infra check (`conveyor.push.infra`) loads the model in a fresh process and calls it on sample
rows; when the evaluation recorded a verdict for exactly these files, made in a process that
loaded TensorFlow only to evaluate them, that verdict stands and no other process is started.

A push is idempotent: when the latest version already holds exactly these files (a retry of a
push whose task was killed after it published, or an identical push running at the same time),
that version is reported and none is added.

A push publishes only if the newest version when its model was evaluated (evaluation.json's
`newest_version_uri`; for older evaluations, `baseline_uri`) is still the newest one: when another run published meanwhile, it raises
`StaleBaseline` ("another run published vN after this model was evaluated against vM; re-run
evaluate"), checked atomically with the publication (`ModelBasePath.publish_model`). An
evaluation without a baseline stands only for an empty base path: once a version exists, the
model was compared with nothing that is served, so it is refused the same way ("... evaluated
without a baseline"). A baseline given explicitly that is not a version of this base path is the
user's own choice of comparison and is not checked (the summary says so).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from conveyor.errors import ConveyorError, InputError
from conveyor.evaluate.evaluate import EVALUATION_FILE
from conveyor.push import infra
from conveyor.push.base_path import ModelBasePath, StaleBaseline

__all__ = ["NotBlessed", "PushResult", "StaleBaseline", "blessing", "push"]


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


STATISTICS_FILE = "statistics.json"  # in the version's assets.extra/: its training data's


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
         kserve_service: str = "") -> PushResult:
    """Publish `model_dir` under `model_base_path` if its evaluation blessed it and it serves;
    then, if asked, deploy that version to a Vertex AI endpoint (canary) and/or point a KServe
    InferenceService at it."""
    blessed, failed = blessing(evaluation_dir)
    if not blessed:
        raise NotBlessed("push: the model is not blessed; nothing pushed. Failed checks: "
                         + ("; ".join(failed) or "none recorded"))
    base = ModelBasePath(model_base_path)
    if vertex_endpoint and not base.gcs:
        raise InputError("vertex_endpoint: Vertex AI serves models from gs://; "
                         f"model_base_path is {model_base_path!r}")
    evaluation = _evaluation(evaluation_dir)
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
    with tempfile.TemporaryDirectory(prefix="conveyor-push-") as scratch:
        if statistics_dir:  # the training data's statistics travel with the version
            staged = Path(scratch) / "model"
            shutil.copytree(model_dir, staged)
            shutil.copy(Path(statistics_dir) / STATISTICS_FILE,
                        staged / "assets.extra" / STATISTICS_FILE)
            model_dir = staged
        published = base.publish_model(model_dir, dedupe=True, baseline=baseline)
    version = published.version
    result = PushResult(version, base.version_uri(version), base.uri, answered,
                        new=published.new, skipped=published.skipped, baseline=note)
    if vertex_endpoint:
        from conveyor.push.vertex import PREBUILT_TF_CPU, push_to_vertex

        result.deployments["vertex"] = push_to_vertex(
            result.uri, vertex_endpoint, display_name=f"{Path(base.uri).name}-v{version}",
            traffic_percent=vertex_traffic_percent,
            serving_image=vertex_serving_image or PREBUILT_TF_CPU)
    if kserve_service:
        from conveyor.push.kserve import push_to_kserve

        push_to_kserve(result.uri, kserve_service)
        result.deployments["kserve"] = f"{kserve_service} storageUri -> {result.uri}"
    return result
