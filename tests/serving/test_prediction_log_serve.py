"""`conveyor serve --log-predictions` as a real process: the rows it logs to a local folder and
to gs:// (and BigQuery) on the emulators, read back with pyarrow, against what was sent and what
was answered."""

from __future__ import annotations

import datetime
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from conveyor.registry import ModelBasePath
from conveyor.serving.log_format import sampled

pytestmark = [pytest.mark.local, pytest.mark.slow]
ROW = {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
       "flipper_length_mm": 218.0, "body_mass_g": 4950.0, "sex": "female", "year": 2008}


@pytest.fixture(scope="module")
def model(penguin_model):
    return penguin_model / "model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, body=None, rid=None, raw: bytes | None = None):
    """(status, parsed JSON or text, X-Request-Id answered)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json", **({"X-Request-Id": rid} if rid else {})}
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text, got = response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        status, text, got = exc.code, exc.read().decode(), exc.headers
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return status, parsed, got.get("X-Request-Id")


def wait_for(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


class Serve:
    """`conveyor serve` with prediction logging, on a free loopback port; stderr in a file."""

    def __init__(self, base_uri: str, tmp_path: Path, *options: str, tag: str = "serve",
                 wait: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"{tag}-stderr.txt"
        with self.log_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "serve", "--grpc-port", "0",
                 "--model-base-path", base_uri,
                 "--model-name", "penguins", "--port", str(self.port), "--poll-seconds", "0.5",
                 *options], stdout=subprocess.DEVNULL, stderr=stderr, env=dict(os.environ))
        if not wait:
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if call(f"{self.url}/readyz")[0] == 200:
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, self.log()
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"conveyor serve did not get ready: {self.log()}")

    def predict(self, body=None, rid=None, version=None, raw=None):
        path = f"/versions/{version}" if version else ""
        return call(f"{self.url}/v1/models/penguins{path}:predict", body, rid, raw)

    def metric(self, name: str, labels: str = "") -> float:
        text = call(f"{self.url}/metrics")[1]
        for line in text.splitlines():
            if line.startswith(f"{name}{labels} ") or line.startswith(f"{name}{{{labels}}} "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {name}{labels} in /metrics")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        """SIGTERM, as Kubernetes stops a pod; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["request_id"], r["instance"] or 0))


def local_log(folder: Path) -> pa.Table:
    return pads.dataset(str(folder), format="parquet", partitioning="hive").to_table()


def gcs_log(bucket: str, prefix: str) -> tuple[pa.Table, list[str]]:
    from conveyor import gcp

    names, tables = [], []
    for blob in gcp.storage_client().list_blobs(bucket, prefix=prefix + "/"):
        names.append(blob.name[len(prefix) + 1:])
        tables.append(pq.read_table(io.BytesIO(blob.download_as_bytes())))
    return (pa.concat_tables(tables, promote_options="default") if tables else None), names


