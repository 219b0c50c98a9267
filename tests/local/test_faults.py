"""Transient cloud faults, injected on loopback in front of the real emulators.

`conveyor.local.faults` proxies answer a seeded share of the BigQuery REST and Cloud Storage
requests with 429/500/503, delay them, or drop the connection (before or after the emulator did
the work), and cut or refuse Storage Read API (gRPC) connections. The training pipeline through
them must give the same result as without them; with every request failing it must stop with a
clear error in bounded time and leave nothing half-written.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conveyor.io import Dataset
from conveyor.local.faults import FaultProxy, TcpFaultProxy
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]

HPARAMS = {"epochs": 3, "batch_size": 32, "learning_rate": 0.01}


@contextmanager
def faulty_cloud(rate: float, seed: int, http_kinds=None, tcp_kinds=None, deadline: float = 60,
                 tcp_rate: float | None = None):
    """Point the Google clients at fault proxies in front of the running emulators."""
    saved = dict(os.environ)
    http = {} if http_kinds is None else {"kinds": http_kinds}
    tcp = {} if tcp_kinds is None else {"kinds": tcp_kinds}
    proxies = {
        "bigquery": FaultProxy(os.environ["CONVEYOR_BIGQUERY_ENDPOINT"], rate, seed, delay=0.5,
                               **http),
        "storage": FaultProxy(os.environ["STORAGE_EMULATOR_HOST"], rate, seed + 1, delay=0.5,
                              **http),
        "storage_read": TcpFaultProxy(os.environ["CONVEYOR_BIGQUERY_STORAGE_ENDPOINT"],
                                      rate if tcp_rate is None else tcp_rate, seed + 2,
                                      delay=0.5, **tcp),
    }
    for proxy in proxies.values():
        proxy.start()
    os.environ.update(CONVEYOR_BIGQUERY_ENDPOINT=proxies["bigquery"].url,
                      STORAGE_EMULATOR_HOST=proxies["storage"].url,
                      CONVEYOR_BIGQUERY_STORAGE_ENDPOINT=proxies["storage_read"].endpoint,
                      CONVEYOR_RETRY_DEADLINE=str(deadline))
    try:
        yield proxies
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for proxy in proxies.values():
            proxy.stop()


def run_pipeline(root: Path, table: str, base: str) -> Path:
    """The training pipeline through kfp.local (raising on a failed task); its run folder."""
    from kfp import local

    from conveyor.pipelines import training

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    before = set(root.iterdir()) if root.exists() else set()
    training.pipeline(table=table, label="species", model_base_path=base,
                      hyperparameters=HPARAMS)
    new = [p for p in root.iterdir() if p.is_dir() and p not in before]
    assert len(new) == 1, new
    return new[0]


def outcome(run: Path, base: str) -> dict:
    info = Dataset(run / "bigquery-ingest" / "dataset").info
    evaluation = json.loads((run / "evaluate" / "evaluation" / "evaluation.json").read_text())
    return {"rows": {name: s.rows for name, s in info.splits.items()},
            "fingerprint": info.fingerprint, "blessed": evaluation["blessed"],
            # A push that failed after claiming a number leaves that number unused (see
            # conveyor/registry/), so the count of versions is compared, not their numbers.
            "versions_pushed": len(ModelBasePath(base).versions())}


def injected(proxies) -> int:
    return sum(n for proxy in proxies.values()
               for kind, n in proxy.counts.items() if kind != "forwarded")


def test_pipeline_gives_the_same_result_through_15_percent_faults(penguins, bucket, tmp_path,
                                                                   capfd):
    clean_base = f"gs://{bucket('faults')}/{tmp_path.name}/clean"
    clean = outcome(run_pipeline(tmp_path / "clean", penguins, clean_base), clean_base)
    assert clean["versions_pushed"] == 1

    faulty_base = f"gs://{bucket('faults')}/{tmp_path.name}/faulty"
    # Seed 7's schedule also fails 5 of ingest's 10 BigQuery requests (3 dropped before
    # reaching it, 1 delayed, 1 429).
    with faulty_cloud(rate=0.15, seed=7) as proxies:
        faulty = outcome(run_pipeline(tmp_path / "faulty", penguins, faulty_base), faulty_base)
    counts = {name: dict(proxy.counts) for name, proxy in proxies.items()}
    print(f"faults injected: {json.dumps(counts)}")
    assert injected(proxies) >= 5, counts
    assert faulty == clean


def test_pipeline_gives_the_same_result_through_20_percent_errors_and_drops(penguins, bucket,
                                                                          tmp_path):
    # A second schedule: errors and dropped connections only (no delays), at a higher rate.
    base = f"gs://{bucket('faults')}/{tmp_path.name}/m"
    with faulty_cloud(rate=0.2, seed=23,
                      http_kinds=("429", "500", "503", "drop-before", "drop-after")) as proxies:
        result = outcome(run_pipeline(tmp_path / "r", penguins, base), base)
    counts = {name: dict(proxy.counts) for name, proxy in proxies.items()}
    print(f"faults injected: {json.dumps(counts)}")
    assert injected(proxies) >= 5, counts
    assert result["versions_pushed"] == 1 and result["blessed"]
    assert sum(result["rows"].values()) == 344


def test_pipeline_fails_clearly_in_bounded_time_when_every_request_fails(penguins, bucket,
                                                                         tmp_path, capfd):
    base = f"gs://{bucket('faults')}/{tmp_path.name}/down"
    started = time.monotonic()
    with faulty_cloud(rate=1.0, seed=5, http_kinds=("429", "500", "503", "drop-before",
                                                    "drop-after"),
                      tcp_kinds=("refuse",), deadline=3) as proxies:
        with pytest.raises(RuntimeError, match="preflight|bigquery-ingest"):
            run_pipeline(tmp_path / "down", penguins, base)
    elapsed = time.monotonic() - started
    log = capfd.readouterr()
    counts = {name: dict(proxy.counts) for name, proxy in proxies.items()}
    with capfd.disabled():
        print(f"failed after {elapsed:.0f} s; faults injected: {json.dumps(counts)}")
    # Three attempts of the task (set_retry: 2 retries after 2 s and 4 s; an outage is not bad
    # input, so each attempt tries again), each giving up after the 3 s retry deadline: a bound,
    # not a benchmark.
    assert elapsed < 300, elapsed
    # The first step that talks to BigQuery gives up: preflight's dry run, or ingest.
    assert "still failing after 3 s of retries" in log.out + log.err
    assert injected(proxies) > 0
    # Nothing half-written: no Dataset (no dataset.json), nothing pushed.
    # (preflight, which has no artifact, may be the step that gives up: then no run folder)
    assert not list((tmp_path / "down").rglob("dataset.json"))
    assert ModelBasePath(base).versions() == []


def test_storage_read_resumes_after_cut_connections(stack, tmp_path):
    from conveyor.ingest.bigquery import ingest_bigquery
    from conveyor.local import seed

    table = seed.seed_reference(20_000)
    clean = ingest_bigquery(str(tmp_path / "clean"), table=table).info
    # Half the Storage Read connections are cut after 1-64 KiB (the schedule of seed 1 cuts the
    # first): the client reconnects and resumes from its offset. (Not 100%: when every connection
    # is cut before its first message, the client's resume loop retries forever, unbounded.)
    with faulty_cloud(rate=0.1, seed=1, http_kinds=("503",), tcp_kinds=("cut",),
                      tcp_rate=0.5) as p:
        faulty = ingest_bigquery(str(tmp_path / "faulty"), table=table).info
    assert p["storage_read"].counts["cut"] >= 1
    assert faulty.fingerprint == clean.fingerprint
    assert {n: s.rows for n, s in faulty.splits.items()} == \
        {n: s.rows for n, s in clean.splits.items()}
