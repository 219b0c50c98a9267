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
    found = [d for d in docs
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
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
    from conveyor.compile import SCHEDULE

    base = base_path_arg(find(render("base"), "Deployment", "model-server"))
    # The pipelines have no default base path (the user's own); the schedule passes the demo's.
    assert default(training, "model_base_path") is None
    assert default(continuous_training, "model_base_path") is None
    assert base == SCHEDULE["parameters"]["model_base_path"]
    schedule = find(render("pipeline-runner"), "ScheduledWorkflow", "continuous-training")
    assert schedule["spec"]["workflow"]["parameters"][0] == {"name": "model_base_path",
                                                             "value": base}
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


def test_accounts_exist_and_are_bound():
    docs = render("overlays/prod")
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert find(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] in accounts
    assert find(docs, "ScheduledWorkflow")["spec"]["serviceAccount"] in accounts
    for account in accounts:
        sa = find(docs, "ServiceAccount", account)
        assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    binding = find(docs, "RoleBinding", "pipeline-runner")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner",
                                    "namespace": "conveyor"}]


# -- RBAC: exactly what the pipeline runner needs (see the comments in pipeline-runner/rbac.yaml)

PIPELINE_RUNNER_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "watch", "list"]},
    {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"],
     "verbs": ["create", "patch"]},
    {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"], "verbs": ["patch"]},
]
POWERFUL_ROLES = {"cluster-admin", "admin", "edit"}
DANGEROUS_VERBS = {"delete", "deletecollection", "escalate", "bind", "impersonate"}
#: The only things a Role may delete: jobs the pipeline runner creates itself (the train task's
#: TFJob, deleted when the task ends: manifests/distributed-training/).
DELETABLE = {("kubeflow.org", "tfjobs")}


def rbac_problems(docs: list[dict]) -> list[str]:
    """What is wrong with the RBAC objects among docs, one line each (empty: nothing)."""
    problems = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("ClusterRole", "ClusterRoleBinding"):
            problems.append(f"{kind} {name}: cluster-wide; a namespaced Role/RoleBinding does")
        rules = doc.get("rules", []) if kind in ("Role", "ClusterRole") else []
        for i, rule in enumerate(rules):
            for field in ("apiGroups", "resources", "verbs", "nonResourceURLs"):
                if "*" in rule.get(field, []):
                    problems.append(f"{kind} {name} rule {i}: '*' in {field}")
            dangerous = DANGEROUS_VERBS & set(rule.get("verbs", []))
            if dangerous == {"delete"} and rule.get("resources") and all(
                    (group, resource) in DELETABLE for group in rule.get("apiGroups", [])
                    for resource in rule["resources"]):
                dangerous = set()
            if dangerous:
                problems.append(f"{kind} {name} rule {i}: verbs {sorted(dangerous)}")
            if "secrets" in rule.get("resources", []):
                problems.append(f"{kind} {name} rule {i}: reads secrets")
        if kind.endswith("Binding") and doc["roleRef"]["name"] in POWERFUL_ROLES:
            problems.append(f"{kind} {name}: binds the built-in {doc['roleRef']['name']!r} role")
    return problems


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rbac_has_no_wildcards_cluster_roles_or_powerful_bindings(kustomization):
    assert rbac_problems(render(kustomization)) == []


def test_rbac_check_catches_what_it_forbids():
    planted = [
        {"kind": "ClusterRole", "metadata": {"name": "wide"},
         "rules": [{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}]},
        {"kind": "Role", "metadata": {"name": "greedy"},
         "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["*"]},
                   {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "delete"]}]},
        {"kind": "RoleBinding", "metadata": {"name": "lazy"},
         "roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": []},
        # deleting TFJobs is allowed, deleting pods beside them is not
        {"kind": "Role", "metadata": {"name": "sloppy"},
         "rules": [{"apiGroups": ["kubeflow.org", ""], "resources": ["tfjobs", "pods"],
                    "verbs": ["get", "delete"]}]},
    ]
    found = "\n".join(rbac_problems(planted))
    for expected in ("ClusterRole wide: cluster-wide", "'*' in apiGroups", "'*' in resources",
                     "'*' in verbs", "['delete']", "reads secrets", "binds the built-in 'edit'",
                     "Role sloppy rule 0: verbs ['delete']"):
        assert expected in found


