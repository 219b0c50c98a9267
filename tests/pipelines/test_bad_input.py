"""A corpus of bad input, one test per case, each run through the steps' own task functions in
pipeline order (ingest -> validate -> transform -> train -> evaluate -> push) into a fresh model
base path in the emulated GCS.

Each case asserts the exact error class, that the message names the culprit (table, column,
file, parameter) and what was expected, and that no version was pushed. The control,
`test_clean_input_is_pushed`, runs the same chain on good data and sees version 1 appear, so
"nothing was pushed" is a claim the harness could have failed. Where a case has to get past the
data checks to reach the step under test, it runs validate with `policy="warn"` and says so.
One case runs the whole training pipeline under kfp.local to show the pipeline, too, stops
cleanly.

Names in SQL: a table, a split key, a query parameter or a second statement in `query` that
carries SQL is refused or stays a value; `bad_input.victim` is checked after each attempt.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support import PENGUINS_SUITE, write_dataset

from conveyor import gcp
from conveyor.errors import EmptyDataError, InputError, SchemaError, SourceNotFoundError
from conveyor.io.split import fingerprint_buckets
from conveyor.local import seed
from conveyor.model.infra import InfraCheckFailed
from conveyor.registry import ModelBasePath
from conveyor.validate.validate import ValidationFailed

pytestmark = pytest.mark.local

HPARAMS = {"epochs": 3, "batch_size": 32, "learning_rate": 0.01}
SUITE = PENGUINS_SUITE
VICTIM = "bad_input.victim"
TEN_MB = 10 << 20
# bench/fail_fast.py sets this to a file: each refused case appends the step that failed and the
# seconds from that step's start to the error (measured there, never asserted here).
STEP_TIMES = os.environ.get("CONVEYOR_BENCH_STEP_TIMES", "")
_step = {"name": "", "started": 0.0}


def _starting(name: str) -> None:
    _step.update(name=name, started=time.monotonic())


# -- the chain -------------------------------------------------------------------------------

def run_pipeline(root: Path, base: str, *, ingest: dict | None = None, gcs: dict | None = None,
                 table: pa.Table | None = None, splits: dict[str, pa.Table] | None = None,
                 dataset: Path | None = None, preprocessing: Path | None = None,
                 model: Path | None = None, label: str = "species", suite: str = "",
                 feature_spec: str = "", policy: str = "fail", module_file: str = "") -> None:
    """The training pipeline's steps by their task functions, in its order; artifacts under
    `root`. A step runs unless its output is given (`dataset`, `preprocessing`, `model`)."""
    from kfp import dsl

    from conveyor.evaluate import tasks as evaluate
    from conveyor.ingest import tasks as ingest_tasks
    from conveyor.push import tasks as push
    from conveyor.train import tasks as train
    from conveyor.transform import tasks as transform
    from conveyor.validate import tasks as validate

    def out(kind, name):
        return kind(uri=str(root / name))

    if dataset is None:
        data = out(dsl.Dataset, "dataset")
        if ingest is not None:
            _starting("ingest")
            ingest_tasks.bigquery_ingest(data, out(dsl.Metrics, "ingest-metrics"), **ingest)
        elif gcs is not None:
            _starting("ingest")
            ingest_tasks.gcs_ingest(data, out(dsl.Metrics, "ingest-metrics"), **gcs)
        elif splits is not None:
            write_splits(Path(data.path), splits)
        else:
            write_dataset(data.path, table)
    else:
        data = dsl.Dataset(uri=str(dataset))
    statistics = None
    if preprocessing is None:
        statistics = out(dsl.Artifact, "statistics")
        _starting("validate")
        validate.validate(data, out(dsl.HTML, "validate-report"), out(dsl.Metrics, "validate-m"),
                          statistics, out(dsl.Artifact, "suite"), suite_uri=suite,
                          policy=policy, label_column=label)
        fitted = out(dsl.Artifact, "preprocessing")
        _starting("transform")
        # as the training pipeline wires it: fitted on validate's statistics, no second pass
        transform.transform(data, fitted, label=label, feature_spec_uri=feature_spec,
                            statistics=statistics)
    else:
        fitted = dsl.Artifact(uri=str(preprocessing))
    if model is None:
        trained = out(dsl.Model, "model")
        _starting("train")
        train.train(data, fitted, trained, out(dsl.Metrics, "train-m"),
                    out(dsl.Artifact, "tensorboard"), hyperparameters=HPARAMS,
                    module_file=module_file)
    else:
        trained = dsl.Model(uri=str(model))
    evaluation = out(dsl.Artifact, "evaluation")
    _starting("evaluate")
    blessed = evaluate.evaluate(trained, data, evaluation, out(dsl.Metrics, "evaluate-m"),
                                out(dsl.ClassificationMetrics, "roc"),
                                out(dsl.Markdown, "evaluate-report"), model_base_path=base)
    if blessed:
        _starting("push")
        push.push(trained, evaluation, data, out(dsl.Artifact, "pushed"),
                  out(dsl.Markdown, "summary"), model_base_path=base, statistics=statistics)


@pytest.fixture()
def base(bucket, tmp_path) -> str:
    """A fresh model base path in the emulated GCS."""
    return f"gs://{bucket('bad-input')}/{tmp_path.name}/penguins"


def refused(tmp_path: Path, base: str, error: type, *words: str, **chain) -> str:
    """Run the chain; it must raise exactly `error` naming `words`, and push nothing."""
    _step.update(name="", started=0.0)
    with pytest.raises(error) as raised:
        run_pipeline(tmp_path / "run", base, **chain)
    if STEP_TIMES and _step["name"]:
        with open(STEP_TIMES, "a") as f:
            f.write(json.dumps({"case": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                                "step": _step["name"], "error": type(raised.value).__name__,
                                "seconds": round(time.monotonic() - _step["started"], 3)}) + "\n")
    assert type(raised.value) is error, f"{type(raised.value).__name__}: {raised.value}"
    message = str(raised.value)
    for word in words:
        assert word in message
    assert ModelBasePath(base).versions() == []
    return message


def suite_for_splits(folder: Path) -> str:
    """The hand-written penguins suite, its row minimum lowered to what an eval split holds."""
    path = folder / "penguins_suite.yaml"
    path.write_text(SUITE.read_text().replace("min_rows: 100", "min_rows: 50"))
    return str(path)


def write_splits(path: Path, splits: dict[str, pa.Table]) -> Path:
    from conveyor.io import DatasetWriter

    first = next(iter(splits.values()))
    with DatasetWriter(path, first.schema, list(splits), {"type": "test"}) as writer:
        for name, rows in splits.items():
            writer.write(name, rows)
    return path


def replaced(table: pa.Table, column: str, values: list, kind: pa.DataType | None = None):
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(values, kind or table.schema.field(column).type))


def victim_rows() -> int:
    client = gcp.bigquery_client()
    return list(client.query(f"SELECT COUNT(*) AS n FROM {VICTIM}").result())[0]["n"]


def run_sql(sql: str) -> None:
    gcp.bigquery_client().query(sql).result()


@pytest.fixture(scope="module")
def bq(penguins):
    """Tables of dataset `bad_input`: a victim for injection attempts, and the bad sources."""
    gcp.bigquery_client().create_dataset("bad_input", exists_ok=True)
    run_sql(f"CREATE OR REPLACE TABLE {VICTIM} AS SELECT id FROM UNNEST([1, 2, 3]) AS id")
    run_sql("CREATE OR REPLACE TABLE bad_input.empty (id INT64, species STRING)")
    run_sql(f"CREATE OR REPLACE TABLE bad_input.typed AS SELECT * EXCEPT (body_mass_g), "
            f"CAST(body_mass_g AS STRING) AS body_mass_g FROM {penguins}")
    run_sql(f"CREATE OR REPLACE TABLE bad_input.null_label AS SELECT * EXCEPT (species), "
            f"CAST(NULL AS STRING) AS species FROM {penguins}")
    run_sql(f"CREATE OR REPLACE TABLE bad_input.quoted AS SELECT species AS `spe'cies`, "
            f"island AS `the \"island\"`, bill_length_mm FROM {penguins}")
    return penguins


# -- control ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_clean_input_is_pushed(bq, tmp_path, base):
    run_pipeline(tmp_path / "run", base, ingest={"table": bq}, suite=suite_for_splits(tmp_path))
    assert ModelBasePath(base).versions() == [1]


# -- sources ---------------------------------------------------------------------------------

def test_missing_table(bq, tmp_path, base):
    refused(tmp_path, base, SourceNotFoundError,
            "table: BigQuery table conveyor-test.bad_input.no_such_table not found",
            ingest={"table": "bad_input.no_such_table"})
    assert not (tmp_path / "run" / "dataset").exists()


def test_empty_table(bq, tmp_path, base):
    refused(tmp_path, base, EmptyDataError, "table conveyor-test.bad_input.empty",
            "the result has no rows", ingest={"table": "bad_input.empty"})


# -- types -----------------------------------------------------------------------------------

@pytest.mark.parametrize("declared_in, error, words", [
    ("suite", ValidationFailed, ["column 'body_mass_g': type is float64: type is string"]),
    ("feature spec", SchemaError, ["feature 'body_mass_g' is numeric",
                                   "holds string values", "takes int64 or float64"]),
    ("label of a regression spec", SchemaError, ["a regression label must be numeric",
                                                 "'species' holds string values"]),
])
def test_column_declared_numeric_holds_strings(bq, tmp_path, base, declared_in, error, words):
    """`bad_input.typed` holds body_mass_g as STRING; the suite or the spec says numeric."""
    chain: dict = {"ingest": {"table": "bad_input.typed"}}
    if declared_in == "suite":
        chain["suite"] = str(SUITE)
    else:
        spec = ({"label": "species", "task": "multiclass",
                 "features": {"body_mass_g": {"kind": "numeric"}}}
                if declared_in == "feature spec" else
                {"label": "species", "task": "regression",
                 "features": {"island": {"kind": "categorical"}}})
        (tmp_path / "spec.yaml").write_text(json.dumps(spec))
        chain.update(feature_spec=str(tmp_path / "spec.yaml"), policy="warn")
    refused(tmp_path, base, error, *words, **chain)


def test_numeric_column_holding_strings_in_a_later_file(stack, tmp_path, base):
    """CSV files: the first makes body_mass_g a float column, the second holds a word in it."""
    import pyarrow.csv as pcsv

    bucket = gcp.storage_client().bucket(base[5:].split("/")[0])
    prefix = f"{tmp_path.name}/csv"
    table = seed.penguins()
    for i, part in enumerate((table.slice(0, 200), table.slice(200))):
        if i == 1:
            part = replaced(part, "body_mass_g", ["heavy", *map(str, part.column(
                "body_mass_g").to_pylist()[1:])], pa.string())
        sink = pa.BufferOutputStream()
        pcsv.write_csv(part, sink)
        bucket.blob(f"{prefix}/part-{i}.csv").upload_from_string(sink.getvalue().to_pybytes())
    refused(tmp_path, base, SchemaError, f"gs://{bucket.name}/{prefix}/part-1.csv",
            "column 'body_mass_g' (int64)", "invalid value 'heavy'",
            gcs={"uris": f"gs://{bucket.name}/{prefix}/*.csv"})


# -- labels ----------------------------------------------------------------------------------

def test_all_null_label(bq, tmp_path, base):
    refused(tmp_path, base, InputError, "label_column: 'species' is NULL in all",
            "nothing to learn from", ingest={"table": "bad_input.null_label"})


@pytest.mark.parametrize("policy, error, words", [
    ("fail", ValidationFailed, ["[eval] column 'species': label classes are in split 'train'",
                                "'Chinstrap': 68 rows, none in 'train'"]),
    ("warn", SchemaError, ["split 'eval' has label class(es) ['Chinstrap'] of 'species'",
                           "not seen in 'train'"]),
])
def test_eval_label_class_unseen_in_training(stack, tmp_path, base, policy, error, words):
    """Under policy fail validate stops it (no random split leaves 68 rows of a class out of
    train); under warn, transform does (conveyor.validate.labels)."""
    table = seed.penguins()
    chinstrap = pc.equal(table.column("species"), "Chinstrap")
    splits = {"train": table.filter(pc.invert(chinstrap)), "eval": table.filter(chinstrap)}
    refused(tmp_path, base, error, *words, splits=splits, policy=policy)


def test_nan_and_infinite_regression_label(stack, tmp_path, base):
    """Before: the loss went NaN, training 'succeeded' and evaluate blessed an RMSE of NaN."""
    table = seed.penguins()
    mass = table.column("body_mass_g").to_pylist()
    mass[:3] = [float("nan"), float("inf"), float("-inf")]
    refused(tmp_path, base, SchemaError,
            "regression label 'body_mass_g' is NaN, infinite or beyond float32", "in 3 of",
            "a label must be a finite number a model can hold, or NULL",
            table=replaced(table, "body_mass_g", mass), label="body_mass_g", policy="warn")


# -- values ----------------------------------------------------------------------------------

def test_nan_and_infinite_feature_values(stack, tmp_path, base):
    """NaN is a missing value (imputed, as NULL); +-inf is refused by the inferred suite."""
    table = seed.penguins()
    bill = table.column("bill_length_mm").to_pylist()
    bill[:6] = [float("nan"), float("inf"), float("-inf")] * 2
    message = refused(tmp_path, base, ValidationFailed, "column 'bill_length_mm'",
                      "expect_column_values_to_be_between",
                      table=replaced(table, "bill_length_mm", bill))
    assert "inf" in message


def test_ten_megabyte_string(bq, tmp_path, base):
    """A 10 MB value streams through ingest; the suite names it without copying it around.
    (A hand-written suite, which is strict as written: an inferred one reports a value new to
    the eval split as drift, with figures, and does not stop the run.)"""
    table = seed.penguins()
    table = table.append_column("id", pa.array(range(table.num_rows), pa.int64()))
    row = next(i for i, b in enumerate(fingerprint_buckets(table.column("id"))) if b >= 8000)
    sex = table.column("sex").to_pylist()
    sex[row] = "x" * TEN_MB
    seed.load_table(replaced(table, "sex", sex), "bad_input.big_string")
    message = refused(tmp_path, base, ValidationFailed,
                      "[eval] column 'sex': expect_column_values_to_be_in_set",
                      f"... ({TEN_MB} characters)",
                      ingest={"table": "bad_input.big_string", "split_key": "id"},
                      suite=suite_for_splits(tmp_path))
    assert len(message) < 10_000
    assert len((tmp_path / "run" / "validate-report").read_bytes()) < 1_000_000


# -- names and SQL ---------------------------------------------------------------------------

@pytest.mark.parametrize("table, error, words", [
    ("bad_input.t; DROP TABLE bad_input.victim", InputError,
     "'bad_input' in 'bad_input.t; DROP TABLE bad_input.victim' is not a valid project id"),
    ("bad_input.victim`; DROP TABLE x; --", InputError,
     "'victim`; DROP TABLE x; --' in 'bad_input.victim`; DROP TABLE x; --' is not a valid "
     "table name"),
    ("bad_input.`t`", InputError, "'`t' in 'bad_input.`t`' is not a valid table name"),
    ("bad_input.tåble", SourceNotFoundError, "BigQuery table conveyor-test.bad_input.tåble "
                                             "not found"),
])
def test_table_names_with_sql_or_unicode(bq, tmp_path, base, table, error, words):
    refused(tmp_path, base, error, "table:", words, ingest={"table": table})
    assert victim_rows() == 3


@pytest.mark.parametrize("parameters, error, words", [
    ({"table": VICTIM, "split_key": "id); DROP TABLE bad_input.victim; --"}, InputError,
     "split_key: 'id); DROP TABLE bad_input.victim; --' is not a valid column name"),
    ({"query": "SELECT * FROM conveyor_demo.penguins WHERE species = @species",
      "query_parameters": {"species": "Adelie'; DROP TABLE bad_input.victim; --"}}, EmptyDataError,
     "query: the result has no rows"),
    ({"query": "SELECT * FROM conveyor_demo.penguins WHERE species = @s",
      "query_parameters": {"s); DROP TABLE bad_input.victim; --": "x"}}, InputError,
     "query_parameters: 's); DROP TABLE bad_input.victim; --' is not a valid column name"),
    ({"query": "SELECT 1 AS a); DROP TABLE bad_input.victim; --"}, InputError,
     "query: a second statement follows the ';' at character 14"),
    ({"query": "SELECT 1 AS a; DROP TABLE bad_input.victim"}, InputError,
     "give a single SELECT query"),
    ({"table": "bad_input.victim", "project": "conveyor-test`.x; DROP TABLE bad_input.victim"},
     InputError, "project: 'conveyor-test`.x; DROP TABLE bad_input.victim' is not a valid"),
])
def test_parameters_carrying_sql_neither_run_nor_change_another_table(
        bq, tmp_path, base, parameters, error, words):
    """A value stays a value (query parameters); a name is validated before it meets SQL; a
    query is one statement. Before the fix, the dry run of `SELECT * FROM (<query>)` for the
    query `SELECT 1 AS a); DROP TABLE bad_input.victim; --` dropped the victim in the emulator."""
    refused(tmp_path, base, error, words, ingest=parameters)
    assert victim_rows() == 3


def test_semicolons_in_strings_and_comments_end_no_statement(bq, tmp_path):
    """The single-statement check is lexical, so a legitimate query is not refused."""
    from conveyor.ingest.bigquery import ingest_bigquery

    query = (f"SELECT *, 'a;b' AS `semi;colon`  # a comment; not a statement\n"
             f"FROM {bq} /* ; */ WHERE species != ';'; -- the end;")
    result = ingest_bigquery(str(tmp_path / "out"), query=query)
    assert result.info.rows == 344
    assert result.info.columns[-1].name == "semi;colon"


def test_label_with_quotes_and_backticks(bq, tmp_path, base):
    refused(tmp_path, base, InputError, "label_column: 'spe`cies\"' is not a column",
            "columns: spe'cies, the \"island\", bill_length_mm",
            ingest={"table": "bad_input.quoted"}, label="spe`cies\"")


def test_columns_with_quotes(bq, tmp_path):
    """Column names with quotes (BigQuery's flexible names) are data: quoted in the split's SQL,
    the table ingests (before: 'not a valid column name'), and as features they feed model
    inputs named by `input_name` (before: refused by transform, and earlier still a Keras 'not a
    valid scope name' mid-fit)."""
    from conveyor.ingest.bigquery import ingest_bigquery
    from conveyor.io import Dataset
    from conveyor.transform.fit import column_statistics, fit
    from conveyor.transform.propose import propose_spec

    ingest_bigquery(str(tmp_path / "dataset"), table="bad_input.quoted")
    data = Dataset(tmp_path / "dataset")
    assert data.schema.names == ["spe'cies", 'the "island"', "bill_length_mm"]
    types = {c.name: c.type for c in data.info.columns}
    stats = column_statistics(data, "train", list(types))
    fitted = fit(data, propose_spec(types, "spe'cies", stats=stats[1]), stats=stats)
    assert fitted.input_of('the "island"') == "the__island_"


# -- suites, specs, modules ------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("columns:\n  species: {type: string\n", ["is neither YAML nor JSON"]),
    ('{"expectations": [{"type": "expect_column_to_be_purple", "kwargs": {"column": "x"}}]}',
     ["expectation #0 (expect_column_to_be_purple) is not valid"]),
    ("columns:\n  body_mass_g: {min: ten}\n", ["column 'body_mass_g': min must be a number",
                                               "'ten'"]),
    ("columns:\n  body_mass_g: {type: FLOAT64}\n", ["type 'FLOAT64' is not one of int64"]),
])
def test_malformed_suite(bq, tmp_path, base, text, words):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    refused(tmp_path, base, InputError, "suite.yaml", *words, ingest={"table": bq},
            suite=str(path))


