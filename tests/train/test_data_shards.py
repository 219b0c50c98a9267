"""Input sharded by worker (disjoint files, row groups or rows) and the custom loop's plateau
rules (early stopping, learning-rate halving) as Keras' callbacks decide them."""

import math

import numpy as np
import pyarrow as pa
import pytest

from conveyor.errors import EmptyDataError
from conveyor.io import Dataset, DatasetWriter
from conveyor.transform.fit import fit
from conveyor.transform.spec import FeatureSpec

pytestmark = pytest.mark.slow  # imports TensorFlow

LABEL = "Ünïcode Label"


def table(rows: int, null_every: int = 0, null_odd: bool = False) -> pa.Table:
    ids = np.arange(rows)
    label = [None if (null_every and i % null_every == 0) or (null_odd and i % 2)
             else ("yes" if i % 3 else "no") for i in ids]
    return pa.table({"select": pa.array(ids.astype(float)), "From": pa.array(ids % 7),
                     LABEL: pa.array(label, pa.string())})


def dataset(tmp_path, rows, shard_rows, row_group_rows, null_every=0, null_odd=False):
    t = table(rows, null_every, null_odd)
    with DatasetWriter(tmp_path / "ds", t.schema, ["train"], {"type": "test"},
                       shard_rows=shard_rows, row_group_rows=row_group_rows) as writer:
        writer.write("train", t)
    ds = Dataset(tmp_path / "ds")
    spec = FeatureSpec.from_dict({"label": LABEL, "task": "binary", "features": {
        "select": {"kind": "numeric"}, "From": {"kind": "categorical"}}})
    fitted = fit(ds, spec)
    return ds, fitted


def ids_read(ds, fitted, index, count, **kw):
    from conveyor.train.data import chunks

    out = []
    for x, _ in chunks(ds, "train", fitted, 64, shard=(index, count), **kw):
        out += x["select"].astype(int).tolist()
    return out


@pytest.mark.parametrize("rows, shard_rows, row_group_rows, workers, kind", [
    (1000, 100, 100, 3, "files"),  # 10 files for 3 workers: uneven, disjoint
    (1000, 1000, 64, 4, "row groups"),  # one file of 16 row groups
    (50, 1000, 1000, 3, "rows"),  # one file, one row group: every 3rd row
    (7, 1000, 1000, 2, "rows"),
])
def test_workers_read_disjoint_parts_that_cover_the_split(tmp_path, rows, shard_rows,
                                                          row_group_rows, workers, kind):
    from conveyor.train.data import shard_parts
    from conveyor.train.data import shard_rows as count_rows

    ds, fitted = dataset(tmp_path, rows, shard_rows, row_group_rows)
    files = list(ds.files("train"))
    parts = [shard_parts(files, i, workers) for i in range(workers)]
    if kind == "files":
        assert all(p.row_groups is None and p.stride == 1 for w in parts for p in w)
    elif kind == "row groups":
        assert all(p.row_groups for w in parts for p in w)
    else:
        assert all(p.stride == workers for w in parts for p in w)
    seen = [ids_read(ds, fitted, i, workers) for i in range(workers)]
    flat = [i for s in seen for i in s]
    assert len(flat) == len(set(flat)) == rows, "a row read twice, or a row never read"
    assert [count_rows(files, i, workers) for i in range(workers)] == [len(s) for s in seen]


def test_shuffled_repeated_passes_stay_inside_the_workers_part(tmp_path):
    ds, fitted = dataset(tmp_path, 600, 100, 50, null_every=5)
    from conveyor.train.data import chunks

    parts = []
    for index in range(2):
        got, passes = set(), 0
        for x, _ in chunks(ds, "train", fitted, 64, shuffle=True, seed=3, repeat=True,
                           shard=(index, 2)):
            got |= set(x["select"].astype(int).tolist())
            passes += 1
            if passes > 40:  # several passes over ~300 rows
                break
        parts.append(got)
    assert not parts[0] & parts[1]
    labelled = {i for i in range(600) if i % 5}  # NULL labels are skipped
    assert parts[0] | parts[1] == labelled


