"""Every kustomization renders offline, every manifest validates against Kubernetes' schemas,
and the pieces point at each other: serving reads the path push writes; the schedule runs the
compiled continuous-training spec."""

import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conveyor.pipelines import continuous_training, training

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
KUBERNETES = "1.33.0"
KUSTOMIZATIONS = sorted(p.parent.relative_to(MANIFESTS).as_posix()
                        for p in MANIFESTS.rglob("kustomization.yaml"))
CUSTOM = {("kubeflow.org/v1beta1", "ScheduledWorkflow"),
          ("serving.kserve.io/v1beta1", "InferenceService"),
          ("monitoring.coreos.com/v1", "ServiceMonitor")}


def render(kustomization: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render manifests"
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS / kustomization)],
                         capture_output=True, text=True, check=True, timeout=120)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} rendered"
    return found[0]


def default(pipeline, parameter):
    return pipeline.pipeline.component_spec.inputs[parameter].default


def test_every_kustomization_is_covered():
    assert {"base", "overlays/dev", "overlays/prod", "kserve", "pipeline-runner",
            "monitoring"} <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_renders_and_validates_strictly(kustomization):
    docs = render(kustomization)
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM:
            assert doc["metadata"]["name"] and doc["spec"]
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def base_path_arg(deployment) -> str:
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    paths = [a.split("=", 1)[1] for a in args if a.startswith("--model_base_path=")]
    assert len(paths) == 1, args
    return paths[0]


def test_serving_reads_the_path_the_pipelines_push_to():
    base = base_path_arg(find(render("base"), "Deployment", "model-server"))
    assert base == default(training, "model_base_path")
    assert base == default(continuous_training, "model_base_path")
    assert find(render("kserve"), "InferenceService")["spec"]["predictor"]["model"][
        "storageUri"] == base


def test_production_serves_and_retrains_on_the_same_path():
    docs = render("overlays/prod")
    served = base_path_arg(find(docs, "Deployment", "model-server"))
    schedule = find(docs, "ScheduledWorkflow", "continuous-training")
    params = {p["name"]: p["value"] for p in schedule["spec"]["workflow"]["parameters"]}
    assert served == params["model_base_path"] == "gs://acme-ml-models/models/penguins"
    assert all(d["metadata"].get("namespace") == "conveyor" for d in docs)


def test_the_schedule_runs_the_compiled_continuous_training_spec():
    schedule = find(render("pipeline-runner"), "ScheduledWorkflow", "continuous-training")
    compiled = next(yaml.safe_load_all(
        (REPO / "pipelines" / "continuous_training" / "pipeline.yaml").read_text()))
    spec = schedule["spec"]
    assert spec["workflow"]["spec"] == compiled
    assert spec["maxConcurrency"] == 1 and spec["noCatchup"] is True
    assert len(spec["trigger"]["cronSchedule"]["cron"].split()) == 6  # seconds first
    assert set(compiled["root"]["inputDefinitions"]["parameters"]) >= {
        p["name"] for p in spec["workflow"]["parameters"]}


def test_accounts_exist_and_rbac_is_least_privilege():
    docs = render("overlays/prod")
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert find(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] in accounts
    assert find(docs, "ScheduledWorkflow")["spec"]["serviceAccount"] in accounts
    for account in accounts:
        sa = find(docs, "ServiceAccount", account)
        assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    role = find(docs, "Role", "pipeline-runner")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert not {"delete", "deletecollection", "escalate", "bind"} & set(rule["verbs"])
    binding = find(docs, "RoleBinding", "pipeline-runner")
    assert binding["subjects"][0]["name"] in accounts


def test_serving_pods_are_hardened():
    pod = find(render("base"), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] and container["capabilities"]["drop"] == ["ALL"]


def test_dashboard_and_scrape_config():
    docs = render("monitoring")
    monitor = find(docs, "ServiceMonitor")
    deployment_labels = find(render("base"), "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= deployment_labels.items()
    dashboard = json.loads(find(docs, "ConfigMap", "conveyor-dashboard")["data"][
        "conveyor-dashboard.json"])
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("request rate", "latency", "error", "model version", "pipeline"):
        assert topic in titles
    assert all(p["targets"][0]["expr"] for p in dashboard["panels"])
