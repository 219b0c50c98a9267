"""Push a blessed model: refuse an unblessed one, run the infra check, publish a new version."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from conveyor.errors import ConveyorError
from conveyor.evaluate.evaluate import EVALUATION_FILE
from conveyor.push import infra
from conveyor.push.base_path import ModelBasePath


class NotBlessed(ConveyorError):
    """The evaluation did not bless the model; nothing is pushed."""


@dataclasses.dataclass
class PushResult:
    version: int
    uri: str
    target: str
    infra: dict

    def markdown(self) -> str:
        return (f"# Pushed version {self.version}\n\n- target: {self.target}\n- uri: {self.uri}\n"
                f"- infra check: {self.infra['rows']} rows answered, outputs "
                + ", ".join(f"`{k}` {v}" for k, v in self.infra["outputs"].items()) + "\n")


def blessing(evaluation_dir: str | Path) -> tuple[bool, list[str]]:
    path = Path(evaluation_dir) / EVALUATION_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise NotBlessed(f"push: no readable evaluation at {path} ({exc}); refusing to push")
    failed = [f"{c['metric']} = {c['value']:.6g}: {c['rule']}" for c in data.get("checks", [])
              if not c["passed"]]
    return bool(data.get("blessed")), failed


def push(model_dir: str | Path, evaluation_dir: str | Path, model_base_path: str, *,
         sample: dict) -> PushResult:
    """Publish `model_dir` under `model_base_path` if its evaluation blessed it and it serves."""
    blessed, failed = blessing(evaluation_dir)
    if not blessed:
        raise NotBlessed("push: the model is not blessed; nothing pushed. Failed checks: "
                         + ("; ".join(failed) or "none recorded"))
    base = ModelBasePath(model_base_path)
    answered = infra.check(model_dir, sample)
    version = base.publish(model_dir)
    return PushResult(version, base.version_uri(version), base.uri, answered)
