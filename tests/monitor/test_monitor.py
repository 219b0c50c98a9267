"""The serving-data drift monitor on prediction logs written by the real writer
(`conveyor.serving.prediction_log.PredictionLog`): shifted windows drift, calm ones do not
(sample-size aware), odd names and nulls map back to their columns, bad input is named."""

from __future__ import annotations

import datetime
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from support import write_dataset

from conveyor.errors import EmptyDataError, InputError
from conveyor.io import Dataset
from conveyor.local import seed
from conveyor.model.predictions import prediction_record
from conveyor.monitor import monitor as mon
from conveyor.monitor.served import Served, load_served
from conveyor.monitor.sources import read_log, traffic_source
from conveyor.monitor.traffic import Traffic
from conveyor.monitor.window import window
from conveyor.serving.log_format import Entry, Signature
from conveyor.serving.prediction_log import PredictionLog
from conveyor.transform.fit import column_statistics, fit
from conveyor.transform.propose import propose_spec
from conveyor.validate.stats import compute_statistics

UTC = datetime.UTC
T0 = datetime.datetime(2026, 12, 1, tzinfo=UTC)
CLASSIFIER_OUTPUTS = {"class_label": ("string", 1), "class_id": ("int", 1),
                      "probabilities": ("float", 2)}


def version_folder(root, table, label, predictions=None):
    """A served version's assets.extra as push leaves it: transform.json, feature_spec.yaml,
    statistics.json (of every split), and optionally predictions.json."""
    ds = Dataset(write_dataset(root / "ds", table))
    types = {c.name: c.type for c in ds.info.columns}
    stats = column_statistics(ds, "train", list(types))  # as transform proposes a spec
    fitted = fit(ds, propose_spec(types, label, stats=stats[1]), stats=stats)
    extra = root / "model" / "assets.extra"
    fitted.write(extra)
    (extra / "statistics.json").write_text(json.dumps(compute_statistics(ds).to_dict()))
    if predictions is not None:
        (extra / "predictions.json").write_text(json.dumps(predictions))
    return root / "model"


def signature(fitted, outputs=CLASSIFIER_OUTPUTS, extra_inputs=()) -> Signature:
    """The serving signature's kinds, by the contract of conveyor.model.inputs."""
    kinds = {}
    for f in fitted.features.values():
        if f["kind"] == "numeric":
            kinds[f["input"]] = "float"
        elif f["kind"] == "categorical" and f["dtype"] in ("int64", "bool"):
            kinds[f["input"]] = "int"
        else:
            kinds[f["input"]] = "string"
    kinds.update({name: "float" for name in extra_inputs})
    return Signature(kinds, dict(outputs))


def instance(row: dict, fitted) -> dict:
    """One table row as a client sends it: by input name, bools as 1/0, dates as ISO text,
    missing values as null, NaN or "" (varied)."""
    out = {}
    for i, (column, f) in enumerate(fitted.features.items()):
        value = row[column]
        if isinstance(value, float) and math.isnan(value):
            value = None
        if value is None:
            value = [None, float("nan") if f["kind"] == "numeric" else "", None][i % 3]
            if f["kind"] == "categorical" and f.get("dtype") in ("int64", "bool"):
                value = None
        elif isinstance(value, bool):
            value = int(value)
        elif isinstance(value, (datetime.date, datetime.datetime)):
            value = value.isoformat()
        out[f["input"]] = value
    return out


def write_log(prefix, rows: list[dict], fitted, start: datetime.datetime, *, answers=None,
              sig=None, version=1, per_request=10, seconds=1.0):
    """Requests of `per_request` rows, one every `seconds` from `start`, through the real
    prediction log writer (files by date and version, as conveyor serve writes them)."""
    sig = sig or signature(fitted)
    log = PredictionLog(str(prefix), flush_rows=500)
    for n, first in enumerate(range(0, len(rows), per_request)):
        chunk = rows[first:first + per_request]
        body = {"instances": [instance(r, fitted) for r in chunk]}
        labels = (answers or [r[fitted.spec.label] for r in rows])[first:first + per_request]
        answer = {"predictions": [{"class_label": str(c), "class_id": 0, "value": c,
                                   "probabilities": [1.0, 0.0, 0.0]} for c in labels]}
        received = (start + datetime.timedelta(seconds=n * seconds)).timestamp()
        assert log.submit(Entry(f"r{start.timestamp()}-{n}", received, "m", version, sig, 200,
                                body, answer, 1.0, 100))
    log.close()


