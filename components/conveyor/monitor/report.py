"""The monitoring report: one self-contained HTML page (inline CSS and SVG, no script), built
with conveyor's report blocks (`conveyor.reports.html`, `conveyor.reports.charts`): the
verdict, the window and the served version, a table of every feature's distance, threshold and
noise floor with what moved, charts of the drifted features (then the others) against the
training data, and the prediction drift."""

from __future__ import annotations

from typing import Any

from conveyor.reports.html import esc, page, short, table
from conveyor.stats.columns import NUMERIC, TEMPORAL, ColumnStatistics
from conveyor.validate.drift import _as_categories
from conveyor.validate.report import series_of

MAX_CHARTS = 24


def _kind(a: ColumnStatistics, b: ColumnStatistics) -> str | None:
    if _as_categories(a) and _as_categories(b):
        return "categorical"
    if a.kind == b.kind and a.kind in (NUMERIC, TEMPORAL):
        return "numeric" if a.kind == NUMERIC else "temporal"
    return None


def _chart(index: int, column: str, base: ColumnStatistics, cur: ColumnStatistics) -> str:
    from conveyor.reports import charts

    kind = _kind(base, cur)
    if kind is None:
        return ""
    series = [series_of("training", base), series_of("traffic", cur)]
    svg = charts.render(charts.distributions, f"m{index}", [("traffic vs training", series)],
                        kind, legend=False, name=f"distribution of {column}")
    legend = ", ".join(f"<span style='color:{color}'>&#9632;</span> {esc(s.label)} "
                       f"{s.rows:,} rows" + (f" ({s.nulls / s.rows:.1%} NULL)"
                                             if s.rows and s.nulls else "")
                       for s, color in zip(series, charts.colors(2)))
    return (f"<figure><figcaption><b>{esc(short(column))}</b></figcaption>{svg}"
            f"<figcaption>{legend}</figcaption></figure>")


def html(result) -> str:
    data: dict[str, Any] = result.to_dict()
    served = data["served"]
    verdict = ("<span class='verdict drift'>DRIFTED</span>" if data["drifted"]
               else "<span class='verdict pass'>NO DRIFT</span>")
    parts = [f"<h1>Serving-data drift: version {esc(served['version'])}</h1>", verdict,
             f"<p>Window {esc(data['window']['start'])} to {esc(data['window']['end'])} "
             f"({data['window']['hours']:g} h) of <code>{esc(short(data['source'], 200))}</code>: "
             f"{data['rows']:,} answered rows ({data['files']} file(s) or pages) against the "
             f"training statistics of <code>{esc(served['uri'])}</code> "
             f"({served['training_rows']:,} training rows).</p>"]
    if data["drifted_features"]:
        parts.append("<p>Drifted: " + ", ".join(f"<b>{esc(short(c))}</b>"
                                                 for c in data["drifted_features"]) + "</p>")
    rows = [[esc(short(f["column"])), esc(f["input"]), esc(f["metric"]), f["distance"],
             f["threshold"], f["noise"], "yes" if f["drifted"] else "no",
             esc(short(f["figures"].get("summary", ""), 240))] for f in data["features"]]
    parts += ["<h2>Features</h2>",
              "<p class='note'>A feature drifts when its distance passes its threshold and the "
              "distance sampling alone reaches (p = 0.001) for these two sample sizes.</p>",
              table(["column", "input", "metric", "distance", "threshold", "noise floor",
                     "drifted", "what moved"], rows, [f["drifted"] for f in data["features"]])]
    if data["not_compared"]:
        parts.append(table(["column", "not compared"],
                           [[esc(short(n["column"])), esc(n["reason"])]
                            for n in data["not_compared"]]))
    p = data["prediction"]
    parts.append("<h2>Predictions</h2>")
    if p.get("distance") is not None:
        parts.append(table(["output", "reference", "metric", "distance", "threshold",
                            "noise floor", "drifted", "counts towards drifted", "what moved"],
                           [[esc(p["output"]), esc(p["reference"]), esc(p["metric"]),
                             p["distance"], p["threshold"], p["noise"],
                             "yes" if p["drifted"] else "no", "yes" if p["counts"] else "no",
                             esc(short(p["figures"].get("summary", ""), 240))]],
                           [bool(p["drifted"])]))
    else:
        parts.append(f"<p>{esc(p.get('status', 'not compared'))}</p>")
    if data["rows_by_status"] or data["rows_by_version"]:
        parts.append("<h2>Traffic</h2>")
        parts.append(table(["", "rows"], [[f"status {esc(k)}", v]
                                          for k, v in data["rows_by_status"].items()]
                           + [[f"answered by version {esc(k)}", v]
                              for k, v in data["rows_by_version"].items()]))
    if data["unparsed_keys"]:
        parts.append(table(["sent but not fed to the model (unparsed)", "rows"],
                           [[esc(short(k)), v] for k, v in data["unparsed_keys"].items()]))
    ordered = sorted(data["features"], key=lambda f: (not f["drifted"], -f["distance"]))
    charts_html = []
    baseline, traffic = result.served.baseline, result.traffic
    for i, f in enumerate(ordered[:MAX_CHARTS]):
        base, cur = baseline.columns.get(f["column"]), traffic.columns.get(f["column"])
        if base is not None and cur is not None:
            charts_html.append(_chart(i, f["column"], base, cur))
    if charts_html:
        parts += ["<h2>Distributions</h2>",
                  "<div class='charts'>" + "".join(charts_html) + "</div>"]
    return page(f"Serving-data drift: version {served['version']}", parts)
