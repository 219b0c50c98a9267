#!/usr/bin/env python
"""Training throughput on one worker (model.fit) and on two local worker processes
(MultiWorkerMirroredStrategy over 127.0.0.1, conveyor's custom loop), same data and model.

The reference workload's model (bench/train.py) on `--rows` rows, `--steps` steps of
`batch_size` 256 per replica. Two workers run `--steps` global steps of 2 x 256 examples, so
they see twice the examples. Both workers share this machine's cores, so this measures the
loop's and the collectives' cost, not a speed-up. examples/s is steady throughput (steps after
each epoch's first). For 2 workers it counts all replicas' examples; per worker, halve it.

    python bench/train_multiworker.py --rows 100000 --steps 600
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import reference_dataset
from train import HPARAMS, SPEC

CHILD = """
import json, sys
from conveyor.train.train import train
a = json.loads(sys.argv[1])
r = train(a["ds"], a["t"], a["model"], hparams=a["hparams"], checkpoint_dir=a["ckpt"])
print("RESULT " + json.dumps({"steady": r.steady_examples_per_second,
                              "overall": r.examples_per_second, "seconds": r.seconds,
                              "chief": r.is_chief, "val_auc": r.metrics.get("val_auc")}))
"""


def ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    out = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return out


def run(workers: int, base: Path, hparams: dict) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "CLUSTER_SPEC")}
    addresses = [f"127.0.0.1:{p}" for p in ports(workers)]
    procs = []
    for i in range(workers):
        if workers > 1:
            env = dict(env, TF_CONFIG=json.dumps({"cluster": {"worker": addresses},
                                                  "task": {"type": "worker", "index": i}}))
        args = {"ds": str(base / "ds"), "t": str(base / "t"), "hparams": hparams,
                "model": str(base / f"model-{workers}-{i}"), "ckpt": str(base / f"ckpt-{workers}")}
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True))
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=1800)
        lines = [x for x in text.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not lines:
            raise SystemExit(f"a worker failed (exit {p.returncode}):\n{text[-3000:]}")
        out.append(json.loads(lines[-1][7:]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    hparams = {**HPARAMS, "steps": args.steps, "epochs": 2, "early_stopping_patience": 0}
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        reference_dataset(args.rows, base / "ds")
        from conveyor.io import Dataset
        from conveyor.transform.fit import fit
        from conveyor.transform.spec import FeatureSpec

        fit(Dataset(base / "ds"), FeatureSpec.from_dict(SPEC)).write(base / "t")
        for workers in (1, 2):
            began = time.monotonic()
            results = run(workers, base, hparams)
            chief = results[0]
            print(f"{workers} worker(s): steady {chief['steady']:.0f} examples/s "
                  f"({chief['steady'] / workers:.0f} per worker), overall "
                  f"{chief['overall']:.0f}/s, train() {chief['seconds']:.1f} s, wall "
                  f"{time.monotonic() - began:.1f} s, val_auc {chief['val_auc']:.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