@pytest.fixture(scope="module")
def penguins_table():
    return seed.penguins()


@pytest.fixture(scope="module")
def served(tmp_path_factory, penguins_table):
    folder = version_folder(tmp_path_factory.mktemp("served"), penguins_table, "species")
    return Served.from_folder(folder, 1, "gs://b/models/penguins/1")


def sample_rows(table: pa.Table, n: int, rng) -> list[dict]:
    rows = table.to_pylist()
    return [rows[i] for i in rng.integers(0, len(rows), n)]


def shifted(rows: list[dict], rng) -> list[dict]:
    out = []
    for r in rows:
        r = dict(r)
        if r["body_mass_g"] is not None:
            r["body_mass_g"] *= 1.5
        if rng.random() < 0.6:
            r["island"] = "Dream"
        out.append(r)
    return out


def run(prefix, served, start, hours=1.0, **kw):
    win = window(start=(start).isoformat(), end=(start + datetime.timedelta(hours=hours))
                     .isoformat())
    return mon.compare(read_log(str(prefix), win, served), win, **kw)


def test_a_shifted_window_drifts_on_the_shifted_features_only(tmp_path, served, penguins_table):
    rng = np.random.default_rng(1)
    rows = shifted(sample_rows(penguins_table, 300, rng), rng)
    write_log(tmp_path / "log", rows, served.fitted, T0)
    result = run(tmp_path / "log", served, T0)
    assert result.traffic.rows == 300 and result.traffic.files >= 1
    assert set(result.drifted_features) == {"body_mass_g", "island"}
    assert result.drifted
    mass = next(f for f in result.features if f["column"] == "body_mass_g")
    ratio = mass["figures"]["current"]["mean"] / mass["figures"]["baseline"]["mean"]
    assert 1.4 < ratio < 1.6 and mass["distance"] > mass["threshold"] > 0
    island = next(f for f in result.features if f["column"] == "island")
    assert "'Dream'" in island["figures"]["summary"]
    # Predictions (the species, unchanged) against the training labels: reported, not counted.
    assert result.prediction["counts"] is False and result.prediction["drifted"] is False
    data = result.to_dict()
    assert data["served"]["version"] == 1 and data["window"]["hours"] == 1
    assert data["rows_by_version"] == {"1": 300} and data["rows_by_status"] == {"200": 300}
    metrics = result.metrics()
    assert metrics["drifted_features"] == 2 and metrics["drift_body_mass_g"] > 0.1
    path = mon.write(result, tmp_path / "out")
    assert json.loads(path.read_text())["drifted_features"] == ["body_mass_g", "island"]
    page = (tmp_path / "out" / mon.REPORT_FILE).read_text()
    assert "DRIFTED" in page and "<svg" in page and "<script" not in page


def test_200_calm_windows_of_100_rows_raise_at_most_a_few_false_alarms(
        tmp_path, served, penguins_table):
    rng = np.random.default_rng(7)
    for w in range(200):  # window w is hour w; 100 rows of penguins drawn afresh
        write_log(tmp_path / "log", sample_rows(penguins_table, 100, rng), served.fitted,
                  T0 + datetime.timedelta(hours=w), seconds=20.0)
    alarms, compared = [], 0
    for w in range(200):
        result = run(tmp_path / "log", served, T0 + datetime.timedelta(hours=w))
        assert result.traffic.rows == 100  # exactly this hour's rows, from its date's files
        compared += len(result.features)
        if result.drifted:
            alarms.append((w, result.drifted_features))
    assert compared == 200 * len(served.fitted.features)
    assert len(alarms) <= 4, alarms
    # The same windows with the x1.5 / island shift are all caught.
    rows = shifted(sample_rows(penguins_table, 100, rng), rng)
    write_log(tmp_path / "shift", rows, served.fitted, T0)
    assert {"body_mass_g", "island"} <= set(run(tmp_path / "shift", served, T0).drifted_features)


