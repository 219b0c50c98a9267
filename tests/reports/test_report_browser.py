"""The validate and evaluate reports in a real browser: headless Chromium (Debian's `chromium`)
loads each page with a recording proxy on a loopback socket as its only way out, and must make
no request of its own; the dumped DOM holds the charts, and a screenshot is not blank.

Reports come from real runs: penguins trained as binary (sex, against a weaker published
baseline on the GCS emulator), multiclass (island) and regression (body mass) models, and a
covariate shift validated against the served version's statistics on the GCS emulator (so
the report names the baseline by its gs:// URI; the new data records a BigQuery table as its
source and carries an id column, which is listed as excluded and not charted).

Chromium missing: the test skips, unless CONVEYOR_REQUIRE_CHROMIUM is set (.ci/run sets it),
then it fails. With CONVEYOR_REPORT_SCREENSHOTS=DIR the screenshots are also written to DIR
(docs/reports/ holds the committed ones).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support import fit_transform, train_model, write_dataset

pytestmark = pytest.mark.local

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium calls its own services for a blank page too, despite the flags below: on *.google.com
# (150 on: accounts., www., clients2. (time), android.clients. (GCM)) and, from 156 on, its
# update client's update.googleapis.com/service/update2 (component updates; no flag stops it).
# They reach only the recording proxy and are not counted. A page's own reference to any host,
# those included, is caught by `test_the_pages_name_no_url`; any other host here
# (fonts.googleapis.com, a CDN...) fails the test.
BROWSER_OWN = re.compile(r"^(CONNECT ([a-z0-9.-]+\.google\.com|update\.googleapis\.com):443 "
                         r"|GET http://[a-z0-9.-]+\.google\.com/"
                         r"|POST http://update\.googleapis\.com/service/update2/)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--no-default-browser-check", "--disable-default-apps",
         "--disable-extensions", "--disable-domain-reliability", "--metrics-recording-only",
         "--no-pings", "--bwsi", "--disable-client-side-phishing-detection",
         "--disable-field-trial-config", "--safebrowsing-disable-auto-update",
         "--disable-breakpad", "--disable-features=MediaRouter,OptimizationHints,Translate,"
         "AutofillServerCommunication,NetworkTimeServiceQuerying"]
CHART_BLUE = (0x1F, 0x6F, 0xB4)


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CONVEYOR_REQUIRE_CHROMIUM"):
            pytest.fail("CONVEYOR_REQUIRE_CHROMIUM is set but there is no chromium on PATH "
                        "(Debian: apt-get install -y chromium; .ci/run installs it)")
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")
    return CHROMIUM


class Proxy:
    """A loopback socket given to Chromium as its proxy: records the request line of every
    connection that sends one, and answers none."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    first = conn.recv(4096).decode("latin-1")
                except OSError:  # opened and left idle: Chromium preconnects to its proxy
                    first = ""
                if first:  # a connection that sends nothing requests nothing
                    self.requests.append(first.split("\r\n", 1)[0] + " ")

    def close(self) -> None:
        self.sock.close()

    def page_requests(self) -> list[str]:
        return [r for r in self.requests if not BROWSER_OWN.match(r)]


def browse(chromium: str, page: Path, profile: Path, *mode: str) -> tuple[str, list[str]]:
    """Run Chromium on `page` with `mode` (--dump-dom, --screenshot=...); (stdout, requests
    the page made). Nothing leaves the machine: every request goes to the proxy, and host
    names resolve nowhere."""
    proxy = Proxy()
    try:
        out = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}",
             f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             *mode, page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout, proxy.page_requests()
    finally:
        proxy.close()


# -- the reports, from real runs ------------------------------------------------------------

def _penguins(label: str) -> pa.Table:
    from conveyor.local.seed import penguins

    table = penguins()
    return table.filter(pc.is_valid(table.column(label)))


def _train(root: Path, table: pa.Table, label: str, task: str, epochs: int) -> Path:
    ds = root / "ds"
    if not ds.exists():
        write_dataset(ds, table)
    transform = fit_transform(ds, root / f"t{epochs}", label, values=None, task=task)
    return train_model(ds, transform, root / f"model{epochs}",
                       hparams={"epochs": epochs, "batch_size": 32, "learning_rate": 0.01})


def _artifacts(folder: Path, **kinds):
    for name, kind in kinds.items():
        yield kind(uri=str(folder / name))