def test_every_request_is_logged_once_per_instance_and_sigterm_flushes_it(model, tmp_path):
    """Sample rate 1, and batches that never fill in time (10,000 rows or an hour): every row
    is written by the clean stop. 30 requests of 1 to 3 rows, row and columnar, with nulls and
    missing values: exactly their (request, instance) rows, with the features sent and the
    outputs answered."""
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    prefix = tmp_path / "logs"
    serve = Serve(base.uri, tmp_path, "--log-predictions", str(prefix),
                  "--log-flush-rows", "10000", "--log-flush-seconds", "3600")
    began = datetime.datetime.now(datetime.UTC)
    sent, answered = {}, {}
    rng = random.Random(7)
    try:
        for i in range(30):
            instances = []
            for _ in range(1 + i % 3):
                row = dict(ROW, bill_length_mm=round(rng.uniform(30, 60), 1))
                if rng.random() < 0.3:
                    row["bill_depth_mm"] = None
                if rng.random() < 0.3:
                    row["sex"] = ""
                instances.append(row)
            body = ({"instances": instances} if i % 2 else
                    {"inputs": {k: [r[k] for r in instances] for k in ROW}})
            status, answer, rid = serve.predict(body, rid=f"req-{i:02d}")
            assert status == 200 and rid == f"req-{i:02d}", answer
            sent[rid] = instances
            answered[rid] = (answer["predictions"] if "predictions" in answer else
                             [{k: v[j] for k, v in answer["outputs"].items()}
                              for j in range(len(instances))])
        status, _, made_up = serve.predict({"instances": [ROW]})  # no id given: one is made up
        assert status == 200 and len(made_up) == 32
        assert serve.metric("conveyor_prediction_log_queued_rows") == 61
        assert not list(prefix.rglob("*.parquet"))  # nothing written before the stop
        assert serve.stop() == 128 + signal.SIGTERM
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    ended = datetime.datetime.now(datetime.UTC)
    logged = rows(local_log(prefix))
    assert len(logged) == 61
    by_id = {}
    for row in logged:
        by_id.setdefault(row["request_id"], []).append(row)
    assert sorted(by_id) == sorted([*sent, made_up])
    for rid, instances in sent.items():
        got = by_id[rid]
        assert [r["instance"] for r in got] == list(range(len(instances)))
        for r, instance, answer in zip(got, instances, answered[rid]):
            assert r["features"] == {k: (float(v) if isinstance(v, (int, float)) else v)
                                     for k, v in instance.items()}
            assert r["outputs"]["class_id"] == answer["class_id"]
            assert r["outputs"]["class_label"] == answer["class_label"]
            assert r["outputs"]["probabilities"] == pytest.approx(answer["probabilities"])
            assert (r["model_name"], r["model_version"], r["status"]) == ("penguins", 1, 200)
            assert r["unparsed"] is None and r["error"] is None and r["latency_ms"] > 0
            assert began - datetime.timedelta(seconds=1) <= r["timestamp"] <= ended
            assert str(r["date"]) == r["timestamp"].strftime("%Y-%m-%d")  # the partition
    assert not [p for p in prefix.rglob(".*")]  # no temporary file left


def test_gcs_log_and_bigquery_carry_the_version_that_answered_across_a_hot_swap(
        model, tmp_path, bucket, stack):
    """gs:// on the emulator, small batches, also loaded into a BigQuery table that does not
    exist yet: rows before the swap say 1, after it 2, and requests to /versions/1 after it
    still say 1; the counts per version match the server's own request counts."""
    from conveyor import gcp

    name = bucket("prediction-logs")
    base = ModelBasePath(f"gs://{name}/{tmp_path.name}/penguins")
    base.publish(model)
    dataset = f"plog_{tmp_path.name.replace('-', '_')}"[:1000]
    gcp.bigquery_client().create_dataset(dataset, exists_ok=True)
    prefix = f"{tmp_path.name}/logs"
    serve = Serve(base.uri, tmp_path, "--log-predictions", f"gs://{name}/{prefix}",
                  "--log-flush-rows", "7", "--log-flush-seconds", "0.5",
                  "--log-bigquery-table", f"{dataset}.predictions")
    expected = {}
    try:
        for i in range(15):
            assert serve.predict({"instances": [ROW]}, rid=f"v1-{i}")[0] == 200
            expected[f"v1-{i}"] = 1
        assert base.publish(model) == 2
        wait_for(lambda: call(f"{serve.url}/readyz")[1]["version"] == 2, "version 2")
        for i in range(15):
            assert serve.predict({"instances": [ROW]}, rid=f"v2-{i}")[0] == 200
            expected[f"v2-{i}"] = 2
            assert serve.predict({"instances": [ROW]}, rid=f"old-{i}", version=1)[0] == 200
            expected[f"old-{i}"] = 1
        answered = {v: serve.metric("conveyor_serving_requests_total",
                                    f'{{model="penguins",status="200",version="{v}"}}')
                    for v in (1, 2)}
        assert serve.stop() == 128 + signal.SIGTERM
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    table, names = gcs_log(name, prefix)
    got = {r["request_id"]: r["model_version"] for r in table.to_pylist()}
    assert got == expected
    assert answered == {1: 30, 2: 15}
    assert {v: list(got.values()).count(v) for v in (1, 2)} == answered
    assert all(n.startswith("date=") and "/part-" in n and n.endswith(".parquet")
               for n in names)
    assert not [n for n in names if n.rsplit("/", 1)[-1].startswith(".")]
    for n in names:  # one version per file
        assert len(set(pq.read_table(io.BytesIO(gcp.storage_client().bucket(name).blob(
            f"{prefix}/{n}").download_as_bytes()))["model_version"].to_pylist())) == 1
    assert "prediction log:" not in serve.log(), serve.log()  # no failed write or load
    query = (f"SELECT request_id, model_version, features.island AS island, "
             f"outputs.class_label AS label FROM `{dataset}.predictions`")
    bq_rows = list(gcp.bigquery_client().query(query).result())
    assert {r["request_id"]: r["model_version"] for r in bq_rows} == expected
    assert len(bq_rows) == len(expected) and {r["island"] for r in bq_rows} == {"Biscoe"}
    labels = {r["label"] for r in bq_rows}
    assert labels <= {"Adelie", "Chinstrap", "Gentoo"} and len(labels) == 1