def test_eval_time_predictions_count_towards_drift(tmp_path, penguins_table):
    species = penguins_table.column("species").to_pylist()
    record = prediction_record("multiclass", species)
    folder = version_folder(tmp_path / "v", penguins_table, "species", predictions=record)
    served = Served.from_folder(folder, 1)
    rng = np.random.default_rng(3)
    rows = sample_rows(penguins_table, 200, rng)
    write_log(tmp_path / "calm", rows, served.fitted, T0)
    calm = run(tmp_path / "calm", served, T0)
    assert calm.prediction["counts"] and not calm.prediction["drifted"] and not calm.drifted
    assert calm.prediction["reference"].startswith("eval-time")
    write_log(tmp_path / "gentoo", rows, served.fitted, T0, answers=["Gentoo"] * len(rows))
    skewed = run(tmp_path / "gentoo", served, T0)
    assert skewed.drifted_features == [] and skewed.prediction["drifted"] and skewed.drifted
    assert skewed.metrics()["prediction_drifted"] == 1.0


def test_only_rows_inside_the_window_and_answered_count(tmp_path, served, penguins_table):
    rng = np.random.default_rng(5)
    rows = sample_rows(penguins_table, 100, rng)
    late = T0 + datetime.timedelta(hours=23, minutes=59, seconds=30)  # crosses midnight
    write_log(tmp_path / "log", rows, served.fitted, late, seconds=6.0)
    sig = signature(served.fitted)
    log = PredictionLog(str(tmp_path / "log"))
    log.submit(Entry("bad", (late + datetime.timedelta(seconds=30)).timestamp(), "m", 1, sig,
                     400, {"instances": [{"island": 3}]}, {"error": "no"}, 1.0, 10))
    log.submit(Entry("junk", (late + datetime.timedelta(seconds=31)).timestamp(), "m", 1, sig,
                     400, None, {"error": "not JSON"}, 1.0, 10))
    log.close()
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["date=2026-12-01",
                                                                    "date=2026-12-02"]
    result = run(tmp_path / "log", served, late, hours=2)
    assert result.traffic.rows == 100 and result.traffic.by_status == {"200": 100, "400": 2}
    first = run(tmp_path / "log", served, late, hours=30 / 3600)  # requests at 0, 6, .. 24 s
    assert first.traffic.rows == 50 and first.traffic.by_status == {"200": 50}
    second = run(tmp_path / "log", served, late + datetime.timedelta(seconds=30), hours=1)
    assert second.traffic.rows == 50 and second.traffic.by_status == {"200": 50, "400": 2}


def test_an_empty_window_names_the_window_and_the_prefix(tmp_path, served, penguins_table):
    rng = np.random.default_rng(2)
    write_log(tmp_path / "log", sample_rows(penguins_table, 20, rng), served.fitted, T0)
    later = T0 + datetime.timedelta(days=3)
    with pytest.raises(EmptyDataError) as info:
        run(tmp_path / "log", served, later)
    message = str(info.value)
    assert str(tmp_path / "log") in message and "2026-12-04T00:00:00Z" in message
    assert "2026-12-04T01:00:00Z" in message
    with pytest.raises(InputError, match="does not exist"):
        run(tmp_path / "nowhere", served, T0)


def test_a_logged_feature_the_model_does_not_know_is_named(tmp_path, served, penguins_table):
    rng = np.random.default_rng(2)
    sig = signature(served.fitted, extra_inputs=["wing_span"])
    write_log(tmp_path / "log", sample_rows(penguins_table, 20, rng), served.fitted, T0,
              sig=sig)
    with pytest.raises(InputError, match="'wing_span' is not an input of the served version "
                                         "gs://b/models/penguins/1"):
        run(tmp_path / "log", served, T0)


