"""The report charts and pages (conveyor.reports, conveyor.validate.report): self-contained,
escaped, bounded, and honest about awkward data; the bounded curve data evaluate keeps."""

import datetime
import html.parser
import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from support import write_dataset

from conveyor.evaluate import metrics as m
from conveyor.evaluate.outputs import write_outputs
from conveyor.evaluate.result import Check, EvaluationResult
from conveyor.reports import charts
from conveyor.validate import report as validate_report
from conveyor.validate.stats import ColumnStatistics, DatasetStatistics, compute_statistics
from conveyor.validate.validate import validate_dataset

HOSTILE = ["<script>alert(1)</script>", 'say "hi" & \'bye\'', "prix €/ünïcödé", "$x^2$ {",
           "SELECT"]
EXTERNAL = re.compile(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|url\((?!#)|@import|<link|<script|"
                      r"src=['\"](?!data:)|href=['\"](?!#|data:image/png;base64,)", re.I)


class Tags(html.parser.HTMLParser):
    """Every start tag and attribute of a page, as a browser's parser sees them."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def assert_self_contained(page: str) -> Tags:
    assert not EXTERNAL.search(page), EXTERNAL.search(page).group(0)
    tags = Tags(page)
    names = {t for t, _ in tags.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "img"}, names
    for tag, attrs in tags.tags:
        for key, value in attrs.items():
            assert not key.startswith("on"), (tag, key)  # no event handlers
            if key in ("href", "src", "xlink:href"):
                assert (value or "").startswith(("#", "data:image/png")), (tag, key, value)
    ids = [a["id"] for _, a in tags.tags if "id" in a]
    assert len(ids) == len(set(ids)), "two charts share an element id"
    return tags


def figure_texts(fig) -> str:
    return " | ".join(t.get_text() for ax in fig.axes for t in [*ax.texts, ax.title,
                                                                  ax._left_title])


# -- the charts -----------------------------------------------------------------------------

def test_every_chart_is_inline_svg_with_prefixed_ids_and_no_external_reference():
    rng = np.random.default_rng(0)
    made = [
        charts.render(charts.distributions, "a", [("vs baseline", [
            charts.Series("baseline", rng.normal(size=500), rows=500),
            charts.Series("eval", rng.lognormal(size=300), rows=310, nulls=10)])], "numeric"),
        charts.render(charts.distributions, "b", [("x", [
            charts.Series("train", counts={"a": 3, None: 1}, rows=4)])], "categorical"),
        charts.render(charts.distributions, "c", [("x", [
            charts.Series("train", rng.integers(18000, 19000, 50).astype(float), rows=50)])],
            "temporal"),
        charts.render(charts.curves, "d", "roc", [("c", [0, 0.5, 1], [0, 0.8, 1])]),
        charts.render(charts.curves, "e", "pr", [("c", [0, 0.5, 1], [1, 0.8, 0.5])],
                      reference=0.4),
        charts.render(charts.calibration, "f", [("c", [0.1, 0.5], [0.2, 0.4], [3, 4])]),
        charts.render(charts.confusion, "g", np.eye(3) * 5, ["a", "b", "c"]),
        charts.render(charts.regression, "h", rng.normal(size=200), rng.normal(size=200)),
    ]
    page = "<!doctype html><body>" + "".join(made) + "</body>"
    assert_self_contained(page)
    for key, svg in zip("abcdefgh", made):
        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert all(i.startswith(f"{key}-") for i in re.findall(r'\bid="([^"]+)"', svg))
        assert "<?xml" not in svg and "DOCTYPE" not in svg and "<metadata" not in svg
    assert "data:image/png;base64," in made[-1]  # the scatter points are rasterized


def test_hostile_labels_are_drawn_not_parsed():
    # Text is drawn as glyph paths and math text is off: a label cannot inject markup, and a
    # `$` does not make matplotlib's math parser raise.
    counts = {name: 10 - i for i, name in enumerate(HOSTILE)}
    svg = charts.render(charts.distributions, "k", [(HOSTILE[0], [
        charts.Series(HOSTILE[1], counts=counts, rows=40)])], "categorical",
        name=HOSTILE[0])
    assert "<script" not in svg and "&lt;script&gt;" in svg  # only the accessible name, escaped
    fig = charts.distributions([("t", [charts.Series("s", counts=counts, rows=40)])],
                               "categorical")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "<script>alert(1)<\u2026" in labels and 'say "hi" & \'bye\'' in labels


def test_all_null_constant_and_nan_columns_say_so():
    null = charts.distributions([("x", [charts.Series("train", np.empty(0), rows=7,
                                                      nulls=7)])], "numeric")
    assert "no values (all NULL)" in figure_texts(null)
    nan = charts.distributions([("x", [charts.Series("train", np.array([np.nan] * 3),
                                                     rows=3)])], "numeric")
    assert "no finite values" in figure_texts(nan)
    none = charts.distributions([("x", [charts.Series("t", counts={}, rows=5, nulls=5)])],
                                "categorical")
    assert "no values (all NULL)" in figure_texts(none)
    constant = charts.distributions([("x", [charts.Series("train", np.full(50, 3.25),
                                                          rows=50)])], "numeric")
    ax = constant.axes[0]
    lo, hi = ax.get_xlim()
    assert lo < 3.25 < hi and hi - lo < 2  # one bar around the value, not a degenerate axis
    old = charts.distributions([("x", [charts.Series("baseline", None, rows=9)])], "temporal")
    assert "no sample of values kept" in figure_texts(old)


def test_a_thousand_categories_show_the_top_k_and_other():
    counts = {f"v{i:04d}": 1000 - i for i in range(1000)}
    fig = charts.distributions([("train vs eval", [
        charts.Series("train", counts=counts, rows=sum(counts.values())),
        charts.Series("eval", counts={"v0000": 5, "zzz": 5}, rows=10)])], "categorical")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == charts.TOP_K + 1 and labels[-1].startswith("other (")
    assert "top 8 of 1,001 categories" in figure_texts(fig)
    bars = fig.axes[0].patches
    assert len(bars) == 2 * (charts.TOP_K + 1)
    shares = [b.get_width() for b in bars[: charts.TOP_K + 1]]
    assert sum(shares) == pytest.approx(1.0)  # train's shares, "other" included


def test_long_tails_are_clipped_and_said_not_hidden():
    values = np.concatenate([np.random.default_rng(1).normal(size=2000), [1e9]])
    fig = charts.distributions([("x", [charts.Series("t", values, rows=2001)])], "numeric")
    assert "tails beyond 0.5-99.5% in the end bins" in figure_texts(fig)
    assert fig.axes[0].get_xlim()[1] < 100


def test_curves_with_nan_points_name_what_was_not_drawn():
    fig = charts.curves("roc", [("candidate", [0, 1], [0, 1]),
                                ("one class", [np.nan, np.nan], [0.0, 1.0])], title="ROC")
    assert "not drawn (no finite points): one class" in figure_texts(fig)


def test_matplotlib_is_not_imported_by_conveyor_serve_or_the_components():
    code = ("import sys, conveyor, conveyor.components, conveyor.serving.server, "
            "conveyor.validate.validate, conveyor.evaluate.evaluate, conveyor.reports.html; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    assert out == "False"


# -- the bounded curve data -----------------------------------------------------------------

def exact_auc(y, p):
    """Mann-Whitney: the chance a positive outscores a negative (ties half)."""
    order = np.argsort(p, kind="stable")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2 + 1
    ranks[order] = np.repeat(avg, counts)
    pos = y.sum()
    return (ranks[y].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos))


def test_binary_curves_match_the_exact_auc_and_a_calibrated_model_lies_on_the_diagonal():
    rng = np.random.default_rng(3)
    acc = m.Binary()
    ys, ps = [], []
    for _ in range(20):  # 200 k rows in batches: the curve data stays 203 points
        p = rng.beta(2, 3, 10_000)
        y = rng.random(10_000) < p  # calibrated by construction
        acc.update(y, p)
        ys.append(y)
        ps.append(p)
    y, p = np.concatenate(ys), np.concatenate(ps)
    curves = acc.curves()
    assert len(curves["fpr"]) <= m.CURVE_POINTS + 2
    fpr, tpr = np.array(curves["fpr"]), np.array(curves["tpr"])
    assert fpr[0] == tpr[0] == 1.0 and fpr[-1] == tpr[-1] == 0.0
    area = float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))
    assert area == pytest.approx(exact_auc(y, p), abs=2e-3)
    cal = curves["calibration"]
    assert sum(cal["count"]) == len(y)
    for predicted, observed, count in zip(cal["predicted"], cal["observed"], cal["count"]):
        if count > 2000:
            assert observed == pytest.approx(predicted, abs=0.02)
    assert curves["positive_rate"] == pytest.approx(y.mean())


def test_one_class_gives_nan_rates_not_a_crash():
    acc = m.Binary()
    acc.update(np.ones(50, dtype=bool), np.linspace(0, 1, 50))
    curves = acc.curves()
    assert all(np.isnan(curves["fpr"])) and curves["positive_rate"] == 1.0


def test_multiclass_tracks_at_most_ten_classes_in_fixed_memory():
    k = 1000
    acc = m.Multiclass(k)
    acc.track(range(k))
    assert len(acc.tracked) == m.MAX_CURVE_CLASSES
    rng = np.random.default_rng(0)
    for _ in range(3):
        y = rng.integers(0, k, 2000)
        p = rng.dirichlet(np.ones(k) * 0.1, 2000)
        acc.update(y, p)
    assert acc.pos.shape == (m.MAX_CURVE_CLASSES, m.CURVE_BINS)
    curves = acc.curves()
    assert sorted(curves["classes"]) == list(range(m.MAX_CURVE_CLASSES))
    assert sum(curves["top_label_calibration"]["count"]) == 6000
    untracked = m.Multiclass(3)
    untracked.update(np.array([0, 1]), np.eye(3)[:2])
    assert untracked.curves() is None


def test_the_regression_sample_is_fixed_size_uniform_and_deterministic():
    def run():
        acc = m.Regression()
        acc.track()
        for i in range(100):  # 1 M rows
            y = np.full(10_000, float(i))
            acc.update(y, y + 1)
        return acc

    a, b = run(), run()
    assert a.sample.pairs.shape == (m.SAMPLE_PAIRS, 2)
    assert np.array_equal(a.sample.pairs, b.sample.pairs)
    actual = a.sample.pairs[:, 0]
    assert actual.mean() == pytest.approx(49.5, abs=3)  # every batch is represented
    assert len(np.unique(actual)) > 90
    assert a.curves()["rows"] == 1_000_000


# -- the evaluate page ----------------------------------------------------------------------

def result_of(task, acc, classes=(), **kw) -> EvaluationResult:
    overall = acc.result()
    base = dict(task=task, blessed=False, checks=[Check("auc", ">= 0.7", 0.65, None, False)],
                metrics={"overall": overall, "island=<b>Dream</b>": overall},
                baseline_metrics=None, baseline_uri=None, roc=None, confusion=None,
                classes=list(classes), seconds=0.1, naive_metrics={"overall": overall},
                naive="the train class prior", curves=None)
    base.update(kw)
    return EvaluationResult(**base)


def test_evaluate_pages_for_each_task_are_self_contained_and_escaped(tmp_path):
    rng = np.random.default_rng(0)
    binary = m.Binary()
    binary.update(rng.random(500) < 0.4, rng.random(500))
    classes = ["<script>x</script>", "b\"q", "ünï"]
    multi = m.Multiclass(3)
    multi.track([0, 1, 2])
    multi.update(rng.integers(0, 3, 300), rng.dirichlet([1, 1, 1], 300))
    reg = m.Regression()
    reg.track()
    reg.update(rng.normal(size=300), rng.normal(size=300))
    pages = {
        "binary": result_of("binary", binary, curves={"candidate": binary.curves(),
                                                      "baseline": binary.curves()},
                            baseline_uri="gs://b/m/1",
                            baseline_metrics={"overall": binary.result()},
                            skipped_baselines=[{"uri": "gs://b/m/2", "reason": "<corrupt>"}]),
        "multiclass": result_of("multiclass", multi, classes, curves=multi.curves(),
                                confusion=multi.matrix.tolist()),
        "regression": result_of("regression", reg, curves=reg.curves()),
    }
    for name, result in pages.items():
        write_outputs(result, tmp_path / name, tmp_path / f"{name}.md", tmp_path / f"{name}.html")
        page = (tmp_path / f"{name}.html").read_text()
        tags = assert_self_contained(page)
        assert sum(t == "svg" for t, _ in tags.tags) >= 1, name
        assert "&lt;b&gt;Dream&lt;/b&gt;" in page and "<b>Dream</b>" not in page
        assert (tmp_path / f"{name}.md").exists()  # the Markdown stays
        assert len(page) < 400_000
        assert not list(tmp_path.glob(".*.partial"))
    assert "&lt;corrupt&gt;" in (tmp_path / "binary.html").read_text()
    svgs = sum(t == "svg" for t, _ in Tags((tmp_path / "multiclass.html").read_text()).tags)
    assert svgs == 4  # confusion matrix, one-vs-rest ROC and PR, top-label calibration
    evaluation = json.loads((tmp_path / "multiclass" / "evaluation.json").read_text())
    assert set(evaluation["curves"]["classes"]) == {"0", "1", "2"}


def test_nan_metrics_and_a_thousand_classes_render(tmp_path):
    k = 1000
    multi = m.Multiclass(k)
    multi.track(range(k))
    rng = np.random.default_rng(0)
    multi.update(rng.integers(0, k, 3000), rng.dirichlet(np.ones(k), 3000))
    result = result_of("multiclass", multi, [f"class {i}" for i in range(k)],
                       curves=multi.curves(), confusion=multi.matrix.tolist(),
                       checks=[Check("log_loss", "is a finite number", float("nan"), None,
                                     False)])
    result.metrics["overall"]["log_loss"] = float("nan")
    write_outputs(result, tmp_path / "e", tmp_path / "r.md", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert_self_contained(page)
    assert "the 20 most frequent of 1000 classes" in page
    assert ">nan<" in page and "NOT BLESSED" in page
    assert len(page) < 1_000_000


# -- the validate page ----------------------------------------------------------------------

def awkward_table(rows: int, rng, shift: float = 1.0) -> pa.Table:
    base = datetime.date(2024, 1, 1)
    return pa.table({
        HOSTILE[0]: pa.array(rng.normal(100 * shift, 10, rows)),
        HOSTILE[1]: pa.array(rng.choice(["a", "b", "<i>c</i>"], rows).tolist()),
        HOSTILE[2]: pa.array(rng.integers(0, 5, rows), pa.int64()),
        HOSTILE[3]: pa.array([None] * rows, pa.float64()),  # all NULL
        HOSTILE[4]: pa.array(np.full(rows, 7.0)),  # constant
        "day": pa.array([base + datetime.timedelta(days=int(d * shift))
                         for d in rng.integers(0, 300, rows)], pa.date32()),
        "at": pa.array(rng.integers(0, 10**6, rows) * 10**6 * int(shift),
                       pa.timestamp("us", tz="UTC")),
        "many": pa.array([f"id-{i}" for i in rng.integers(0, 1000, rows)]),
    })


def test_validate_page_with_drift_hostile_names_null_and_constant_columns(tmp_path):
    rng = np.random.default_rng(0)
    base = write_dataset(tmp_path / "base", awkward_table(3000, rng))
    validate_dataset(base, report_path=tmp_path / "b.html", statistics_path=tmp_path / "bs",
                     suite_path=tmp_path / "bsu", policy="warn")
    cur = write_dataset(tmp_path / "cur", awkward_table(2000, rng, shift=1.8))
    result = validate_dataset(cur, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                              suite_path=tmp_path / "su", baseline_statistics=tmp_path / "bs",
                              policy="warn", baseline_name="gs://models/m/3/assets.extra/x.json")
    assert result.drifted and HOSTILE[0] in {d.column for _, d in result.drift if d.exceeded}
    page = (tmp_path / "r.html").read_text()
    tags = assert_self_contained(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;i&gt;c&lt;/i&gt;" in page
    assert "prix €/ünïcödé" in page
    assert "<b>baseline:</b> gs://models/m/3/assets.extra/x.json" in page
    assert str(tmp_path / "bs") not in page
    # one chart per column (8), two panels each; the drifted column's figures side by side
    assert sum(t == "svg" for t, _ in tags.tags) == 8
    assert "Drifted columns: baseline and current side by side" in page
    text = " ".join(tags.text)
    assert re.search(r"mean (99|100)\.?\d* -> 1[78]\d", text), "the mean 100 -> 180 figures"
    assert len(page) < 1_000_000


def test_validate_page_caps_the_charts_at_100_features_and_says_so(tmp_path):
    rng = np.random.default_rng(0)
    table = pa.table({f"f{i:03d}": rng.normal(i, 1, 400) for i in range(100)})
    ds = write_dataset(tmp_path / "ds", table)
    validate_dataset(ds, report_path=tmp_path / "r.html", statistics_path=tmp_path / "s",
                     suite_path=tmp_path / "su", policy="warn")
    page = (tmp_path / "r.html").read_text()
    assert_self_contained(page)
    svgs = page.count("<svg")
    assert svgs == validate_report.MAX_CHARTS
    assert f"charts for {validate_report.MAX_CHARTS} of 100 columns" in page
    assert len(page.encode()) < 2_000_000


def test_temporal_statistics_keep_days_and_round_trip(tmp_path):
    table = pa.table({
        "d": pa.array([datetime.date(2020, 1, 1), None, datetime.date(2020, 1, 3)], pa.date32()),
        "t": pa.array([datetime.datetime(1970, 1, 2, 12, tzinfo=datetime.UTC), None,
                       None], pa.timestamp("ns", tz="UTC")),
    })
    ds = write_dataset(tmp_path / "ds", table, ratios={"train": 1.0})
    stats = compute_statistics(__import__("conveyor.io", fromlist=["Dataset"]).Dataset(ds))
    d, t = stats.split("train").columns["d"], stats.split("train").columns["t"]
    assert sorted(d.sample.values.tolist()) == [18262.0, 18264.0]
    assert t.sample.values.tolist() == [1.5]
    again = DatasetStatistics.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert sorted(again.split("train").columns["d"].sample.values.tolist()) == [18262.0, 18264.0]
    old = ColumnStatistics.from_dict("d", {"type": "date", "count": 2, "nulls": 1,
                                           "min": "2020-01-01", "max": "2020-01-03"})
    assert old.sample is None  # statistics written before the sample still load