@pytest.mark.parametrize("text, words", [
    ("label: species\nfeatures: [", ["spec.yaml is neither YAML nor JSON"]),
    ("label: species\ntask: multiclass\nfeatures:\n  island: {kind: categorical, size: 3}\n",
     ["feature 'island': unknown key(s) ['size'] for a categorical feature"]),
    ("label: species\ntask: multiclass\nfeatures:\n  body_mass_g: {kind: numeric, buckets: many}\n",
     ["feature 'body_mass_g' buckets must be a positive integer, got 'many'"]),
    ("label: species\ntask: clustering\nfeatures:\n  island: {kind: categorical}\n",
     ["task 'clustering' is not one of ('binary', 'multiclass', 'regression')"]),
])
def test_malformed_feature_spec(penguin_model, tmp_path, base, text, words):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    refused(tmp_path, base, InputError, *words, dataset=penguin_model / "ds",
            feature_spec=str(path), policy="warn")


@pytest.mark.slow
@pytest.mark.parametrize("source, words", [
    ("import keras\nRATE = 1 / 0\n", ["failed to load: ZeroDivisionError: division by zero"]),
    ("def build_model(hparams, feature_spec):\n    raise KeyError('hidden_units')\n",
     ["build_model of", "raised KeyError: 'hidden_units'"]),
])
def test_module_file_that_raises(penguin_model, tmp_path, base, source, words):
    module = tmp_path / "model_module.py"
    module.write_text(source)
    refused(tmp_path, base, InputError, "module_file:", str(module), *words,
            dataset=penguin_model / "ds",
            preprocessing=penguin_model / "t", module_file=str(module))