def test_pipeline_runner_role_grants_exactly_the_expected_rules():
    docs = render("overlays/prod")
    assert find(docs, "Role", "pipeline-runner")["rules"] == PIPELINE_RUNNER_RULES
    assert find(docs, "RoleBinding", "pipeline-runner")["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pipeline-runner"}
    assert [d["metadata"]["name"] for d in docs if d["kind"] in ("Role", "RoleBinding")] == [
        "pipeline-runner", "pipeline-runner"]


# -- Pod security: every pod these manifests create runs unprivileged on a read-only root

#: Kinds that create pods from a pod template, and where the template's pod spec is.
WORKLOADS = {"Deployment": ("spec", "template", "spec"),
             "StatefulSet": ("spec", "template", "spec"),
             "DaemonSet": ("spec", "template", "spec"), "Job": ("spec", "template", "spec"),
             "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"), "Pod": ("spec",),
             "InferenceService": ("spec", "predictor")}
#: Kinds that create no pods of their own. A ScheduledWorkflow's task pods are made by KFP from
#: the compiled spec (conveyor's image, which runs as 10001); their pod settings are the KFP
#: backend's, not these manifests'.
NOT_WORKLOADS = {"ConfigMap", "Service", "ServiceAccount", "HorizontalPodAutoscaler",
                 "PodDisruptionBudget", "Role", "RoleBinding", "ServiceMonitor",
                 "ScheduledWorkflow"}


def pod_specs(doc: dict) -> dict:
    """The pod spec of a workload, with an InferenceService predictor's `model` as a container."""
    spec = doc
    for key in WORKLOADS[doc["kind"]]:
        spec = spec[key]
    if doc["kind"] == "InferenceService":
        spec = {**spec, "containers": [spec["model"], *spec.get("containers", [])]}
    return spec


def pod_security_problems(doc: dict) -> list[str]:
    """How a workload's pods fall short of the hardening the manifests promise (empty: none)."""
    pod = pod_specs(doc)
    where = f"{doc['kind']} {doc['metadata']['name']}"
    problems = []
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problems.append(f"{where}: runAsNonRoot is not true")
    if not isinstance(psc.get("runAsUser"), int) or psc["runAsUser"] < 1000:
        problems.append(f"{where}: runAsUser is not a numeric non-system UID")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    mounts_ok = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        name = f"{where} container {container.get('name', 'model')}"
        csc = container.get("securityContext", {})
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        if csc.get("capabilities", {}).get("drop") != ["ALL"] or csc["capabilities"].get("add"):
            problems.append(f"{name}: capabilities are not drop [ALL]")
        if csc.get("privileged") or csc.get("runAsUser") == 0 or csc.get("runAsNonRoot") is False:
            problems.append(f"{name}: overrides the pod's non-root settings")
        resources = container.get("resources", {})
        if "memory" not in resources.get("limits", {}):
            problems.append(f"{name}: no memory limit")
        if not {"cpu", "memory"} <= set(resources.get("requests", {})):
            problems.append(f"{name}: no cpu and memory requests")
        if not any(m["mountPath"] == "/tmp" and m["name"] in mounts_ok
                   for m in container.get("volumeMounts", [])):
            problems.append(f"{name}: no writable emptyDir at /tmp")
    return problems


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_pod_runs_unprivileged_on_a_read_only_root(kustomization):
    docs = render(kustomization)
    unknown = {d["kind"] for d in docs} - set(WORKLOADS) - NOT_WORKLOADS
    assert not unknown, f"classify {unknown} as WORKLOADS or NOT_WORKLOADS in this test"
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert [p for d in workloads for p in pod_security_problems(d)] == []


def test_every_serving_manifest_is_checked():
    kinds = {d["kind"] for k in ("base", "overlays/dev", "overlays/prod", "kserve")
             for d in render(k) if d["kind"] in WORKLOADS}
    assert kinds == {"Deployment", "InferenceService"}


def test_pod_security_check_catches_a_root_pod():
    container = {"name": "app", "securityContext": {"privileged": True,
                                                    "capabilities": {"add": ["NET_ADMIN"]}}}
    planted = {"kind": "Deployment", "metadata": {"name": "rooty"}, "spec": {"template": {"spec": {
        "securityContext": {"runAsUser": 0}, "containers": [container]}}}}
    found = "\n".join(pod_security_problems(planted))
    for expected in ("runAsNonRoot is not true", "numeric non-system UID", "RuntimeDefault",
                     "allowPrivilegeEscalation", "readOnlyRootFilesystem", "drop [ALL]",
                     "overrides the pod's non-root", "no memory limit", "no writable emptyDir"):
        assert expected in found


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