def test_a_worker_with_nothing_to_train_on_is_named(tmp_path):
    from conveyor.train.data import chunks

    # one row group, two workers: rows are striped, and every odd row's label is NULL
    ds, fitted = dataset(tmp_path, 30, 1000, 1000, null_odd=True)
    assert next(iter(chunks(ds, "train", fitted, 8, repeat=True, shard=(0, 2))))[1].size
    with pytest.raises(EmptyDataError, match=r"worker 1 of 2.*no row with a label"):
        next(iter(chunks(ds, "train", fitted, 8, repeat=True, shard=(1, 2))))


def test_single_worker_reads_every_row_in_file_order(tmp_path):
    ds, fitted = dataset(tmp_path, 500, 128, 32)
    assert ids_read(ds, fitted, 0, 1) == list(range(500))


@pytest.mark.parametrize("validation_rows, rows, every", [
    (0, 10_000, 1), (1_000_000, 10_000, 1), (10_000, 10_000, 1), (2_500, 10_000, 4),
    (3_000, 10_000, 4), (1_000_000, 3_335_275, 4)])
def test_validation_samples_only_a_split_bigger_than_validation_rows(validation_rows, rows,
                                                                    every):
    from conveyor.train.data import sample_every

    assert sample_every(rows, validation_rows) == every


