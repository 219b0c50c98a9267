#!/usr/bin/env python
"""Evaluate time at 1 M rows, and `conveyor serve` throughput and latency under load.

1. The reference workload (1 M rows, 2:1) and the baseline's model, trained by conveyor (200
   steps x 256); then `evaluate_model` of it on the 333 k-row eval split, with the c0 slices, in a
   fresh process (seconds after imports, rows/s, peak RSS).
2. The model pushed to a local model base path and served by `conveyor serve` (a separate process
   on 127.0.0.1); a bounded load generator (threads with keep-alive connections, `--seconds` per
   cell, at most 100 k requests) sends row-format requests of 1 and 64 rows at 1, 8 and 32
   concurrent clients and reports requests/s, rows/s, p50 and p99 latency and errors. The load
   generator shares the 2 cores with the server, so the figures are a floor.
3. Load during hot swaps: a fresh base path served by `conveyor serve` (polling every second),
   8 keep-alive clients sending 1-row requests for `--swap-seconds` while `--swaps` new versions
   are published into the base path with conveyor's own `ModelBasePath.publish` (so each swap
   is a real load of a SavedModel beside the serving one). Reports requests, errors (anything but
   a 200, including connection errors), p50/p99/max latency, how many requests each version
   answered (from the server's /metrics) and how long each version took from publish to serving.
4. Prediction logging's cost: three servers of the same model, logging off, `--log-predictions`
   at sample rate 1 and at 0.1 (to a local folder), under the same load (8 keep-alive clients,
   1- and 64-row requests, `--seconds` a cell), the modes interleaved in `--rounds` rounds
   (median per mode); then each server is stopped (SIGTERM) and the rows in its Parquet files
   are counted against the rows it answered.

    python bench/serve.py                     # --seconds 5, --swap-seconds 25, --swaps 4
    python bench/serve.py --swap-only         # part 3 only
    python bench/serve.py --logging-only      # part 4 only (--rounds 3)
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import child_figures, machine, reference_dataset, run_child

HERE = Path(__file__).resolve().parent
SPEC = {"label": "label", "task": "binary",
        "features": {**{f"f{i}": {"kind": "numeric"} for i in range(8)},
                     "c0": {"kind": "categorical"}, "c1": {"kind": "categorical"}}}
HPARAMS = {"hidden_units": [16], "embedding_dim": 4, "learning_rate": 0.01, "batch_size": 256,
           "steps": 200, "epochs": 1}
ROW = {**{f"f{i}": 0.25 * i - 1 for i in range(8)}, "c0": "a2", "c1": "b17"}


def one(folder: str) -> None:
    start = time.monotonic()
    from conveyor.evaluate.evaluate import evaluate_model

    imported = time.monotonic()
    result = evaluate_model(Path(folder) / "model", Path(folder) / "ds", slices=["c0"])
    work = time.monotonic() - imported
    rows = int(result.metrics["overall"]["examples"])
    child_figures(step="evaluate", rows=rows, seconds=round(work, 2),
                  import_s=round(imported - start, 2), rows_per_s=round(rows / work),
                  auc=round(result.metrics["overall"]["auc"], 4))


def prepare(folder: Path) -> None:
    from conveyor.io import Dataset
    from conveyor.train.train import train
    from conveyor.transform.fit import fit
    from conveyor.transform.spec import FeatureSpec

    reference_dataset(1_000_000, folder / "ds")
    if not (folder / "model" / "saved_model.pb").exists():
        fit(Dataset(folder / "ds"), FeatureSpec.from_dict(SPEC)).write(folder / "transform")
        train(folder / "ds", folder / "transform", folder / "model", hparams=HPARAMS)


def load(port: int, rows: int, clients: int, seconds: float, cap: int = 100_000) -> dict:
    body = json.dumps({"instances": [ROW] * rows})
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < stop and len(latencies) + len(mine) < cap:
            t = time.perf_counter()
            conn.request("POST", "/v1/models/reference:predict", body,
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - t)
            if response.status != 200:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {"rows": rows, "clients": clients, "requests": len(latencies),
            "req_per_s": round(len(latencies) / elapsed), "rows_per_s": round(
                len(latencies) * rows / elapsed), "p50_ms": round(q[49] * 1000, 2),
            "p99_ms": round(q[98] * 1000, 2), "errors": errors[0]}


def start_server(base: Path, *options: str) -> tuple[subprocess.Popen, int]:
    """`conveyor serve` on a free loopback port, once it is ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
                               "--model-base-path",
                               str(base), "--model-name", "reference", "--port", str(port),
                               *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return server, port
        except OSError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit("conveyor serve did not become ready")


