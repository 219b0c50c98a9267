"""bench/quality.py's references: scikit-learn fitted on exactly the train split of a conveyor
run's Dataset and scored on exactly its eval split (rows with a NULL label left out, as evaluate
does).

- linear: LinearRegression and RidgeCV (best of the two on eval: generous to the baseline) or
  LogisticRegression; median imputation + standard scaling of numbers, one-hot encoding of
  strings and bools (missing its own category; above 1,000 levels the train split's 999 most
  frequent are kept and the rest share one column: RidgeCV's cross-validation of 47 k movie
  titles would build a 47 k x 47 k matrix), dates as day numbers;
- HGB: HistGradientBoosting{Regressor,Classifier}, defaults, native categorical support (strings
  and bools as pandas categories; above 250 levels the train split's 250 most frequent are
  kept, the rest missing), dates as day numbers.

Each is scored with the metric conveyor's evaluate reports (RMSE and R², AUC, accuracy), and its
per-row predictions on the eval rows are kept for the paired comparison (bench/quality_paired.py).
They run in a child process with a cap on its memory (`baselines_child`), so a reference that
outgrows the shared machine fails alone, with a MemoryError, instead of waking the OOM killer.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from quality_paired import labels_present

MAX_HGB_LEVELS = 250
MAX_ONEHOT_LEVELS = 1000
MEMORY_LIMIT_BYTES = 12 << 30  # the baselines' child: address space, of the machine's 24 GiB


def _frames(dataset_path: str, label: str):
    """Train and eval splits as pandas (rows without a label left out, in the Dataset's order),
    and each feature's contract type."""
    from conveyor.io import Dataset

    dataset = Dataset(dataset_path)
    types = {c.name: c.type for c in dataset.info.columns}
    frames = []
    for split in ("train", "eval"):
        table = dataset.read_table(split)
        table = table.filter(labels_present(table.column(label)))
        frames.append(table.to_pandas(types_mapper=None))
    return frames[0], frames[1], {k: v for k, v in types.items() if k != label}


def _matrix(frame, types: dict[str, str], categorical_as: str):
    """Features as sklearn takes them: numbers float (NaN), dates day numbers, categories object
    strings ('__missing__') for one-hot, or left for `_hgb_categories`."""
    import numpy as np
    import pandas as pd

    out = {}
    for name, ctype in types.items():
        s = frame[name]
        if ctype in ("int64", "float64"):
            out[name] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif ctype in ("date", "timestamp"):
            days = pd.to_datetime(s, utc=ctype == "timestamp")
            epoch = pd.Timestamp("1970-01-01", tz="UTC" if ctype == "timestamp" else None)
            out[name] = ((days - epoch) / pd.Timedelta(days=1)).astype("float64")
        else:
            values = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                      for v in s.astype(object)]
            out[name] = (np.array(["__missing__" if v is None else v for v in values], dtype=object)
                         if categorical_as == "onehot" else values)
    return pd.DataFrame(out)


def _hgb_categories(train, evaluation, types):
    import pandas as pd

    for name, ctype in types.items():
        if ctype not in ("string", "bool"):
            continue
        counts = pd.Series(train[name]).value_counts()
        levels = list(counts.index[:MAX_HGB_LEVELS])
        for frame in (train, evaluation):
            frame[name] = pd.Categorical(frame[name], categories=levels)
    return train, evaluation


def _predict(task: str, model, x):
    """Per row: the value (regression), the score of classes_[1] (binary) or the label."""
    import numpy as np

    if task == "regression":
        return np.asarray(model.predict(x), dtype="float64")
    if task == "binary":
        return np.asarray(model.predict_proba(x)[:, 1], dtype="float64")
    return np.asarray([str(v) for v in model.predict(x)])


def _score(task: str, y_true, model, x) -> tuple[dict, object]:
    """The metrics of `model` on (x, y_true), and its per-row predictions (`_predict`)."""
    import numpy as np
    from sklearn.metrics import accuracy_score, roc_auc_score

    p = _predict(task, model, x)
    if task == "regression":
        y = np.asarray(y_true, dtype="float64")
        sse = float(np.sum((y - p) ** 2))
        sst = float(np.sum((y - y.mean()) ** 2))
        return {"rmse": math.sqrt(sse / len(y)), "r2": 1 - sse / sst if sst > 0 else 0.0}, p
    labels = [str(v) for v in y_true]
    if task == "binary":
        # AUC of the second class's probability; the same value for either class as positive
        y = np.asarray(labels) == str(model.classes_[1])
        return {"auc": float(roc_auc_score(y, p)),
                "accuracy": float(accuracy_score(labels, [str(v) for v in model.predict(x)]))}, p
    return {"accuracy": float(accuracy_score(labels, p))}, p