def test_the_validation_sample_is_spread_over_the_whole_split(tmp_path):
    """1 row group in 4, from the first file to the last (not the split's first rows), each
    row once; workers share it out without overlap."""
    from conveyor.train.data import sample_parts

    ds, fitted = dataset(tmp_path, 4096, 1024, 64)  # 4 files of 16 row groups of 64 rows
    files = list(ds.files("train"))
    sample = ids_read(ds, fitted, 0, 1, every=4)
    assert len(sample) == len(set(sample)) == 1024
    groups = sorted({i // 64 for i in sample})
    assert groups == list(range(2, 64, 4))  # evenly spaced, in all 4 files
    assert {p.file for p in sample_parts(files, 4)} == set(files)
    by_worker = [ids_read(ds, fitted, i, 3, every=4) for i in range(3)]
    flat = [i for w in by_worker for i in w]
    assert all(by_worker) and sorted(flat) == sorted(sample)


def test_a_split_with_few_row_groups_is_sampled_by_rows(tmp_path):
    ds, fitted = dataset(tmp_path, 100, 1000, 1000)  # one row group
    assert ids_read(ds, fitted, 0, 1, every=5) == list(range(0, 100, 5))
    # two workers: 1 row in 10 each, side by side: disjoint, 1 row in 5 together
    assert [ids_read(ds, fitted, i, 2, every=5) for i in range(2)] == [
        list(range(0, 100, 10)), list(range(1, 100, 10))]


def test_a_validation_sample_without_labels_falls_back_to_the_whole_holdout(tmp_path):
    """The labels are NULL in exactly the row groups a 1-in-4 sample picks: validation reads
    the whole holdout rather than switching itself off."""
    from conveyor.io.split import Holdout
    from conveyor.train.data import plan_validation

    t = table(20_000)
    label = [None if (i // 64) % 4 == 2 else v for i, v in enumerate(t.column(LABEL).to_pylist())]
    t = t.set_column(2, LABEL, pa.array(label, pa.string()))
    with DatasetWriter(tmp_path / "ds", t.schema, ["train"], {"type": "test"},
                       shard_rows=4096, row_group_rows=64) as writer:
        writer.write("train", t)
    ds = Dataset(tmp_path / "ds")
    fitted = fit(ds, FeatureSpec.from_dict({"label": LABEL, "task": "binary", "features": {
        "select": {"kind": "numeric"}}}))
    holdout = Holdout.of(ds.info)
    held = holdout.held_out(pa.record_batch(t.select(list(holdout.columns)).to_batches()[0]))
    labelled = np.array([v is not None for v in label])
    whole = plan_validation(ds, "train", fitted, 0)
    assert (whole.every, whole.labelled) == (1, int((held & labelled).sum()))
    assert whole.training_rows == 20_000 - int(held.sum())
    sampled = plan_validation(ds, "train", fitted, 500)  # 1 row group in 4 would have none
    assert (sampled.every, sampled.labelled) == (1, whole.labelled)


def read_side(ds, fitted, holdout, held_out, index=0, count=1, every=1):
    from conveyor.train.data import chunks

    return [i for x, _ in chunks(ds, "train", fitted, 64, shard=(index, count), every=every,
                                 holdout=holdout, held_out=held_out)
            for i in x["select"].astype(int).tolist()]


@pytest.mark.parametrize("shard_rows, row_group_rows, workers", [
    (100, 100, 3), (1000, 64, 4), (1000, 1000, 3)])
def test_training_and_validation_rows_split_the_train_rows_on_any_number_of_workers(
        tmp_path, shard_rows, row_group_rows, workers):
    """The rows held out (validation) and the others (training) are disjoint and together
    every labelled train row, on one worker or several: each worker keeps its side of its own
    part, by the same rule, so the workers' validation rows are one worker's."""
    from conveyor.io.split import Holdout, content_buckets

    ds, fitted = dataset(tmp_path, 1000, shard_rows, row_group_rows, null_every=9)
    holdout = Holdout.of(ds.info)
    assert holdout.key is None and holdout.upper == 2000  # 1,000 rows: 20 %, by content
    validation, training = (read_side(ds, fitted, holdout, True),
                            read_side(ds, fitted, holdout, False))
    labelled = [i for i in range(1000) if i % 9]
    assert not set(validation) & set(training)
    assert sorted(validation + training) == labelled
    rows = table(1000, null_every=9)
    want = np.flatnonzero(content_buckets(rows.to_batches()[0]) < 2000)
    assert validation == [i for i in want.tolist() if i % 9]
    assert 150 < len(validation) < 250
    shares = [read_side(ds, fitted, holdout, True, i, workers) for i in range(workers)]
    assert all(shares) and sorted(i for s in shares for i in s) == sorted(validation)
    trained = [read_side(ds, fitted, holdout, False, i, workers) for i in range(workers)]
    assert sorted(i for s in trained for i in s) == sorted(training)


def test_a_big_holdout_is_validated_on_a_spread_sample(tmp_path):
    from conveyor.io.split import Holdout

    ds, fitted = dataset(tmp_path, 4096, 1024, 64)  # 4 files of 16 row groups of 64 rows
    holdout = Holdout.of(ds.info)
    every_row = read_side(ds, fitted, holdout, True)
    sample = read_side(ds, fitted, holdout, True, every=4)
    assert set(sample) < set(every_row)
    assert sorted({i // 64 for i in sample}) == list(range(2, 64, 4))  # in all 4 files
    assert sample == [i for i in every_row if (i // 64) % 4 == 2]


def plateau(patience=4, lr=0.01):
    from conveyor.train.epochs import Plateau

    return Plateau(patience, lr, lr / 32, lr_patience=max(2, patience // 2))


def test_plateau_stops_after_patience_epochs_without_improvement():
    p = plateau(patience=3)
    losses = [1.0, 0.8, 0.81, 0.8, 0.79, 0.9, 0.9, 0.9]
    stops = [p.update(e, v) for e, v in enumerate(losses)]
    # 0.79 at epoch 4 is the last improvement: stop at the third epoch after it
    assert stops == [False] * 7 + [True]
    assert p.best == 0.79
    import keras  # Keras' own callback stops at the same epoch

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3)
    callback.set_model(model)
    callback.on_train_begin()
    theirs = []
    for e, v in enumerate(losses):
        model.stop_training = False
        callback.on_epoch_end(e, {"val_loss": v})
        theirs.append(bool(model.stop_training))
    assert stops == theirs


def test_plateau_halves_the_learning_rate_as_keras_does():
    import keras

    losses = [1.0, 0.9, 0.9, 0.89995, 0.95] + [0.7] * 12
    p = plateau(patience=4, lr=0.01)  # learning-rate patience 2
    ours = []
    for e, v in enumerate(losses):
        p.update(e, v)
        ours.append(p.learning_rate)
    # Keras' own callback on the same losses
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    callback = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2,
                                                 min_lr=0.01 / 32, verbose=0)
    callback.set_model(model)
    callback.on_train_begin()
    theirs = []
    for e, v in enumerate(losses):
        callback.on_epoch_end(e, {"val_loss": v})
        theirs.append(float(model.optimizer.learning_rate.numpy()))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours[-1] == pytest.approx(0.01 / 32)  # floored at min_lr


def test_plateau_off_never_stops():
    p = plateau(patience=0)
    assert not any(p.update(e, v) for e, v in enumerate([1.0] * 30 + [math.inf]))
    assert p.learning_rate == 0.01