# -- models ----------------------------------------------------------------------------------

def test_model_without_a_serving_signature(penguin_model, tmp_path, base):
    import tensorflow as tf

    model = tmp_path / "no-signature"
    tf.saved_model.save(tf.Module(), str(model))
    shutil.copytree(penguin_model / "model" / "assets.extra", model / "assets.extra")
    refused(tmp_path, base, InputError, f"model: {model} has no serving_default signature",
            dataset=penguin_model / "ds", preprocessing=penguin_model / "t", model=model)


@pytest.mark.slow
def test_model_that_fails_its_infra_check_at_push(penguin_model, tmp_path, base):
    """Its signature calls back into Python (`tf.py_function`): it answers in the process that
    saved it, so evaluate blesses it, and fails in a fresh one, as a server would load it."""
    import tensorflow as tf

    holder = tf.Module()
    holder.inner = tf.saved_model.load(str(penguin_model / "model"))
    inner = holder.inner.signatures["serving_default"]

    @tf.function(input_signature=[inner.structured_input_signature[1]])
    def serve(features):
        out = dict(inner(**features))
        probabilities = tf.py_function(lambda p: p, [out["probabilities"]], tf.float32)
        probabilities.set_shape(out["probabilities"].shape)
        return {**out, "probabilities": probabilities}

    model = tmp_path / "py-function"
    tf.saved_model.save(holder, str(model), signatures={"serving_default": serve})
    shutil.copytree(penguin_model / "model" / "assets.extra", model / "assets.extra")
    refused(tmp_path, base, InfraCheckFailed, "push: infra check failed", str(model),
            "does not load and answer in a fresh process", "pyfunc", dataset=penguin_model / "ds",
            preprocessing=penguin_model / "t", model=model)
    evaluation = json.loads((tmp_path / "run" / "evaluation" / "evaluation.json").read_text())
    assert evaluation["blessed"]


# -- the whole pipeline ----------------------------------------------------------------------

@pytest.mark.slow
def test_training_pipeline_stops_cleanly_on_a_malformed_feature_spec(bq, tmp_path, base,
                                                                     kfp_local, capfd):
    from conveyor.pipelines import training

    spec = tmp_path / "spec.yaml"
    spec.write_text("label: species\ntask: multiclass\nfeatures:\n  island: {kind: words}\n")
    with pytest.raises(RuntimeError):
        training.pipeline(table=bq, label="species", feature_spec_uri=str(spec),
                          model_base_path=base, suite_uri=suite_for_splits(tmp_path))
    logs = capfd.readouterr()
    assert "InputError" in logs.out + logs.err
    assert "feature 'island': kind 'words' is not one of" in logs.out + logs.err
    assert ModelBasePath(base).versions() == []
    assert not list(kfp_local.rglob("saved_model.pb"))