def _evaluate(folder: Path, model: Path, ds: Path, **kw) -> Path:
    from kfp import dsl

    from conveyor.evaluate import tasks

    evaluation, metrics, cm, md, html = _artifacts(
        folder, evaluation=dsl.Artifact, metrics=dsl.Metrics, cm=dsl.ClassificationMetrics,
        report=dsl.Markdown, html_report=dsl.HTML)
    tasks.evaluate(dsl.Model(uri=str(model)), dsl.Dataset(uri=str(ds)), evaluation, metrics, cm,
                   md, html_report=html, slices=["island"], **kw)
    assert Path(md.path).read_text().startswith("# Evaluation")  # the Markdown stays
    assert html.metadata["task"]
    return Path(html.path)


def _shifted(table: pa.Table, rng: np.random.Generator) -> pa.Table:
    """Heavier, longer-flippered birds, mostly from Dream."""
    for name in ("body_mass_g", "flipper_length_mm"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pc.multiply(table.column(name), 1.5))
    island = np.array(table.column("island").to_pylist(), dtype=object)
    island[rng.random(len(island)) < 0.6] = "Dream"
    i = table.schema.get_field_index("island")
    return table.set_column(i, "island", pa.array(list(island), pa.string()))


@pytest.fixture(scope="module")
def reports(stack, bucket, tmp_path_factory) -> dict:
    from kfp import dsl

    from conveyor.model.layout import STATISTICS_FILE
    from conveyor.registry import ModelBasePath
    from conveyor.validate import tasks as validate_tasks
    from conveyor.validate.validate import validate_dataset

    root = tmp_path_factory.mktemp("reports")
    name = bucket("report-browser")
    out: dict = {}

    binary = root / "binary"
    weak = _train(binary, _penguins("sex"), "sex", "binary", 1)
    strong = _train(binary, _penguins("sex"), "sex", "binary", 8)
    binary_base = f"gs://{name}/binary-{os.getpid()}/penguin-sex"  # the report's model name
    ModelBasePath(binary_base).publish(weak)
    out["evaluate-binary"] = _evaluate(binary / "run", strong, binary / "ds",
                                       model_base_path=binary_base)

    multi = root / "multiclass"
    model = _train(multi, _penguins("island").drop_columns(["species"]), "island",
                   "multiclass", 8)
    out["evaluate-multiclass"] = _evaluate(multi / "run", model, multi / "ds")

    regression = root / "regression"
    model = _train(regression, _penguins("body_mass_g"), "body_mass_g", "regression", 8)
    out["evaluate-regression"] = _evaluate(regression / "run", model, regression / "ds")

    # validate: the served version's training statistics on gs://, then shifted new data
    from conveyor.local.seed import penguins

    def with_ids(table: pa.Table) -> pa.Table:  # an id column: excluded, never charted
        return table.append_column("sample_id", pa.array(range(table.num_rows), pa.int64()))

    served = root / "served"
    validate_dataset(write_dataset(root / "clean", with_ids(penguins())),
                     report_path=served / "report.html", statistics_path=served / "stats",
                     suite_path=served / "suite")
    version = root / "version"
    shutil.copytree(model, version)
    shutil.copy(served / "stats" / STATISTICS_FILE, version / "assets.extra" / STATISTICS_FILE)
    served_base = f"gs://{name}/served-{os.getpid()}"
    ModelBasePath(served_base).publish(version)
    shifted = write_dataset(root / "shifted",
                            with_ids(_shifted(penguins(), np.random.default_rng(5))),
                            source={"type": "bigquery", "table": "shop-prod.field.penguins"})
    report, metrics, statistics, suite = _artifacts(
        root / "validate", report=dsl.HTML, metrics=dsl.Metrics, statistics=dsl.Artifact,
        suite=dsl.Artifact)
    passed = validate_tasks.validate(dsl.Dataset(uri=str(shifted)), report, metrics, statistics,
                                     suite, baseline_model_base_path=served_base, policy="warn")
    assert passed is False and report.metadata["drifted"] is True
    out["validate-drift"] = Path(report.path)
    out["served_uri"] = f"{served_base}/1/assets.extra/{STATISTICS_FILE}"
    # KFP's artifact files have no extension (its UI serves them as HTML): name them .html
    pages = root / "pages"
    pages.mkdir()
    for key in EXPECTED_CHARTS:
        out[key] = Path(shutil.copy(out[key], pages / f"{key}.html"))
    return out