def _eval_labels(task: str, y_eval, positive: str | None):
    """The eval labels as the paired comparison takes them (binary: is the positive class)."""
    import numpy as np

    if task == "regression":
        return np.asarray(y_eval, dtype="float64")
    labels = np.asarray([str(v) for v in y_eval])
    return labels == positive if task == "binary" else labels


def sklearn_baselines(dataset_path: str, label: str, task: str) -> tuple[dict, dict]:
    """Best linear model and HistGradientBoosting on the run's exact train/eval split: their
    scores, and the eval rows for the paired comparison ({"y", "linear", "hgb", "positive"})."""
    import warnings

    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, evaluation, types = _frames(dataset_path, label)
    y_train, y_eval = train[label], evaluation[label]
    if task != "regression":
        y_train = np.asarray([str(v) for v in y_train], dtype=object)
    numeric = [n for n, t in types.items() if t in ("int64", "float64", "date", "timestamp")]
    categorical = [n for n in types if n not in numeric]
    x_train, x_eval = _matrix(train, types, "onehot"), _matrix(evaluation, types, "onehot")
    pre = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("categorical", OneHotEncoder(handle_unknown="infrequent_if_exist",
                                      max_categories=MAX_ONEHOT_LEVELS), categorical),
    ])
    out = {"train_rows": len(train), "eval_rows": len(evaluation)}
    rows: dict = {"positive": None}
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the score says what it is
        if task == "regression":
            linear, predictions = {}, {}
            for name, est in (("LinearRegression", LinearRegression()),
                              ("RidgeCV", RidgeCV(alphas=np.logspace(-3, 3, 13)))):
                model = make_pipeline(pre, est).fit(x_train, y_train)
                linear[name], predictions[name] = _score(task, y_eval, model, x_eval)
            best = min(linear, key=lambda k: linear[k]["rmse"])
        else:
            model = make_pipeline(pre, LogisticRegression(max_iter=5000)).fit(x_train, y_train)
            best = "LogisticRegression"
            scores, prediction = _score(task, y_eval, model, x_eval)
            linear, predictions = {best: scores}, {best: prediction}
            rows["positive"] = str(model.classes_[1]) if task == "binary" else None
        out["linear"] = {"model": best, **linear[best], "all": linear}
        rows["linear"] = predictions[best]
        h_train, h_eval = _hgb_categories(_matrix(train, types, "hgb"),
                                          _matrix(evaluation, types, "hgb"), types)
        hgb = (HistGradientBoostingRegressor(random_state=0) if task == "regression" else
               HistGradientBoostingClassifier(random_state=0))
        hgb.set_params(categorical_features="from_dtype")
        hgb.fit(h_train, y_train)
        out["hgb"], rows["hgb"] = _score(task, y_eval, hgb, h_eval)
        if task == "binary" and str(hgb.classes_[1]) != rows["positive"]:
            rows["hgb"] = 1.0 - rows["hgb"]  # both score the same positive class
    out["seconds"] = round(time.monotonic() - started, 1)
    rows["y"] = _eval_labels(task, y_eval, rows["positive"])
    return out, rows


def baselines_child(dataset_path: str, label: str, task: str, out_dir: str) -> int:
    """Child: `sklearn_baselines` under MEMORY_LIMIT_BYTES; writes baselines.json (the scores)
    and baselines.npz (the eval rows: y, linear, hgb)."""
    import resource

    import numpy as np

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(hard,
                                                                          MEMORY_LIMIT_BYTES)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    scores, rows = sklearn_baselines(dataset_path, label, task)
    out = Path(out_dir)
    np.savez(out / "baselines.npz", **{k: rows[k] for k in ("y", "linear", "hgb")})
    (out / "baselines.json").write_text(json.dumps({"scores": scores,
                                                    "positive": rows["positive"]}))
    return 0


def load_baselines(out_dir: str | Path) -> tuple[dict, dict]:
    """baselines_child's output: (the scores, the eval rows as `sklearn_baselines` returns)."""
    import numpy as np

    out = Path(out_dir)
    saved = json.loads((out / "baselines.json").read_text())
    with np.load(out / "baselines.npz") as arrays:
        rows = {k: arrays[k] for k in arrays.files}
    rows["positive"] = saved["positive"]
    return saved["scores"], rows
