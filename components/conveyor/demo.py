"""The embedded default, end to end on this machine (`conveyor demo`, `make demo`).

A preset of `conveyor run training --local` (`conveyor.local.run`): start the local emulator
stack if none runs, seed the Palmer penguins if missing, run the training pipeline (preflight,
ingest, validate, transform, train, evaluate, push if blessed) through `kfp.local` against the
emulated BigQuery and GCS with the penguins' arguments, print where the Dataset, the reports
(validate's, evaluate's: files that open in a browser), the model and its TensorBoard logs are,
then start `conveyor serve` on the pushed model base path (in the emulated GCS), send it a
prediction and print the answer. Rerun, it pushes a new version only if the new model beats the
served one. The epochs are train's own choice (an upper bound from the row count, cut by early
stopping), as for any table: the demo passes no hyper-parameter.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conveyor.errors import ConveyorError
from conveyor.local import seed

MODEL_NAME = "penguins"
MODEL_BASE_PATH = f"gs://{seed.DEMO_BUCKET}/models/{MODEL_NAME}"
#: The preset: `conveyor run training --local` with these parameters.
ARGUMENTS = {"table": seed.DEMO_TABLE, "label": "species", "model_base_path": MODEL_BASE_PATH,
             "slices": ["island"]}
EXAMPLE = {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
           "flipper_length_mm": 218.0, "body_mass_g": 4950.0, "sex": "female", "year": 2008}


def predict_once(base_path: str, name: str, row: dict, log: Path | None = None,
                 timeout: float = 180.0) -> dict:
    """Start `conveyor serve` on the base path (its output to `log`), send one row, return the
    answer, stop it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = open(log, "ab") if log else None
    server = subprocess.Popen([sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
                               "--model-base-path",
                               base_path, "--model-name", name, "--port", str(port)],
                              stdout=subprocess.DEVNULL if out is None else out,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    where = f" (its log: {log})" if log else ""
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:  # not listening yet, or 503 while the first version loads
                if server.poll() is not None:
                    raise ConveyorError(f"conveyor serve exited with status "
                                        f"{server.returncode}{where}") from None
                if time.monotonic() > deadline:
                    raise ConveyorError(f"conveyor serve had no version of {name} ready after "
                                        f"{timeout:.0f} s{where}") from None
                time.sleep(0.3)
        body = json.dumps({"instances": [row]}).encode()
        print(f"[demo] conveyor serve on {url}: POST /v1/models/{name}:predict "
              f"{json.dumps({'instances': [row]})}")
        request = urllib.request.Request(f"{url}/v1/models/{name}:predict", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read())
    finally:
        server.terminate()
        server.wait(timeout=30)
        if out is not None:
            out.close()


def _report(task, output: str) -> Path:
    """Where a task's report is: its file with the suffix a browser needs (`report.html`),
    else the artifact itself."""
    return task.reports.get(output) or Path(task.artifacts[output])


def main(stack_root: str | None = None, pipeline_root: str = "local_outputs",
         keep_stack: bool = False, verbose: bool = False) -> int:
    """`conveyor demo`: exit status 0, or 2 when a task failed on bad input, else 1."""
    from conveyor.io import Dataset
    from conveyor.local.run import run, use_stack

    started = time.monotonic()
    with use_stack(stack_root, keep_stack) as used:
        if used.info is not None:
            info = used.info
            print(f"[demo] stack up: BigQuery {info.bigquery_endpoint} (Storage Read "
                  f"{info.bigquery_storage_endpoint}), GCS {info.gcs_endpoint}; data in "
                  f"{info.root}", flush=True)
        if not seed.table_exists(seed.DEMO_TABLE):
            rows = seed.seed_penguins()
            print(f"[demo] seeded {rows} penguins into {seed.DEMO_TABLE} and {seed.DEMO_CSV}")
        else:
            print(f"[demo] {seed.DEMO_TABLE} already seeded")
        sys.stdout.flush()
        result = run("training", ARGUMENTS, pipeline_root=pipeline_root, verbose=verbose,
                     raise_on_error=False)
        if not result.ok:
            print(f"conveyor: error: {result.error_message()}", file=sys.stderr)
            return 2 if result.input_error else 1
        tasks = result.run_dir
        assert tasks is not None  # a run that succeeded has its folder
        summary = Dataset(tasks / "bigquery-ingest" / "dataset").info.summary().splitlines()[0]
        print(f"[demo] Dataset: {summary}")
        validated, evaluated = result.task("validate"), result.task("evaluate")
        print(f"[demo] validation report (HTML): {_report(validated, 'report')}")
        print(f"[demo] model (SavedModel): {tasks / 'train' / 'model'}")
        print(f"[demo] TensorBoard: tensorboard --logdir {tasks / 'train' / 'tensorboard'}")
        print(f"[demo] evaluation report (HTML): {_report(evaluated, 'html_report')}; "
              f"Markdown: {_report(evaluated, 'report')}")
        evaluation = json.loads((tasks / "evaluate" / "evaluation" / "evaluation.json").read_text())
        print(f"[demo] blessed: {evaluation['blessed']} (baseline: "
              f"{evaluation['baseline_uri'] or 'none'}); "
              + ("pushed" if any(t.name == "push" for t in result.tasks) else "not pushed"))
        answer = predict_once(MODEL_BASE_PATH, MODEL_NAME, EXAMPLE, log=result.logs / "serve.log")
        print(f"[demo] answer: {json.dumps(answer)}")
    if used.stops:
        print("[demo] stack stopped (use --keep-stack to leave it running)")
    print(f"[demo] done in {time.monotonic() - started:.1f} s")
    return 0
