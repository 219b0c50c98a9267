"""A stand-in for the Kubernetes API server and the Kubeflow Training Operator on 127.0.0.1, for
the TFJob launcher's tests (tests/train/test_tfjob_launch.py, tests/train/test_tfjob_component.py):
the kubernetes client's real requests, and each TFJob's replicas run as local processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from support.network import free_ports

TFJOBS = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/tfjobs(?:/([^/?]+))?(?:\?.*)?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/?]+)(?:\?.*)?$")


class TrainingOperator:
    """The bits of the Kubernetes API server and the Kubeflow Training Operator the launcher
    uses, on 127.0.0.1. Creating a TFJob starts one local process per replica (Chief, then the
    Workers) running its container's command and args, with TF_CONFIG as the operator sets it
    (lower-case replica types, 127.0.0.1 and a free port per replica) and the container's env;
    the job's conditions follow their exit codes (a non-zero exit: Failed, naming the replica
    type, as the operator words it; the chief's 0: Succeeded). Its pods report each process's
    state, with the tail of its output as a failed container's termination message (what
    `FallbackToLogsOnError` gives). Deleting the job kills its processes.

    `command(kind, index, container)`, when given, replaces what a replica runs (a list of
    arguments); default: the container's command + args. Namespaces other than `namespaces`
    do not exist (404, as the API server answers)."""

    def __init__(self, workdir: Path, command=None, namespaces=("ml", "team-a")):
        self.workdir = workdir
        self.command = command
        self.namespaces = namespaces
        self.jobs: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        operator = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with operator.lock:
                    operator.requests.append((self.command, self.path))
                code, answer = operator.answer(self.command, self.path, body)
                payload = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        for job in list(self.jobs.values()):
            self._kill(job)

    def client(self):
        from kubernetes import client as k8s

        return k8s.ApiClient(k8s.Configuration(host=self.url))

    def kubeconfig(self, path: Path, namespace: str = "ml") -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "loopback",
            "clusters": [{"name": "loopback", "cluster": {"server": self.url}}],
            "users": [{"name": "loopback", "user": {"token": "loopback"}}],
            "contexts": [{"name": "loopback", "context": {"cluster": "loopback",
                                                          "user": "loopback",
                                                          "namespace": namespace}}]}))
        return path

    # -- the API

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict]:
        return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code}

    def answer(self, method: str, path: str, body):
        match = TFJOBS.match(path)
        if match:
            namespace, name = match.groups()
            if namespace not in self.namespaces:
                return self._status(404, "NotFound", f'namespaces "{namespace}" not found')
            if method == "POST" and name is None:
                return self._create(namespace, body)
            key = (namespace, name)
            with self.lock:
                job = self.jobs.get(key)
            if job is None:
                return self._status(404, "NotFound", f'tfjobs.kubeflow.org "{name}" not found')
            if method == "GET":
                return 200, {**job["body"], "status": {"conditions": self._conditions(job)}}
            if method == "DELETE":
                with self.lock:
                    del self.jobs[key]
                self._kill(job)
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        match = PODS.match(path)
        if match and method == "GET":
            namespace, pod = match.groups()
            with self.lock:
                jobs = [j for (ns, _), j in self.jobs.items() if ns == namespace]
            for job in jobs:
                if pod in job["procs"]:
                    return 200, self._pod(namespace, pod, job)
            return self._status(404, "NotFound", f'pods "{pod}" not found')
        return self._status(404, "NotFound", f"{method} {path}: not served here")

    def _create(self, namespace: str, body: dict):
        name = body["metadata"]["name"]
        with self.lock:
            if (namespace, name) in self.jobs:
                return self._status(409, "AlreadyExists",
                                    f'tfjobs.kubeflow.org "{name}" already exists')
            job = {"body": {**body, "metadata": {**body["metadata"], "uid": f"uid-{name}"}},
                   "procs": {}, "logs": {}, "kinds": {}}
            self.jobs[(namespace, name)] = job
        specs = body["spec"]["tfReplicaSpecs"]
        ports = iter(free_ports(sum(int(s["replicas"]) for s in specs.values())))
        cluster = {kind.lower(): [f"127.0.0.1:{next(ports)}" for _ in range(int(s["replicas"]))]
                   for kind, s in specs.items()}
        for kind, spec in specs.items():
            (container,) = spec["template"]["spec"]["containers"]
            for index in range(int(spec["replicas"])):
                pod = f"{name}-{kind.lower()}-{index}"
                env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG",
                                                                         "CLUSTER_SPEC")}
                env.update({e["name"]: e["value"] for e in container.get("env", [])})
                env["TF_CONFIG"] = json.dumps({"cluster": cluster, "environment": "cloud",
                                               "task": {"type": kind.lower(), "index": index}})
                # python3 in the image is the interpreter with conveyor installed
                env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
                tmp = self.workdir / pod / "tmp"
                tmp.mkdir(parents=True, exist_ok=True)
                env["TMPDIR"] = str(tmp)
                argv = (self.command(kind, index, container) if self.command
                        else list(container["command"]) + list(container.get("args", [])))
                log = self.workdir / pod / "log"
                with open(log, "w") as out:
                    job["procs"][pod] = subprocess.Popen(argv, stdout=out,
                                                         stderr=subprocess.STDOUT, env=env,
                                                         cwd=self.workdir / pod)
                job["logs"][pod], job["kinds"][pod] = log, kind
        return 201, job["body"]

    def _conditions(self, job: dict) -> list[dict]:
        name, namespace = job["body"]["metadata"]["name"], job["body"]["metadata"]["namespace"]
        out = [{"type": "Created", "status": "True", "reason": "TFJobCreated"}]
        codes = {pod: p.poll() for pod, p in job["procs"].items()}
        failed: dict[str, int] = {}
        for pod, code in codes.items():
            if code not in (None, 0):
                failed[job["kinds"][pod]] = failed.get(job["kinds"][pod], 0) + 1
        chief = [c for pod, c in codes.items() if job["kinds"][pod] == "Chief"]
        if failed:
            kind, count = min(failed.items())
            out += [{"type": "Running", "status": "False"},
                    {"type": "Failed", "status": "True", "reason": "TFJobFailed",
                     "message": f"TFJob {namespace}/{name} has failed because {count} {kind} "
                                "replica(s) failed."}]
        elif chief == [0]:
            out += [{"type": "Running", "status": "False"},
                    {"type": "Succeeded", "status": "True", "reason": "TFJobSucceeded",
                     "message": f"TFJob {namespace}/{name} successfully completed."}]
        else:
            out.append({"type": "Running", "status": "True", "reason": "TFJobRunning"})
        return out

    def _pod(self, namespace: str, pod: str, job: dict) -> dict:
        code = job["procs"][pod].poll()
        if code is None:
            state = {"running": {"startedAt": "2026-11-02T10:00:00Z"}}
        else:
            lines = job["logs"][pod].read_text(errors="replace").splitlines()[-80:]
            state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0
                                    else "Error", "message": "\n".join(lines)[-2048:]}}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace},
                "status": {"phase": "Running" if code is None else
                           "Succeeded" if code == 0 else "Failed",
                           "containerStatuses": [{"name": "tensorflow", "ready": code is None,
                                                  "restartCount": 0, "image": "conveyor",
                                                  "imageID": "", "state": state}]}}

    @staticmethod
    def _kill(job: dict) -> None:
        for p in job["procs"].values():
            if p.poll() is None:
                p.kill()
            p.wait()

    def running(self) -> int:
        return sum(p.poll() is None for job in self.jobs.values() for p in job["procs"].values())
