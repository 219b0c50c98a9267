"""Promote the challenger of a model base path, or roll it back, by the rule of
`conveyor.promote.rule` on an offline re-evaluation of both versions on recent labeled data.

The champion and the challenger are the base path's labels (`labels.json`, written by push in
challenger mode). Both are evaluated by evaluate's own code on the same split of a Dataset, each
as the other's baseline, so the paired tests are evaluate's (DeLong, McNemar mid-p, paired
losses). Then, by the decision:

- promote: the `champion` label moves to the challenger and `challenger` is removed
  (`conveyor serve` swaps to it within a poll; the canary share ends);
- roll back: `challenger` is removed (the champion keeps all the traffic; the version stays
  under the base path, as every version does, and is served only on request by number).

With a Vertex AI endpoint and/or a KServe InferenceService, the same decision is applied there
(`conveyor.push.vertex.promote_on_vertex`, `conveyor.push.kserve.canary_patch`) before the
labels are changed, so a cloud call that fails leaves the labels as they were and a rerun
applies the decision again. If another push labelled a different challenger while this one
evaluated, nothing is changed and an InputError says so.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from conveyor.errors import InputError
from conveyor.promote import rule as rules
from conveyor.registry import ModelBasePath

PROMOTION_FILE = "promotion.json"


@dataclasses.dataclass
class PromotionResult:
    action: str  # "promote", "rollback" or "none" (no challenger)
    champion: int | None  # before the decision
    challenger: int | None
    labels: dict[str, int]  # after it
    decision: dict[str, Any] = dataclasses.field(default_factory=dict)
    deployments: dict[str, Any] = dataclasses.field(default_factory=dict)
    rows: int = 0
    note: str = ""

    @property
    def served(self) -> int | None:
        return self.labels.get("champion")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "served": self.served}

    def markdown(self) -> str:
        if self.action == "none":
            return f"# No challenger to promote\n\n{self.note}\n"
        title = (f"# Promoted v{self.challenger} (was v{self.champion})"
                 if self.action == "promote" else
                 f"# Rolled back v{self.challenger}; v{self.champion} stays champion")
        lines = [title, "", f"Evaluated on {self.rows} recent labeled rows, both versions on the "
                 "same rows (docs/promotion.md).", ""]
        lines += [f"- {reason}" for reason in self.decision.get("reasons", [])]
        lines += ["", "labels: " + ", ".join(f"{k} v{v}" for k, v in sorted(self.labels.items()))]
        lines += [f"- {name}: {value}" for name, value in self.deployments.items()]
        return "\n".join(lines) + "\n"


def start_canary(model_base_path: str) -> dict[str, int]:
    """Give a base path without labels its champion: the version served now (the newest), so
    that the next push (mode auto) is a challenger beside it. Labels already there are kept."""
    base = ModelBasePath(model_base_path)
    latest = base.latest()
    if latest is None:
        raise InputError(f"start canary: {base.uri} has no published version to be the "
                         "champion")
    return base.update_labels(lambda labels: labels if "champion" in labels
                              else {**labels, "champion": latest})


def compare(base: ModelBasePath, champion: int, challenger: int, dataset: str | Path,
            split: str) -> tuple[str, dict, dict, int]:
    """(task, challenger-vs-champion comparison, champion-vs-challenger comparison, rows)."""
    from conveyor.evaluate.evaluate import evaluate_model

    with tempfile.TemporaryDirectory(prefix="conveyor-promote-") as scratch:
        old = base.fetch(champion, scratch)
        new = base.fetch(challenger, scratch)
        forward = evaluate_model(new, dataset, split=split, baseline_path=old,
                                 baseline_uri=base.version_uri(champion))
        reverse = evaluate_model(old, dataset, split=split, baseline_path=new,
                                 baseline_uri=base.version_uri(challenger))

    def comparison(result, who: int) -> dict:
        if result.comparison is None:
            why = "; ".join(s["reason"] for s in result.skipped_baselines) or "not evaluated"
            raise InputError(f"promote: v{who}'s counterpart could not be evaluated on "
                             f"{split!r} of {dataset}: {why}; nothing changed")
        return result.comparison

    ahead, behind = comparison(forward, challenger), comparison(reverse, champion)
    rows = max((c["rows"] for c in ahead.values()), default=0)
    return forward.task, ahead, behind, rows


def promote(model_base_path: str, dataset: str | Path, *, split: str = "eval",
            significance: float = rules.SIGNIFICANCE, vertex_endpoint: str = "",
            vertex_model: str = "",
            kserve_service: str = "", vertex_options: dict | None = None,
            kserve_client=None) -> PromotionResult:
    """Decide on the base path's challenger by the rule on `split` of `dataset` (recent
    labeled data), and apply the decision to the labels, Vertex AI and KServe."""
    base = ModelBasePath(model_base_path)
    labels = base.labels()
    champion, challenger = labels.get("champion"), labels.get("challenger")
    if challenger is None:
        return PromotionResult("none", champion, None, labels,
                               note=f"{base.uri} has no `challenger` label "
                                    f"(labels: {json.dumps(labels) if labels else 'none'})")
    if champion is None:
        raise InputError(f"promote: {base.labels_uri()} names a challenger (v{challenger}) but "
                         "no champion to compare it with")
    task, forward, reverse, rows = compare(base, champion, challenger, dataset, split)
    decision = rules.decide(task, forward, reverse, significance)

    def change(current: dict) -> dict:
        if (current.get("champion"), current.get("challenger")) != (champion, challenger):
            raise InputError(f"promote: the labels of {base.uri} changed while the versions "
                             f"were evaluated (champion v{champion}, challenger v{challenger} "
                             f"-> {json.dumps(current)}); nothing changed, run promote again")
        current.pop("challenger")
        if decision.promote:
            current["champion"] = challenger
        return current

    change(base.labels())  # raises now, before anything is changed, if they moved
    deployments: dict[str, Any] = {}
    if vertex_endpoint:
        from conveyor.push import vertex

        clients = vertex.Clients.for_endpoint(vertex_endpoint, **(vertex_options or {}))
        deployments["vertex"] = vertex.promote_on_vertex(
            vertex_endpoint, vertex.registry_model(vertex_endpoint,
                                                   vertex_model or Path(base.uri).name),
            promote=decision.promote, clients=clients)
    if kserve_service:
        from conveyor.push import kserve

        kserve.promote_on_kserve(kserve_service, promote=decision.promote,
                                 champion_uri=base.version_uri(champion),
                                 api_client=kserve_client)
        deployments["kserve"] = (
            f"{kserve_service}: canary promoted" if decision.promote else
            f"{kserve_service}: storageUri back to {base.version_uri(champion)}, no canary")
    after = base.update_labels(change)
    result = PromotionResult(decision.action, champion, challenger, after,
                             rules.summary(decision), deployments, rows=rows)
    return result


def write_outputs(result: PromotionResult, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PROMOTION_FILE).write_text(json.dumps(result.to_dict(), indent=2, default=str))