def test_a_version_without_statistics_is_refused(tmp_path, penguins_table):
    folder = version_folder(tmp_path / "v", penguins_table, "species")
    (folder / "assets.extra" / "statistics.json").unlink()
    with pytest.raises(InputError, match="no training statistics"):
        Served.from_folder(folder, 4, "gs://b/m/4")
    with pytest.raises(InputError, match="has no published version"):
        load_served(str(tmp_path / "empty-base"), tmp_path / "scratch")


def test_odd_names_nulls_bools_and_dates_map_back_to_their_columns(tmp_path):
    houses = seed.houses(4500)
    folder = version_folder(tmp_path / "v", houses.slice(0, 3000), "Price")
    served = Served.from_folder(folder, 2, "gs://b/houses/2")
    inputs = served.columns_by_input()
    assert inputs["from_"] == "from" and inputs["Street_Name"] == "Street Name"
    traffic = houses.slice(3000).to_pylist()  # the same houses market, other rows
    outputs = {"value": ("float", 1)}
    sig = signature(served.fitted, outputs)
    write_log(tmp_path / "calm", traffic, served.fitted, T0, sig=sig, version=2,
              answers=[r["Price"] for r in traffic])
    calm = run(tmp_path / "calm", served, T0)
    assert calm.traffic.rows == 1500 and not calm.drifted_features, calm.lines()
    compared = {f["column"] for f in calm.features}
    assert {"from", "Street Name", "âge", "class", "HasGarden", "Area_m2"} <= compared
    # NULLs were logged as null, NaN or "" and come back as NULLs, at the rate of the source.
    age = next(f for f in calm.features if f["column"] == "âge")["figures"]
    assert abs(age["current"]["null_fraction"] - 0.1) < 0.03
    assert calm.traffic.columns["HasGarden"].type == "bool"
    assert calm.traffic.columns["SoldOn"].count == 1500  # dates parsed back (no drift measure)
    assert any(n["column"] == "SoldOn" for n in calm.not_compared)
    # Regression predictions against the training label: comparable, not counted.
    assert calm.prediction["metric"] == "jensen_shannon" and not calm.prediction["counts"]
    # The district mix changes: `from` (input from_) drifts, by its column name.
    moved = [dict(r, **{"from": "centre" if i % 3 else r["from"]}) for i, r in enumerate(traffic)]
    write_log(tmp_path / "moved", moved, served.fitted, T0, sig=sig, version=2,
              answers=[r["Price"] for r in traffic])
    result = run(tmp_path / "moved", served, T0, feature_thresholds={"Street_Name": 0.5})
    assert result.drifted_features == ["from"]
    entry = next(f for f in result.features if f["column"] == "from")
    assert entry["input"] == "from_" and "'centre'" in entry["figures"]["summary"]
    assert next(f for f in result.features if f["column"] == "Street Name")["threshold"] == 0.5
    page = mon.write(result, tmp_path / "out").with_name(mon.REPORT_FILE).read_text()
    assert "Street Name" in page and "âge" in page


def test_keys_the_model_does_not_take_are_counted_not_fatal(tmp_path, served, penguins_table):
    rng = np.random.default_rng(4)
    rows = sample_rows(penguins_table, 30, rng)
    sig = signature(served.fitted)
    log = PredictionLog(str(tmp_path / "log"))
    body = {"instances": [dict(instance(r, served.fitted), colour="blue",
                               bill_length_mm="long") for r in rows]}
    answer = {"predictions": [{"class_label": r["species"]} for r in rows]}
    log.submit(Entry("x", T0.timestamp() + 5, "m", 1, sig, 200, body, answer, 1.0, 100))
    log.close()
    result = run(tmp_path / "log", served, T0)
    assert result.traffic.unparsed == {"bill_length_mm": 30, "colour": 30}
    bill = result.traffic.columns["bill_length_mm"]
    assert bill.nulls == 30 and bill.count == 0  # a string for a number: logged as unparsed
    assert any(n["column"] == "bill_length_mm" for n in result.not_compared)


