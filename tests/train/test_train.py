"""Training and export on small real datasets: parity, signatures, tasks, modules, resume."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from support import write_dataset

from conveyor.errors import InputError
from conveyor.io import Dataset
from conveyor.local.seed import penguins, reference_rows
from conveyor.transform.fit import fit
from conveyor.transform.propose import propose_spec
from conveyor.transform.spec import FeatureSpec

pytestmark = pytest.mark.slow

PENGUIN_ROWS = {  # unseen categories, NaN and missing strings included
    "island": ["Biscoe", "Atlantis", "Dream", ""],
    "bill_length_mm": [45.1, float("nan"), 39.0, 50.5],
    "bill_depth_mm": [14.5, 18.0, float("nan"), 15.0],
    "flipper_length_mm": [215.0, 190.0, 185.0, float("nan")],
    "body_mass_g": [5000.0, 3700.0, float("nan"), 5400.0],
    "sex": ["female", "unknown", "", "male"],
    "year": [2008.0, 2007.0, 2012.0, float("nan")],
}


def prepared(tmp_path, table, label, task=None, spec=None):
    ds = Dataset(write_dataset(tmp_path / "ds", table))
    types = {c.name: c.type for c in ds.info.columns}
    values = {v: 1 for v in table.column(label).unique().to_pylist() if v is not None}
    spec = FeatureSpec.from_dict(spec) if spec else propose_spec(types, label, values, task)
    fit(ds, spec).write(tmp_path / "transform")
    return tmp_path / "ds", tmp_path / "transform"


def run_train(tmp_path, ds, transform, **kw):
    from conveyor.train.train import train

    return train(ds, transform, tmp_path / "model", tensorboard_path=tmp_path / "tb", **kw)


def load_and_predict(model_dir: Path, rows: dict, tmp_path: Path) -> dict:
    """Predictions of the exported SavedModel, loaded with tf.saved_model.load in a new process."""
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    code = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        rows = json.load(open({str(tmp_path / 'rows.json')!r}))
        serve = tf.saved_model.load({str(model_dir)!r}).signatures["serving_default"]
        spec = serve.structured_input_signature[1]
        out = serve(**{{k: tf.constant(v, dtype=spec[k].dtype) for k, v in rows.items()}})
        print(json.dumps({{k: v.numpy().tolist() if v.dtype != tf.string
                          else [s.decode() for s in v.numpy().tolist()] for k, v in out.items()}}))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_multiclass_parity_between_training_and_a_fresh_serving_process(tmp_path):
    import tensorflow as tf

    ds, transform = prepared(tmp_path, penguins(), "species")
    result = run_train(tmp_path, ds, transform, hparams={"epochs": 4, "batch_size": 32})
    assert result.metrics["val_accuracy"] > 0.6
    features = {k: tf.constant(v, dtype=tf.string if isinstance(v[0], str) else tf.float32)
                for k, v in PENGUIN_ROWS.items()}
    in_process = result.model(features, training=False).numpy()
    served = load_and_predict(tmp_path / "model", PENGUIN_ROWS, tmp_path)
    np.testing.assert_allclose(np.array(served["probabilities"]), in_process, atol=1e-5)
    assert served["class_label"] == [["Adelie", "Chinstrap", "Gentoo"][i]
                                     for i in in_process.argmax(axis=1)]
    extra = tmp_path / "model" / "assets.extra"
    assert (extra / "labels.txt").read_text().split() == ["Adelie", "Chinstrap", "Gentoo"]
    assert (extra / "feature_spec.yaml").exists() and (extra / "transform.json").exists()
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert not (tmp_path / "model.checkpoints").exists()


def test_saved_model_cli_describes_the_serving_signature(tmp_path):
    ds, transform = prepared(tmp_path, penguins(), "species")
    run_train(tmp_path, ds, transform, hparams={"epochs": 1})
    cli = Path(sys.executable).parent / "saved_model_cli"
    out = subprocess.run([str(cli), "show", "--all", "--dir", str(tmp_path / "model")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "signature_def['serving_default']" in text
    for name, dtype in (("island", "DT_STRING"), ("bill_length_mm", "DT_FLOAT")):
        block = text.split(f"inputs['{name}'] tensor_info:")[1]
        assert f"dtype: {dtype}" in block.split("name:")[0] and "shape: (-1)" in block
    for output in ("probabilities", "class_id", "class_label"):
        assert f"outputs['{output}']" in text


def test_binary_wide_and_deep_on_the_reference_workload(tmp_path):
    ds, transform = prepared(tmp_path, reference_rows(6000), "label", spec={
        "label": "label", "task": "binary",
        "features": {**{f"f{i}": {"kind": "numeric"} for i in range(8)},
                     "c0": {"kind": "categorical"}, "c1": {"kind": "categorical"}},
        "crosses": [{"features": ["c0", "c1"], "buckets": 64}]})
    result = run_train(tmp_path, ds, transform,
                       hparams={"model": "wide_deep", "steps": 200, "epochs": 2,
                                "learning_rate": 0.01, "hidden_units": [16], "embedding_dim": 4})
    assert result.metrics["val_auc"] > 0.75
    served = load_and_predict(tmp_path / "model", {
        **{f"f{i}": [0.5, -1.0] for i in range(8)}, "c0": ["a1", "zz"], "c1": ["b7", ""]}, tmp_path)
    assert set(served) == {"probability", "class", "class_label"}
    assert served["class"] == [int(p >= 0.5) for p in served["probability"]]


def test_regression_predicts_values_in_the_labels_units(tmp_path):
    table = penguins()
    ds, transform = prepared(tmp_path, table, "body_mass_g", task="regression")
    result = run_train(tmp_path, ds, transform, hparams={"epochs": 30, "batch_size": 32,
                                                         "learning_rate": 0.01})
    std = float(np.nanstd(table.column("body_mass_g").to_numpy(zero_copy_only=False)))
    assert result.metrics["val_rmse"] < 0.6 * std
    served = load_and_predict(tmp_path / "model", {k: v for k, v in PENGUIN_ROWS.items()
                                                   if k != "body_mass_g"} | {"species": [
                                                       "Gentoo", "Adelie", "", "Chinstrap"]},
                              tmp_path)
    assert all(2000 < v < 7000 for v in served["value"])


def test_user_module_builds_the_model(tmp_path):
    module = tmp_path / "my_model.py"
    module.write_text(textwrap.dedent("""
        import keras

        def build_model(hparams, feature_spec):
            inputs = {n: keras.Input(shape=(1,), name=n) for n in ("f0", "f1")}
            x = keras.layers.Concatenate()(list(inputs.values()))
            out = keras.layers.Dense(feature_spec["output_units"], activation="sigmoid")(x)
            return keras.Model(inputs, out)
    """))
    ds, transform = prepared(tmp_path, reference_rows(2000), "label", spec={
        "label": "label", "task": "binary",
        "features": {"f0": {"kind": "numeric"}, "f1": {"kind": "numeric"}}})
    result = run_train(tmp_path, ds, transform, module_file=str(module), hparams={"epochs": 2})
    assert result.model.name == "conveyor_user_model"


@pytest.mark.parametrize("source, words", [
    (None, "does not exist"),
    ("x = 1\n", "defines no build_model(hparams, feature_spec)"),
    ("import nonexistent_package\n", "failed to load: ModuleNotFoundError"),
    ("def build_model(hparams, feature_spec):\n    raise ValueError('no GPU budget')\n",
     "raised ValueError: no GPU budget"),
])
def test_bad_module_files_are_named(tmp_path, source, words):
    module = tmp_path / "m.py"
    if source is not None:
        module.write_text(source)
    ds, transform = prepared(tmp_path, reference_rows(500), "label", spec={
        "label": "label", "task": "binary", "features": {"f0": {"kind": "numeric"}}})
    with pytest.raises(InputError, match="module_file") as err:
        run_train(tmp_path, ds, transform, module_file=str(module))
    assert words in str(err.value)
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("hparams, words", [
    ({"layers": 3}, "unknown name(s) ['layers']"),
    ({"model": "transformer"}, "model 'transformer'"),
    ({"epochs": 2.5}, "epochs=2.5"),
    ({"validation_rows": -5}, "validation_rows must be >= 0"),
])
def test_bad_hyperparameters_are_named(tmp_path, hparams, words):
    ds, transform = prepared(tmp_path, reference_rows(300), "label", spec={
        "label": "label", "task": "binary", "features": {"f0": {"kind": "numeric"}}})
    with pytest.raises(InputError) as err:
        run_train(tmp_path, ds, transform, hparams=hparams)
    assert words in str(err.value)


def keyed_dataset(path, table, key):
    """A Dataset split on `key` as ingest splits it, the split recorded as ingest records it."""
    import pyarrow as pa

    from conveyor.io import DatasetWriter
    from conveyor.io.split import SplitSpec

    spec = SplitSpec.parse(None, key)
    index = spec.assign(table.combine_chunks().to_batches()[0])
    with DatasetWriter(path, table.schema, spec.names,
                       {"type": "test", "split": spec.describe()}, row_group_rows=256) as w:
        for i, name in enumerate(spec.names):
            w.write(name, table.filter(pa.array(index == i)))
    return path


def test_model_selection_never_sees_the_eval_split(tmp_path):
    """Issue 26: the rows train chose its epoch, its learning rates and its stopping point on
    are held out of the train split, and disjoint from the eval split that evaluate scores:
    the eval split's files are garbage here, and the KFP task body trains and publishes all
    the same. Its record lists the validation rows (by the split key, in BigQuery's SQL), and
    the validation loss it reports is the exported weights' loss on exactly those rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import tensorflow as tf
    from kfp import dsl

    from conveyor.model.inputs import LabelEncoder, model_inputs
    from conveyor.train import tasks
    from conveyor.transform.fit import Fitted

    table = reference_rows(4000)
    table = table.append_column("id", pa.array(range(10_000, 14_000), pa.int64()))
    ds = keyed_dataset(tmp_path / "ds", table, "id")
    spec = {"label": "label", "task": "binary",
            "features": {**{f"f{i}": {"kind": "numeric"} for i in range(8)},
                         "c0": {"kind": "categorical"}}}
    fit(Dataset(ds), FeatureSpec.from_dict(spec)).write(tmp_path / "t")
    eval_ids = set(Dataset(ds).read_table("eval", ["id"]).column("id").to_pylist())
    for f in Dataset(ds).files("eval"):  # unreadable from here on
        f.write_bytes(b"not a parquet file")

    model = dsl.Model(uri=str(tmp_path / "model"))
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    result = tasks.train(dsl.Dataset(uri=str(ds)), dsl.Artifact(uri=str(tmp_path / "t")), model,
                         metrics, dsl.Artifact(uri=str(tmp_path / "tb")),
                         hyperparameters={"epochs": 4, "batch_size": 64})

    from conveyor.io.split import second_buckets

    record = model.metadata["validation"]
    assert record["key"] == "id" and record["split"] == "train"
    assert record["rule"] == ("ABS(MOD(DIV(FARM_FINGERPRINT(CAST(`id` AS STRING)), 10000), "
                              "10000)) < 2000")
    train = Dataset(ds).read_table("train")
    held = second_buckets(train.column("id")) < record["buckets"][1]
    validation_ids = set(pc.filter(train.column("id"), pa.array(held)).to_pylist())
    training_ids = set(train.column("id").to_pylist()) - validation_ids
    assert validation_ids and training_ids and not validation_ids & eval_ids
    assert record["validation_rows"] == metrics.metadata["validation_rows"] == len(validation_ids)
    assert record["training_rows"] == metrics.metadata["training_rows"] == len(training_ids)
    assert 0.15 < len(validation_ids) / train.num_rows < 0.25

    fitted = Fitted.load(tmp_path / "t")
    rows = train.filter(pa.array(held))
    x = {k: tf.constant(v) for k, v in model_inputs(rows.combine_chunks().to_batches()[0],
                                                   fitted).items()}
    y = LabelEncoder(fitted, scaled=True)(rows.column("label"), "train").reshape(-1, 1)
    p = result.model(x, training=False).numpy()
    loss = float(tf.keras.losses.BinaryCrossentropy()(y, p))
    assert abs(loss - metrics.metadata["val_loss"]) < 1e-4, (loss, metrics.metadata)


def test_train_refuses_to_validate_on_the_split_evaluate_scores(tmp_path):
    ds, transform = prepared(tmp_path, reference_rows(300), "label", spec={
        "label": "label", "task": "binary", "features": {"f0": {"kind": "numeric"}}})
    with pytest.raises(InputError, match="train_split and eval_split are both 'train'"):
        run_train(tmp_path, ds, transform, eval_split="train")


def test_a_big_holdout_is_validated_on_a_sample_of_validation_rows(tmp_path, capsys):
    ds, transform = prepared(tmp_path, reference_rows(3000), "label", spec={
        "label": "label", "task": "binary", "features": {"f0": {"kind": "numeric"}}})
    result = run_train(tmp_path, ds, transform, hparams={"epochs": 2, "batch_size": 64,
                                                         "validation_rows": 100})
    out = capsys.readouterr().out
    assert "held out of split 'train' (1 row group or row in " in out
    assert "hyperparameter validation_rows=100)" in out
    assert 0 < result.metrics["validation_rows"] <= 120
    assert result.validation["sampled_row_groups_every"] > 1
    assert np.isfinite(result.metrics["val_loss"])


def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    ds, transform = prepared(tmp_path, reference_rows(20000), "label", spec={
        "label": "label", "task": "binary",
        "features": {f"f{i}": {"kind": "numeric"} for i in range(8)}})
    hparams = {"epochs": 6, "steps": 9000, "batch_size": 32}
    code = textwrap.dedent(f"""
        from conveyor.train.train import train
        train({str(ds)!r}, {str(transform)!r}, {str(tmp_path / 'model')!r}, hparams={hparams!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    backup = tmp_path / "model.checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if list(backup.rglob("*.json")):  # an epoch has been backed up
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "model").exists()

    from conveyor.train.train import train

    result = train(ds, transform, tmp_path / "model", hparams=hparams)
    assert result.first_epoch >= 1, "training started over instead of resuming"
    assert result.epochs_run == 6 - result.first_epoch
    assert (tmp_path / "model" / "saved_model.pb").exists()


def test_strategy_follows_the_devices():
    import tensorflow as tf

    from conveyor.train.train import choose_strategy

    class Device:
        name = "/device:GPU:0"

    assert choose_strategy([]) is tf.distribute.get_strategy()
    one = choose_strategy([Device()])
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.extended.worker_devices == ("/job:localhost/replica:0/task:0/device:GPU:0",)


def test_date_parts_match_python_calendar():
    import datetime

    import tensorflow as tf

    from conveyor.train.preprocess import DateParts

    days = [datetime.date(1970, 1, 1), datetime.date(2000, 2, 29), datetime.date(2024, 12, 31),
            datetime.date(1899, 3, 1)]
    layer = DateParts({"days_mean": 0.0, "days_std": 1.0})
    text = [d.isoformat() for d in days] + ["2021-06-30 17:45:00", "", "not a date"]
    z, month, weekday, hour = layer(tf.constant(text))
    z = z.numpy().reshape(-1)
    for i, d in enumerate(days):
        assert z[i] == (d - datetime.date(1970, 1, 1)).days
        assert month.numpy()[i] == d.month and weekday.numpy()[i] == d.isoweekday()
    assert hour.numpy()[4] == 18 and month.numpy()[5] == 0 and weekday.numpy()[6] == 0


def test_a_diverging_loss_stops_training_with_its_likely_cause(tmp_path):
    import pyarrow as pa

    from conveyor.errors import TrainingError
    from conveyor.train.train import train

    table = pa.table({"x": [float(i) for i in range(200)],
                      "y": [float(i) * 1e17 for i in range(200)]})
    ds = write_dataset(tmp_path / "ds", table)
    spec = FeatureSpec.from_dict({"label": "y", "task": "regression",
                                  "features": {"x": {"kind": "numeric", "transform": "none"}}})
    fit(Dataset(ds), spec).write(tmp_path / "t")
    with pytest.raises(TrainingError, match="loss became"):
        train(ds, tmp_path / "t", tmp_path / "model",
              hparams={"epochs": 3, "batch_size": 32, "learning_rate": 1e6})
    assert not (tmp_path / "model").exists()