def test_a_sample_rate_of_a_tenth_logs_the_requests_its_hash_picks(model, tmp_path):
    """400 requests with seeded random ids at rate 0.1: exactly the ids the hash picks, and
    about a tenth of them (binomial(400, 0.1): 40 +- 6; bounded at 5 standard deviations)."""
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    prefix = tmp_path / "logs"
    serve = Serve(base.uri, tmp_path, "--log-predictions", str(prefix), "--log-sample-rate",
                  "0.1")
    rng = random.Random(2026)
    ids = [f"{rng.getrandbits(64):016x}" for _ in range(400)]
    try:
        for rid in ids:
            assert serve.predict({"instances": [ROW]}, rid=rid)[0] == 200
        assert serve.stop() == 128 + signal.SIGTERM
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    logged = local_log(prefix)["request_id"].to_pylist()
    assert sorted(logged) == sorted(i for i in ids if sampled(i, 0.1))
    assert 10 <= len(logged) <= 70, len(logged)


def test_odd_requests_are_logged_with_their_status_and_nothing_sent_is_lost(model, tmp_path):
    """Unicode and keyword keys, nulls, wrong types, a body that is not JSON and one over the
    size limit: 400s and 413s are logged with their status and error; values that fit no
    typed column are in `unparsed`."""
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    prefix = tmp_path / "logs"
    serve = Serve(base.uri, tmp_path, "--log-predictions", str(prefix),
                  "--max-request-bytes", "4096")
    nulls = {k: None for k in ROW}
    try:
        assert serve.predict({"instances": [nulls]}, rid="nulls")[0] == 200
        status, answer, _ = serve.predict({"instances": [{**ROW, "Île ünï": 1, "from": "x"}]},
                                          rid="unicode-keys")
        assert status == 400 and "unknown input" in answer["error"]
        assert serve.predict({"instances": [{**ROW, "bill_length_mm": "long"},
                                            {**ROW, "year": True}]}, rid="types")[0] == 400
        assert serve.predict(raw=b"{nope", rid="not-json")[0] == 400
        assert serve.predict(raw=b'{"instances": [' + b"1," * 4000 + b"1]}",
                             rid="too-big")[0] == 413
        assert serve.predict({"instances": [ROW]}, rid="é-ünïcode-id")[0] == 200
        assert serve.stop() == 128 + signal.SIGTERM
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    logged = {}
    for row in local_log(prefix).to_pylist():
        logged.setdefault(row["request_id"], []).append(row)
    assert sorted(logged) == sorted(["nulls", "unicode-keys", "types", "not-json", "too-big",
                                     "é-ünïcode-id"])
    (row,) = logged["nulls"]
    assert row["status"] == 200 and row["features"] == nulls and row["outputs"]["class_label"]
    (row,) = logged["unicode-keys"]
    assert row["status"] == 400 and "unknown input" in row["error"]
    assert json.loads(row["unparsed"]) == {"Île ünï": 1, "from": "x"}
    assert row["features"] == {k: float(v) if isinstance(v, int) else v
                               for k, v in ROW.items()}
    first, second = sorted(logged["types"], key=lambda r: r["instance"])
    assert json.loads(first["unparsed"]) == {"bill_length_mm": "long"}
    assert first["features"]["bill_length_mm"] is None
    assert json.loads(second["unparsed"]) == {"year": True}  # a bool for a float input
    assert "expects numbers" in first["error"] and second["status"] == 400
    for rid, status, words in (("not-json", 400, "not JSON"), ("too-big", 413, "4096 bytes")):
        (row,) = logged[rid]
        assert row["status"] == status and words in row["error"], row
        assert row["instance"] is None and row["features"] is None and row["outputs"] is None
    assert logged["é-ünïcode-id"][0]["status"] == 200


