"""The embedded default, end to end on this machine (`conveyor demo`, `make demo`).

For now: start the local emulator stack, seed the Palmer penguins if missing, run the training
pipeline (ingest, validate, transform, train) through `kfp.local` against the emulated BigQuery,
and print the Dataset, the validation report, the model and its TensorBoard logs. Evaluate, push
and serve join as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

from conveyor.local import LocalStack, seed


def run_local_pipeline(pipeline_func, pipeline_root: Path, **arguments):
    """Run a pipeline through kfp.local's subprocess runner in this interpreter's environment."""
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=True)
    return pipeline_func(**arguments)


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
        run = run_local_pipeline(training.pipeline, Path(pipeline_root).resolve(),
                                 table=seed.DEMO_TABLE, label="species")
        model = Path(run.outputs["Output"].path)
        tasks = model.parent.parent
        print(f"[demo] Dataset artifact: {tasks / 'bigquery-ingest' / 'dataset'}")
        print(Dataset(tasks / "bigquery-ingest" / "dataset").info.summary())
        print(f"[demo] validation report (HTML): {tasks / 'validate' / 'report'}")
        print(f"[demo] fitted preprocessing: {tasks / 'transform' / 'preprocessing'}")
        print(f"[demo] model (SavedModel): {model}")
        print(f"[demo] TensorBoard logs: tensorboard --logdir {tasks / 'train' / 'tensorboard'}")
    finally:
        if not (keep_stack or was_running):
            stack.down()
            print("[demo] stack stopped (use --keep-stack to leave it running)")
    print(f"[demo] done in {time.monotonic() - started:.1f} s")
    return 0