def test_parameters_are_checked(served, tmp_path):
    with pytest.raises(InputError, match="window_end"):
        window("yesterday")
    with pytest.raises(InputError, match="window_hours"):
        window("2026-12-01", -1)
    with pytest.raises(InputError, match="not before"):
        window("2026-12-01", start="2026-12-02")
    assert window("2026-12-02T00:00:00", 36).dates() == ["2026-11-30", "2026-12-01"]
    assert traffic_source("gs://b/logs") == ("log", "gs://b/logs")
    assert traffic_source("proj.ds.t") == ("table", "proj.ds.t")
    assert traffic_source(" select * from x") == ("query", "select * from x")
    assert traffic_source(str(tmp_path)) == ("log", str(tmp_path))
    with pytest.raises(InputError, match="traffic"):
        traffic_source("no such thing")
    traffic = Traffic.start(served, "x")
    traffic.rows = 1
    with pytest.raises(InputError, match="feature_thresholds: 'wings'"):
        mon.compare(traffic, window("2026-12-01"), feature_thresholds={"wings": 0.2})


def test_serve_exports_the_newest_published_result_as_gauges(tmp_path, served, penguins_table):
    import os
    import time

    from prometheus_client import CollectorRegistry

    from conveyor.monitor.tasks import publish
    from conveyor.serving.metrics import MonitoringGauges

    rng = np.random.default_rng(9)
    write_log(tmp_path / "calm", sample_rows(penguins_table, 200, rng), served.fitted, T0)
    write_log(tmp_path / "shift", shifted(sample_rows(penguins_table, 200, rng), rng),
              served.fitted, T0 + datetime.timedelta(hours=1))
    registry = CollectorRegistry()
    ticks = iter(range(0, 10_000, 100))
    gauges = MonitoringGauges(str(tmp_path / "published"), "penguins", registry,
                              clock=lambda: next(ticks))

    def value(name, **labels):
        return registry.get_sample_value(name, {"model": "penguins", **labels})

    gauges.maybe_refresh()  # nothing published yet: no gauges, no failure
    assert value("conveyor_feature_drift", feature="island") is None
    assert value("conveyor_monitoring_read_failures_total") == 0

    publish(run(tmp_path / "calm", served, T0).to_dict(), str(tmp_path / "published"))
    gauges.maybe_refresh()
    assert value("conveyor_feature_drifted", feature="island") == 0
    assert value("conveyor_monitoring_drifted") == 0

    later = publish(run(tmp_path / "shift", served, T0 + datetime.timedelta(hours=1)).to_dict(),
                    str(tmp_path / "published"))
    os.utime(later, ns=(time.time_ns() + 10**9,) * 2)
    (tmp_path / "published" / ".monitoring-partial.json.tmp").write_text("{")  # ignored
    gauges.maybe_refresh()
    assert value("conveyor_feature_drifted", feature="island") == 1
    assert value("conveyor_feature_drifted", feature="body_mass_g") == 1
    assert value("conveyor_feature_drifted", feature="bill_length_mm") == 0
    assert value("conveyor_feature_drift", feature="body_mass_g") > value(
        "conveyor_feature_drift_threshold", feature="body_mass_g") == 0.1
    assert value("conveyor_monitoring_drifted") == 1
    assert value("conveyor_monitoring_version") == 1
    end = T0 + datetime.timedelta(hours=2)
    assert value("conveyor_monitoring_window_end_seconds") == end.timestamp()
    # A newest file that is not JSON keeps the gauges as they were and is counted.
    broken = tmp_path / "published" / "monitoring-zzz.json"
    broken.write_text("{not json")
    os.utime(broken, ns=(time.time_ns() + 2 * 10**9,) * 2)
    gauges.maybe_refresh()
    assert value("conveyor_feature_drifted", feature="island") == 1
    assert value("conveyor_monitoring_read_failures_total") == 1