def test_an_unwritable_prefix_stops_the_server_before_it_serves(model, tmp_path, stack):
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    (tmp_path / "a-file").write_text("not a folder")
    serve = Serve(base.uri, tmp_path, "--log-predictions", str(tmp_path / "a-file" / "logs"),
                  wait=False)
    assert serve.proc.wait(timeout=60) == 2
    assert "conveyor: error: --log-predictions:" in serve.log()
    assert "is not a writable folder" in serve.log() and "Traceback" not in serve.log()
    serve = Serve(base.uri, tmp_path, "--log-predictions", "gs://no-such-bucket-here/logs",
                  tag="gcs", wait=False)
    assert serve.proc.wait(timeout=60) == 2
    assert "bucket gs://no-such-bucket-here not found" in serve.log(), serve.log()


def test_a_prefix_that_becomes_unwritable_counts_failures_and_serving_goes_on(model, tmp_path):
    base = ModelBasePath(str(tmp_path / "penguins"))
    base.publish(model)
    prefix = tmp_path / "logs"
    serve = Serve(base.uri, tmp_path, "--log-predictions", str(prefix),
                  "--log-flush-rows", "5", "--log-flush-seconds", "0.3")
    try:
        for i in range(5):
            assert serve.predict({"instances": [ROW]}, rid=f"before-{i}")[0] == 200
        wait_for(lambda: serve.metric("conveyor_prediction_log_rows_written_total") == 5,
                 "the first file")
        shutil.move(prefix, tmp_path / "moved")
        prefix.write_text("the log folder is gone; a file stands in its way")
        for i in range(12):
            assert serve.predict({"instances": [ROW]}, rid=f"during-{i}")[0] == 200
        wait_for(lambda: serve.metric("conveyor_prediction_log_rows_dropped_total",
                                      '{reason="write_failed"}') == 12, "the failed writes")
        assert serve.metric("conveyor_prediction_log_write_failures_total") >= 3
        assert call(f"{serve.url}/readyz")[0] == 200
        prefix.unlink()  # writable again
        for i in range(5):
            assert serve.predict({"instances": [ROW]}, rid=f"after-{i}")[0] == 200
        wait_for(lambda: serve.metric("conveyor_prediction_log_rows_written_total") == 10,
                 "writing to go on")
        assert serve.stop() == 128 + signal.SIGTERM
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    assert sorted(local_log(prefix)["request_id"].to_pylist()) == [f"after-{i}"
                                                                    for i in range(5)]
    assert sorted(local_log(tmp_path / "moved")["request_id"].to_pylist()) == [
        f"before-{i}" for i in range(5)]
    log = serve.log()
    assert "prediction log: writing" in log and "serving goes on" in log
    assert log.count("prediction log: writing") == 1  # once a minute, not once a batch
