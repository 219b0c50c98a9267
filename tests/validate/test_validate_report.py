"""The validate report's content, read back from the HTML: the header's facts, the overview
tables of a small known table, drift counted per column, excluded (id) columns left out of
drift and charts, and integer histograms binned on integers."""

from __future__ import annotations

import datetime
import html.parser
import json
import re

import numpy as np
import pyarrow as pa
import pytest
import yaml
from support import write_dataset

from conveyor.io import DatasetWriter
from conveyor.io.split import SplitSpec
from conveyor.validate.validate import validate_dataset


class Tables(html.parser.HTMLParser):
    """Every table of a page as rows of cell texts (a `rowspan` cell repeated down its rows), the
    text of each `<h1>`, and the captions of the charts (`<figure>`'s first `<b>`)."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.h1: list[str] = []
        self.figures: list[str] = []
        self._cell: list[str] | None = None
        self._span: dict[int, tuple[str, int]] = {}  # column -> (text, rows left)
        self._in: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self._in.append(tag)
        if tag == "table":
            self.tables.append([])
            self._span = {}
        elif tag == "tr":
            self.tables[-1].append([])
            self._fill_spans()
        elif tag in ("td", "th"):
            self._cell = []
            self._rowspan = int(dict(attrs).get("rowspan") or 1)
        elif tag == "h1":
            self.h1.append("")
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")
        if tag == "br":
            self._in.pop()

    def _fill_spans(self):
        row = self.tables[-1][-1]
        while len(row) in self._span:
            text, left = self._span[len(row)]
            row.append(text)
            if left <= 1:
                del self._span[len(row) - 1]
            else:
                self._span[len(row) - 1] = (text, left - 1)

    def handle_endtag(self, tag):
        if self._in and self._in[-1] == tag:
            self._in.pop()
        if tag in ("td", "th") and self._cell is not None:
            row = self.tables[-1][-1]
            text = " ".join("".join(self._cell).split())
            if self._rowspan > 1:
                self._span[len(row)] = (text, self._rowspan - 1)
            row.append(text)
            self._cell = None
            self._fill_spans()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in[-2:] == ["figcaption", "b"] and "figure" in self._in:
            self.figures.append(data)
        if self._in and self._in[-1] == "h1":
            self.h1[-1] += data

    def table_after(self, page: str, heading: str) -> list[list[str]]:
        """The first table after `heading` (a text in the page)."""
        before = page[: page.index(heading)]
        return self.tables[before.count("<table")]


def _small() -> pa.Table:
    """60 rows: x (4 NULLs, 6 zeros), color (red 30, blue 20, green 10), row_id 0..59 (an id)."""
    x = [None] * 4 + [0.0] * 6 + [float(v) for v in range(1, 51)]
    return pa.table({
        "x": pa.array(x, pa.float64()),
        "color": pa.array(["red"] * 30 + ["blue"] * 20 + ["green"] * 10),
        "row_id": pa.array(range(60), pa.int64()),
    })


def _bigquery_dataset(path, table: pa.Table):
    """A Dataset that records a BigQuery table as its source (one split), as ingest writes it."""
    spec = SplitSpec.parse({"train": 1.0}, None)
    source = {"type": "bigquery", "table": "shop-prod.sales.orders", "split": spec.describe()}
    with DatasetWriter(path, table.schema, spec.names, source) as writer:
        writer.write("train", table)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    ds = _bigquery_dataset(out / "ds", _small())
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    result = validate_dataset(ds, report_path=out / "report.html", statistics_path=out / "stats",
                              suite_path=out / "suite", policy="warn")
    after = datetime.datetime.now(datetime.UTC)
    page = (out / "report.html").read_text()
    return out, ds, result, page, (before, after)


def test_the_header_names_the_table_fingerprint_time_and_baseline(small):
    out, ds, _, page, (before, after) = small
    parsed = Tables(page)
    assert parsed.h1 == ["conveyor validate: BigQuery table shop-prod.sales.orders"]
    fingerprint = json.loads((ds / "dataset.json").read_text())["fingerprint"]
    assert f"<b>dataset:</b> fingerprint <code>{fingerprint}</code>; rows: train 60" in page
    when = re.search(r"<b>validated:</b> (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", page)
    assert when, "the time, in UTC"
    seen = datetime.datetime.strptime(when[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
    assert before <= seen <= after
    assert "<b>baseline:</b> no baseline (drift not measured)" in page


def test_source_names_for_a_query_and_gcs_files():
    from conveyor.validate import overview

    files = {"type": "gcs", "format": "parquet",
             "uris": [f"gs://lake/orders/2026/part-{i}.parquet" for i in range(3)]}
    assert overview.source_name(files, "/x/ds") == (
        "GCS files gs://lake/orders/2026/part-* (3 parquet files)")
    one = {"type": "gcs", "format": "csv", "uris": ["gs://lake/a.csv"]}
    assert overview.source_name(one, "/x/ds") == "GCS file gs://lake/a.csv"
    assert overview.source_name({"type": "bigquery", "query": "SELECT 1"}, "/x/ds") == (
        "BigQuery query")
    assert overview.source_name({}, "/runs/validate/dataset") == "Dataset dataset"


def test_the_overview_tables_hold_each_columns_figures(small):
    _, _, _, page, _ = small
    parsed = Tables(page)
    numeric = parsed.table_after(page, "Numeric columns (1)")
    assert numeric[0] == ["column", "split", "count", "missing", "zeros", "mean", "std", "min",
                          "median", "max"]
    values = np.array([0.0] * 6 + list(range(1, 51)))
    assert numeric[1] == ["x float64", "train", "56", "6.7%", "10.7%",
                          f"{values.mean():.5g}", f"{values.std():.5g}", "0",
                          f"{np.median(values):.5g}", "50"]
    categorical = parsed.table_after(page, "Categorical columns (1)")
    assert categorical[0] == ["column", "split", "count", "missing", "distinct",
                              "top values (share)"]
    assert categorical[1] == ["color string", "train", "60", "0.0%", "3",
                              "red 50.0%, blue 33.3%, green 16.7%"]
    assert len(numeric) == 2 and len(categorical) == 2  # row_id: excluded, not an overview row


def test_an_id_column_is_listed_once_and_neither_charted_nor_drift_tested(small, tmp_path):
    out, ds, first, page, _ = small
    assert first.excluded == {"row_id": "60 distinct values in 60 rows: identifies rows"}
    parsed = Tables(page)
    assert parsed.table_after(page, "Excluded columns")[1:] == [
        ["row_id", "int64", "60 distinct values in 60 rows: identifies rows"]]
    assert sorted(parsed.figures) == ["color", "x"]
    # against a baseline, new ids are not drift: shifted ids, same everything else
    table = _small()
    moved = table.set_column(2, "row_id", pa.array(range(1000, 1060), pa.int64()))
    ds2 = _bigquery_dataset(tmp_path / "ds", moved)
    result = validate_dataset(ds2, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                              suite_path=tmp_path / "su", baseline_statistics=out / "stats",
                              policy="warn")
    assert "row_id" not in {d.column for _, d in result.drift}
    assert not result.drifted and not [c for c in result.checks if c.drifted], result.drift_lines
    page = (tmp_path / "r.html").read_text()
    # once (in the excluded table) above the list of every check (its checks still run)
    assert page.split("<h2>All checks")[0].count(">row_id<") == 1
    assert "row_id" not in Tables(page).figures
    written = yaml.safe_load((tmp_path / "su" / "suite.yaml").read_text())  # for the next run
    assert written["columns"]["row_id"]["excluded"] == first.excluded["row_id"]


def test_a_suite_can_exclude_a_column_or_keep_an_id(tmp_path):
    ds = write_dataset(tmp_path / "ds", _small(), ratios={"train": 1.0})
    suite = tmp_path / "suite.yaml"
    suite.write_text("columns:\n  color: {excluded: a free-text note}\n"
                     "  row_id: {excluded: false}\n  x: {}\n")
    result = validate_dataset(ds, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                              suite_path=tmp_path / "su", suite=suite, policy="warn")
    assert result.excluded == {"color": "a free-text note"}
    assert sorted(Tables((tmp_path / "r.html").read_text()).figures) == ["row_id", "x"]


def _shifted(rows: int, rng, shift: bool) -> pa.Table:
    return pa.table({
        "a": rng.normal(3.0 if shift else 0.0, 1.0, rows),
        "b": rng.choice(["p", "q", "r"], rows, p=[0.8, 0.1, 0.1] if shift else [0.2, 0.4, 0.4]),
        "c": rng.normal(0.0, 1.0, rows),
    })


def test_drift_is_counted_per_column_with_the_per_split_detail_below(tmp_path):
    rng = np.random.default_rng(1)
    base = write_dataset(tmp_path / "base", _shifted(2000, rng, False))
    validate_dataset(base, report_path=tmp_path / "b.html", statistics_path=tmp_path / "bs",
                     suite_path=tmp_path / "bsu", policy="warn")
    cur = write_dataset(tmp_path / "cur", _shifted(2000, rng, True))
    result = validate_dataset(cur, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                              suite_path=tmp_path / "su", baseline_statistics=tmp_path / "bs",
                              policy="warn")
    pairs = [(s, d.column) for s, d in result.drift if d.exceeded]
    assert sorted(pairs) == [("eval", "a"), ("eval", "b"), ("train", "a"), ("train", "b")]
    page = (tmp_path / "r.html").read_text()
    assert "2 column(s) drifted (a, b)" in page and "4 column(s)" not in page
    assert result.metrics()["drifted_features"] == 2
    detail = Tables(page).table_after(page, "Drift against the baseline")
    assert sorted((row[0], row[1]) for row in detail[1:] if row[6] == "yes") == sorted(pairs)


def _bars(values: np.ndarray):
    """The heights and edges `conveyor.reports.charts` draws for one series of values."""
    from matplotlib.figure import Figure

    from conveyor.reports import charts

    ax = Figure().add_subplot()
    charts._numeric_panel(ax, [charts.Series("x", values=values, rows=len(values))], False)
    (patch,) = ax.patches
    heights, edges, _ = patch.get_data()
    return np.asarray(heights), np.asarray(edges)


def test_integer_histograms_are_binned_on_integers():
    rng = np.random.default_rng(0)
    heights, edges = _bars(rng.integers(0, 10, 20_000).astype(float))  # 0..9
    assert np.array_equal(edges, np.arange(-0.5, 10, 1.0)), edges
    assert heights.max() / heights.min() < 1.1, heights  # uniform: no spike in the last bin
    # a large range: whole integers per bin, edges halfway between integers, flat bars
    heights, edges = _bars(np.repeat(np.arange(0, 1000), 20).astype(float))
    assert np.all(edges % 1 == 0.5) and edges[0] == -0.5 and edges[-1] == 999.5
    assert len(set(np.diff(edges)[:-1])) == 1 and np.diff(edges)[0] > 1
    assert heights.max() / heights.min() < 1.01, heights
    # floats keep equal-width bins over their range
    _, edges = _bars(rng.normal(0, 1, 1000))
    assert len(edges) == 31 and not np.all(edges % 1 == 0.5)
