"""The embedded default, end to end on this machine (`conveyor demo`, `make demo`).

Start the local emulator stack, seed the Palmer penguins if missing, run the training pipeline
(ingest, validate, transform, train, evaluate, push if blessed) through `kfp.local` against the
emulated BigQuery and GCS, then start `conveyor serve` on the pushed model base path (in the
emulated GCS), send it a prediction and print the answer. Rerun, it pushes a new version only if
the new model beats the served one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conveyor.local import LocalStack, seed

MODEL_NAME = "penguins"
MODEL_BASE_PATH = f"gs://{seed.DEMO_BUCKET}/models/{MODEL_NAME}"
EXAMPLE = {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
           "flipper_length_mm": 218.0, "body_mass_g": 4950.0, "sex": "female", "year": 2008}


def run_local_pipeline(pipeline_func, pipeline_root: Path, **arguments) -> Path:
    """Run a pipeline through kfp.local's subprocess runner in this interpreter's environment.

    Returns the run's folder (`<pipeline_root>/<pipeline name>-<timestamp>`, one sub-folder per
    task, named as in the compiled spec).
    """
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=True)
    before = set(pipeline_root.glob("*")) if pipeline_root.exists() else set()
    pipeline_func(**arguments)
    new = [p for p in pipeline_root.glob("*") if p.is_dir() and p not in before]
    if len(new) != 1:
        raise RuntimeError(f"expected one new run folder under {pipeline_root}, found {new}")
    return new[0]


def predict_once(base_path: str, name: str, row: dict) -> dict:
    """Start `conveyor serve` on the base path, send one row, return the answer, stop it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "conveyor", "serve", "--model-base-path",
                               base_path, "--model-name", name, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("conveyor serve did not come up") from None
                time.sleep(0.3)
        body = json.dumps({"instances": [row]}).encode()
        print(f"[demo] conveyor serve on {url}: POST /v1/models/{name}:predict "
              f"{json.dumps({'instances': [row]})}")
        request = urllib.request.Request(f"{url}/v1/models/{name}:predict", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(stack_root: str | None = None, pipeline_root: str = "local_outputs",
         keep_stack: bool = False) -> int:
    from conveyor.io import Dataset
    from conveyor.pipelines import training

    started = time.monotonic()
    stack = LocalStack(stack_root)
    was_running = stack.status() is not None
    info = stack.up()
    info.activate()
    print(f"[demo] stack up: BigQuery {info.bigquery_endpoint} (Storage Read "
          f"{info.bigquery_storage_endpoint}), GCS {info.gcs_endpoint}; data in {info.root}")
    try:
        if not seed.table_exists(seed.DEMO_TABLE):
            rows = seed.seed_penguins()
            print(f"[demo] seeded {rows} penguins into {seed.DEMO_TABLE} and {seed.DEMO_CSV}")
        else:
            print(f"[demo] {seed.DEMO_TABLE} already seeded")
        print(f"[demo] running pipeline {training.NAME} through kfp.local ...")
        tasks = run_local_pipeline(training.pipeline, Path(pipeline_root).resolve(),
                                   table=seed.DEMO_TABLE, label="species",
                                   model_base_path=MODEL_BASE_PATH, slices=["island"])
        model = tasks / "train" / "model"
        print(f"[demo] Dataset artifact: {tasks / 'bigquery-ingest' / 'dataset'}")
        print(Dataset(tasks / "bigquery-ingest" / "dataset").info.summary())
        print(f"[demo] validation report (HTML): {tasks / 'validate' / 'report'}")
        print(f"[demo] fitted preprocessing: {tasks / 'transform' / 'preprocessing'}")
        print(f"[demo] model (SavedModel): {model}")
        print(f"[demo] TensorBoard logs: tensorboard --logdir {tasks / 'train' / 'tensorboard'}")
        evaluation = json.loads((tasks / "evaluate" / "evaluation" / "evaluation.json").read_text())
        print(f"[demo] evaluation report (Markdown): {tasks / 'evaluate' / 'report'}")
        print(f"[demo] blessed: {evaluation['blessed']} (baseline: "
              f"{evaluation['baseline_uri'] or 'none'}); "
              + ("pushed" if (tasks / "push").exists() else "not pushed"))
        print(f"[demo] answer: {json.dumps(predict_once(MODEL_BASE_PATH, MODEL_NAME, EXAMPLE))}")
    finally:
        if not (keep_stack or was_running):
            stack.down()
            print("[demo] stack stopped (use --keep-stack to leave it running)")
    print(f"[demo] done in {time.monotonic() - started:.1f} s")
    return 0