def served_counts(port: int) -> dict[int, int]:
    """Predict requests answered 200, by model version, from the server's /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    counts = {}
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith("conveyor_serving_requests_total{") and 'status="200"' in line:
            version = int(line.split('version="')[1].split('"')[0])
            counts[version] = int(float(line.rsplit(" ", 1)[1]))
    conn.close()
    return counts


def swap_load(folder: Path, seconds: float, swaps: int, clients: int = 8) -> dict:
    """`clients` keep-alive clients predicting for `seconds` while `swaps` versions are pushed."""
    from conveyor.registry import ModelBasePath

    base = ModelBasePath(str(folder / "base-swap"))
    shutil.rmtree(base.uri, ignore_errors=True)
    base.publish(folder / "model")
    server, port = start_server(Path(base.uri), "--poll-seconds", "1")
    body = json.dumps({"instances": [ROW]})
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, failed = [], []
        while not stop.is_set():
            t = time.perf_counter()
            try:
                conn.request("POST", "/v1/models/reference:predict", body,
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                text = response.read()
                if response.status != 200:
                    failed.append(f"{response.status} {text[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                failed.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - t)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(failed)

    to_first_answer: dict[int, float | None] = {}
    try:
        threads = [threading.Thread(target=client) for _ in range(clients)]
        began = time.monotonic()
        for t in threads:
            t.start()
        for i in range(1, swaps + 1):
            time.sleep(max(0.0, began + i * seconds / (swaps + 1) - time.monotonic()))
            published = time.monotonic()
            version = base.publish(folder / "model")
            to_first_answer[version] = None
            while time.monotonic() - published < 60:
                if version in served_counts(port):
                    to_first_answer[version] = round(time.monotonic() - published, 2)
                    break
                time.sleep(0.05)
        time.sleep(max(0.0, began + seconds - time.monotonic()))
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
        by_version = served_counts(port)
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {"clients": clients, "seconds": round(elapsed, 1), "swaps": swaps,
            "requests": len(latencies), "req_per_s": round(len(latencies) / elapsed),
            "errors": len(errors), "first_errors": errors[:3],
            "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 1), "answered_by_version": by_version,
            "publish_to_first_answer_s": to_first_answer}


def print_swap(result: dict) -> None:
    print(json.dumps(result))
    print(f"\nload during {result['swaps']} hot swaps: {result['clients']} keep-alive clients, "
          f"{result['seconds']} s, 1-row requests\n")
    print("| requests | requests/s | errors | p50 ms | p99 ms | max ms | answered by version "
          "(requests) | publish to first answer, s |")
    print("|---:|---:|---:|---:|---:|---:|---|---|")
    by_version = ", ".join(f"v{v}: {n:,}" for v, n in sorted(result["answered_by_version"].items()))
    publish = ", ".join(f"v{v}: {s}" for v, s in result["publish_to_first_answer_s"].items())
    print(f"| {result['requests']:,} | {result['req_per_s']:,} | {result['errors']} | "
          f"{result['p50_ms']} | {result['p99_ms']} | {result['max_ms']} | {by_version} | "
          f"{publish} |")


LOG_MODES = {"off": (), "rate 1.0": ("1.0",), "rate 0.1": ("0.1",)}


def logging_load(folder: Path, seconds: float, rounds: int, clients: int = 8) -> list[dict]:
    """Each cell (rows per request) under each logging mode, interleaved over `rounds`."""
    import pyarrow.dataset as pads

    base = folder / "base-log"
    shutil.rmtree(base, ignore_errors=True)
    from conveyor.registry import ModelBasePath

    ModelBasePath(str(base)).publish(folder / "model")
    servers, logs = {}, {}
    try:
        for mode, rate in LOG_MODES.items():
            options: tuple[str, ...] = ()
            if rate:
                logs[mode] = folder / f"log-{rate[0]}"
                shutil.rmtree(logs[mode], ignore_errors=True)
                options = ("--log-predictions", str(logs[mode]), "--log-sample-rate", rate[0])
            servers[mode] = start_server(base, *options)
        for _server, port in servers.values():
            load(port, 1, 1, 1.0)  # warm-up
        cells: dict[tuple[str, int], list[dict]] = {}
        for _ in range(rounds):
            for rows in (1, 64):
                for mode, (_server, port) in servers.items():
                    cells.setdefault((mode, rows), []).append(load(port, rows, clients,
                                                                   seconds))
        answered = {mode: served_counts(port) for mode, (_, port) in servers.items()}
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=60)
    out = []
    for (mode, rows), runs in cells.items():
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("req_per_s", "rows_per_s", "p50_ms", "p99_ms")}
        out.append({"mode": mode, "rows": rows, "clients": clients, "rounds": rounds,
                    "requests": sum(r["requests"] for r in runs),
                    "errors": sum(r["errors"] for r in runs), **med})
    for mode, path in logs.items():
        table = pads.dataset(str(path), format="parquet", partitioning="hive").to_table(
            columns=["request_id"])
        files = len(list(path.rglob("*.parquet")))
        requests = sum(answered[mode].values())
        out.append({"mode": mode, "logged_rows": table.num_rows,
                    "logged_requests": len(set(table["request_id"].to_pylist())),
                    "answered_requests": requests, "files": files})
    return out


def print_logging(results: list[dict]) -> None:
    for r in results:
        print(json.dumps(r))
    cells = [r for r in results if "p50_ms" in r]
    print(f"\nprediction logging: {cells[0]['clients']} keep-alive clients, "
          f"median of {cells[0]['rounds']} interleaved rounds\n")
    print("| logging | rows/request | requests | requests/s | rows/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in sorted(cells, key=lambda c: (c["rows"], list(LOG_MODES).index(c["mode"]))):
        print(f"| {c['mode']} | {c['rows']} | {c['requests']:,} | {c['req_per_s']:,.0f} | "
              f"{c['rows_per_s']:,.0f} | {c['p50_ms']} | {c['p99_ms']} | {c['errors']} |")
    for r in results:
        if "logged_rows" in r:
            print(f"\n{r['mode']}: {r['logged_requests']:,} of {r['answered_requests']:,} "
                  f"requests logged ({r['logged_rows']:,} rows in {r['files']} files)", end="")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--swap-seconds", type=float, default=25.0)
    parser.add_argument("--swaps", type=int, default=4)
    parser.add_argument("--swap-only", action="store_true", help="only the hot-swap load")
    parser.add_argument("--logging-only", action="store_true",
                        help="only prediction logging's cost (off, rate 1, rate 0.1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the logging modes")
    parser.add_argument("--out", default=str(HERE / "out" / "serve"))
    parser.add_argument("--one", nargs=1, metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one[0])
    folder = Path(args.out)
    prepare(folder)
    if args.swap_only:
        return print_swap(swap_load(folder, args.swap_seconds, args.swaps))
    if args.logging_only:
        return print_logging(logging_load(folder, args.seconds, args.rounds))
    evaluation = [run_child(__file__, str(folder)) for _ in range(3)]

    from conveyor.registry import ModelBasePath

    base = folder / "base"
    shutil.rmtree(base, ignore_errors=True)
    ModelBasePath(str(base)).publish(folder / "model")
    server, port = start_server(base)
    try:
        load(port, 1, 1, 1.0)  # warm-up
        cells = [load(port, rows, clients, args.seconds)
                 for rows in (1, 64) for clients in (1, 8, 32)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    swap = swap_load(folder, args.swap_seconds, args.swaps)
    logging_results = logging_load(folder, args.seconds, args.rounds)
    for cell in cells:
        print(json.dumps(cell))
    print("\n" + machine(3) + "\n")
    e = {k: statistics.median(r[k] for r in evaluation)
         for k in ("seconds", "rows_per_s", "peak_rss_mb", "import_s")}
    print(f"evaluate, {evaluation[0]['rows']:,} eval rows (overall + c0 slices): "
          f"{e['seconds']:.2f} s after imports ({e['import_s']:.1f} s), "
          f"{e['rows_per_s']:,.0f} rows/s, peak RSS {e['peak_rss_mb']:.0f} MB, "
          f"AUC {evaluation[0]['auc']}\n")
    print("| rows/request | clients | requests | requests/s | rows/s | p50 ms | p99 ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cells:
        print(f"| {c['rows']} | {c['clients']} | {c['requests']:,} | {c['req_per_s']:,} | "
              f"{c['rows_per_s']:,} | {c['p50_ms']} | {c['p99_ms']} | {c['errors']} |")
    print_swap(swap)
    print_logging(logging_results)


if __name__ == "__main__":
    main()