EXPECTED_CHARTS = {"validate-drift": 8, "evaluate-binary": 4, "evaluate-multiclass": 4,
                   "evaluate-regression": 1}
WINDOW = {"validate-drift": "1280,2600", "evaluate-binary": "1280,1900",
          "evaluate-multiclass": "1280,1250", "evaluate-regression": "1280,1000"}


def test_the_recording_proxy_sees_a_page_that_does_reach_out(chromium, tmp_path):
    # The detector itself: a page with an external image and stylesheet is caught.
    page = tmp_path / "leaky.html"
    page.write_text("<!doctype html><link rel=stylesheet href='https://fonts.googleapis.com/"
                    "css?family=Roboto'><img src='http://example.com/x.png'><p>leak</p>")
    _, requests = browse(chromium, page, tmp_path / "profile", "--dump-dom")
    assert any("fonts.googleapis.com" in r for r in requests), requests
    assert any("example.com/x.png" in r for r in requests), requests
    assert not any(BROWSER_OWN.match(r) for r in ("CONNECT fonts.googleapis.com:443 ",
                                                  "GET http://example.com/google.com/ ",
                                                  "CONNECT www.google.com.evil.io:443 "))


def test_the_pages_name_no_url(reports):
    for name in EXPECTED_CHARTS:
        text = reports[name].read_text()
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'<>]*", text, re.I)
        assert not urls, (name, urls[:5])
        assert len(text.encode()) < 2_000_000, name


@pytest.mark.parametrize("name", list(EXPECTED_CHARTS))
def test_each_report_loads_offline_and_shows_its_charts(chromium, reports, name, tmp_path):
    page = reports[name]
    dom, requests = browse(chromium, page, tmp_path / "profile", "--dump-dom")
    assert requests == [], f"{name} made requests: {requests}"
    assert dom.count("<svg") == EXPECTED_CHARTS[name], name
    assert "</html>" in dom and "<script" not in dom
    if name == "validate-drift":
        assert "Drifted columns: baseline and current side by side" in dom
        assert f"<b>baseline:</b> {reports['served_uri']}" in dom
        assert "conveyor-baseline-" not in dom  # not the deleted scratch copy
        assert re.search(r"mean 4\d{3}(\.\d+)? -&gt; 6\d{3}", dom), "body mass x1.5"
        assert "<h1>conveyor validate: BigQuery table shop-prod.field.penguins</h1>" in dom
        assert "Overview: every column at a glance" in dom
        assert "3 column(s) drifted" in dom  # body mass, flipper length, island
        assert "<b>sample_id</b></td><td>int64</td>" in dom  # excluded, listed, not charted
    else:
        assert "<title>" in dom.split("<body", 1)[1]  # the charts' accessible names
        assert dom.count("<h2>Metrics by slice</h2>") == 1  # one slice table
    if name == "evaluate-binary":  # the header names the model; the decision threshold
        assert "<h1>conveyor evaluate: penguin-sex</h1>" in dom
        assert "candidate, not published yet (newest published: version 1)" in dom
        assert ", serving version 1" in dom and "baseline: version 1: gs://" in dom
        assert "decision threshold <b>0.5</b>" in dom
        assert "Precision, recall and F1 by cut-off" in dom
        assert "1 is perfect, above 1 over-predicts" in dom

    shot = tmp_path / f"{name}.png"
    _, requests = browse(chromium, page, tmp_path / "profile", f"--screenshot={shot}",
                         f"--window-size={WINDOW[name]}")
    assert requests == [], f"{name} made requests: {requests}"
    from PIL import Image

    with Image.open(shot) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    ink = (np.abs(rgb - 255).sum(axis=2) > 60).mean()
    blue = (np.abs(rgb - np.array(CHART_BLUE)).sum(axis=2) < 40).sum()
    assert ink > 0.03, f"{name}: the screenshot is nearly blank ({ink:.1%} ink)"
    assert blue > 500, f"{name}: no chart colour in the screenshot ({blue} pixels)"
    target = os.environ.get("CONVEYOR_REPORT_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        with Image.open(shot) as image:  # a palette PNG: a third of the bytes, same look
            image.convert("RGB").quantize(colors=128, dither=Image.Dither.NONE).save(
                Path(target) / f"{name}.png", optimize=True)
