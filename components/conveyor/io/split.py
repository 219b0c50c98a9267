"""Deterministic hash splits, computed the same way inside BigQuery and in Python.

Each row gets a bucket in [0, 10000): `ABS(MOD(FARM_FINGERPRINT(key), 10000))`, where `key` is
`CAST(<split_key column> AS STRING)`. Splits take consecutive bucket ranges in the order given
(train 0.8, eval 0.2: buckets 0-7999 are train, 8000-9999 eval), so a row keeps its split across
runs and as the table grows, and BigQuery ingest and file ingest agree on every row with the same
key. `fingerprint_buckets` reproduces BigQuery's FARM_FINGERPRINT in Python
(farmhash Fingerprint64, read as a signed 64-bit integer).

Without a split key, the row's content is hashed: in BigQuery, its columns cast to STRING and
joined with '|'; in files, pandas' row hash of its values. Deterministic for the same data, but
the two sources then do not assign the same rows to the same splits (nor, for FLOAT64 columns,
need the emulator and BigQuery, whose float formatting may differ): name a key column for that.

**Validation rows held out of the train split** (`Holdout`, used by train): early stopping, the
best epoch and the learning-rate schedule are decided on rows carved out of the train split,
never on the eval split that evaluate scores. With a split key, a train row is held out when the
second bucket of the same fingerprint, `ABS(MOD(DIV(FARM_FINGERPRINT(key), 10000), 10000))`
(the fingerprint's next four decimal digits: independent of its split bucket), is below the
holdout's upper bound; a reader can list those rows in BigQuery with that expression. Without a
key, the same bucket of a hash of the row's content (every column, a value's hash independent of
how the rows are batched). The share held out is sized to the train split (`holdout_fraction`):
20 % of a small one (up to 10,000 rows), about 2,000 rows above that, 10 % from 20,000 rows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from conveyor.errors import InputError, SchemaError
from conveyor.gcp.sql import check_identifier, quote_column
from conveyor.io.dataset import DatasetInfo, check_split_names

BUCKETS = 10_000
SPLIT_COLUMN = "__conveyor_split"
#: Columns conveyor adds while ingesting; a source may not have them, in any case.
BUCKET_COLUMN = "__conveyor_bucket"
RESERVED_COLUMNS = (SPLIT_COLUMN, BUCKET_COLUMN)
DEFAULT_RATIOS: dict[str, float] = {"train": 0.8, "eval": 0.2}
#: Split order when ratios come as an unordered mapping (KFP dict parameters).
_CANONICAL_ORDER = ("train", "eval", "test")
#: Contract types a split key may have: their CAST(... AS STRING) is the same in SQL and Python.
KEY_TYPES = ("int64", "string")


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """Named splits and the bucket range each takes; build with `SplitSpec.parse`."""

    names: tuple[str, ...]
    upper: tuple[int, ...]  # exclusive upper bucket of each split, the last one is BUCKETS
    key: str | None = None

    @classmethod
    def parse(cls, ratios: Mapping[str, float] | None = None, key: str | None = None) -> SplitSpec:
        ratios = dict(DEFAULT_RATIOS if not ratios else ratios)
        def order(n: str) -> tuple[int, str]:
            rank = _CANONICAL_ORDER.index(n) if n in _CANONICAL_ORDER else len(_CANONICAL_ORDER)
            return rank, n

        names = sorted(ratios, key=order)
        check_split_names(names, "split_ratios")
        values = []
        for name in names:
            value = ratios[name]
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value <= 0):
                raise InputError(f"split_ratios: ratio of {name!r} must be a positive number, "
                                 f"got {value!r}")
            values.append(float(value))
        if abs(sum(values) - 1.0) > 1e-6:
            raise InputError(f"split_ratios: ratios must sum to 1, got {sum(values):g} ({ratios})")
        upper, acc = [], 0.0
        for v in values:
            acc += v
            upper.append(round(acc * BUCKETS))
        upper[-1] = BUCKETS
        for name, lo, hi in zip(names, [0, *upper[:-1]], upper):
            if hi <= lo:
                raise InputError(f"split_ratios: ratio of {name!r} is below 1/{BUCKETS}")
        key = key.strip() if key else None
        if key:
            check_identifier(key, "split_key")
        return cls(tuple(names), tuple(upper), key or None)

    def describe(self) -> dict:
        lower = [0, *self.upper[:-1]]
        return {
            "method": "ABS(MOD(FARM_FINGERPRINT(key), 10000))",
            "key": self.key or "<row content>",
            "buckets": {n: [lo, hi] for n, lo, hi in zip(self.names, lower, self.upper)},
        }

    # -- BigQuery -----------------------------------------------------------------------------

    def sql_bucket(self, columns: Sequence[str], where: str = "source") -> str:
        """The bucket of each row; without a key, of its `columns` (the names BigQuery reported
        for the source in `where`) cast to strings and joined."""
        parts = ([f"`{check_identifier(self.key, 'split_key')}`"] if self.key
                 else [quote_column(c, where) for c in columns])
        items = [f"IFNULL(CAST({c} AS STRING), '')" for c in parts]
        # ARRAY_TO_STRING, not CONCAT(a, '|', b, ...): the same string (so the same splits), and
        # the emulator (bqemulator 1.4) fails a CONCAT of more than ~30 arguments (tables of
        # over ~15 columns) with a bogus "Not found: Dataset" / "Catalog Error".
        key = items[0] if len(items) == 1 else f"ARRAY_TO_STRING([{', '.join(items)}], '|')"
        return f"ABS(MOD(FARM_FINGERPRINT({key}), {BUCKETS}))"

    def sql_split(self, bucket: str) -> str:
        whens = " ".join(
            f"WHEN {bucket} < {hi} THEN '{name}'" for name, hi in zip(self.names[:-1], self.upper)
        )
        return f"CASE {whens} ELSE '{self.names[-1]}' END" if whens else f"'{self.names[0]}'"

    # -- Python -------------------------------------------------------------------------------

    def assign(self, batch: pa.RecordBatch) -> np.ndarray:
        """The index into `names` of each row's split."""
        if self.key:
            buckets = fingerprint_buckets(batch.column(self.key))
        else:
            import pandas as pd

            hashes = pd.util.hash_pandas_object(batch.to_pandas(), index=False).to_numpy(np.uint64)
            buckets = (hashes % np.uint64(BUCKETS)).astype(np.int64)
        return np.searchsorted(np.asarray(self.upper), buckets, side="right")

    def check_key_type(self, schema: pa.Schema, where: str) -> None:
        if not self.key:
            return
        from conveyor.io.dataset import contract_type

        if self.key not in schema.names:
            like = [n for n in schema.names if n.casefold() == self.key.casefold()]
            hint = f"; column names are matched exactly: did you mean {like[0]!r}?" if like else ""
            raise InputError(f"split_key: {where} has no column {self.key!r} "
                             f"(columns: {', '.join(schema.names)}){hint}")
        ctype = contract_type(schema.field(self.key).type)
        if ctype not in KEY_TYPES:
            raise SchemaError(
                f"split_key: column {self.key!r} of {where} has type "
                f"{ctype or schema.field(self.key).type}; "
                f"a split key must be one of {', '.join(KEY_TYPES)} (cast it in the query)"
            )


def fingerprint_buckets(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """`ABS(MOD(FARM_FINGERPRINT(CAST(v AS STRING)), 10000))` for each value (NULL -> bucket of
    '')."""
    import farmhash

    strings = values.cast(pa.string()).fill_null("").to_pylist()
    fingerprints = np.fromiter((farmhash.fingerprint64(s) for s in strings),
                               dtype=np.uint64, count=len(strings)).view(np.int64)
    return np.abs(np.fmod(fingerprints, BUCKETS))


def _truncated_div(values: np.ndarray, divisor: int) -> np.ndarray:
    """BigQuery's DIV of int64 values: the quotient rounded toward zero (numpy's // floors)."""
    quotient = values // divisor
    return np.where((values < 0) & (values % divisor != 0), quotient + 1, quotient)


def second_buckets(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """`ABS(MOD(DIV(FARM_FINGERPRINT(CAST(v AS STRING)), 10000), 10000))` for each value (NULL ->
    that of ''): the bucket a holdout takes rows by, independent of `fingerprint_buckets`."""
    import farmhash

    strings = values.cast(pa.string()).fill_null("").to_pylist()
    fingerprints = np.fromiter((farmhash.fingerprint64(s) for s in strings),
                               dtype=np.uint64, count=len(strings)).view(np.int64)
    return np.abs(np.fmod(_truncated_div(fingerprints, BUCKETS), BUCKETS))


_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit reaches every output bit."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _column_hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A uint64 per value that depends on the value alone (its type's canonical form: not on
    the batch it came in, as pandas' object hashing of a NULL-bearing int column would)."""
    import pandas as pd

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = column.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        values = column.fill_null("").to_numpy(zero_copy_only=False).astype(object)
        hashes = pd.util.hash_array(values, categorize=False)
    elif pa.types.is_floating(t):
        floats = column.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        hashes = _mix((floats + 0.0).view(np.uint64))  # + 0.0: -0.0 is 0.0
    else:  # int64, bool, date, timestamp: as whole numbers
        if pa.types.is_date(t):
            column = column.cast(pa.int32())
        elif pa.types.is_timestamp(t):
            column = column.cast(pa.int64())
        whole = column.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        hashes = _mix(whole.view(np.uint64))
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    return np.where(nulls, _NULL_HASH, hashes).astype(np.uint64)


def content_buckets(batch: pa.RecordBatch) -> np.ndarray:
    """The holdout bucket of each row of `batch` from its content: a hash of every column's
    value (`_column_hashes`), combined in column order, its next four decimal digits."""
    h = np.zeros(batch.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in batch.columns:
            h = _mix(h * np.uint64(1_000_003) ^ _column_hashes(column))
    return ((h // np.uint64(BUCKETS)) % np.uint64(BUCKETS)).astype(np.int64)


def holdout_fraction(rows: int) -> float:
    """The share of a `rows`-row train split held out for validation: 20 % of a small split
    (its validation loss is noisy: every row counts), about 2,000 rows from 10,000 rows, 10 %
    from 20,000 rows (enough rows for a precise loss; the rest trains)."""
    return min(0.2, max(0.1, 2000 / max(rows, 1)))


@dataclasses.dataclass(frozen=True)
class Holdout:
    """The rows of a train split held out for validation: those whose holdout bucket (see the
    module) is below `upper`. Build with `Holdout.of`."""

    upper: int  # held out: bucket < upper, of BUCKETS
    key: str | None  # the split key, or None: the row's content
    columns: tuple[str, ...]  # the columns the bucket is computed from

    @classmethod
    def of(cls, info: DatasetInfo, split: str = "train") -> Holdout:
        """The holdout of `info`'s `split`: by the split key the Dataset was ingested with
        (when it still has that column), else by row content; its size from the split's rows."""
        names = [c.name for c in info.columns]
        split_source = info.source.get("split") if isinstance(info.source, Mapping) else None
        key = split_source.get("key") if isinstance(split_source, Mapping) else None
        key = key if isinstance(key, str) and key in names else None
        rows = info.splits[split].rows if split in info.splits else 0
        upper = max(1, round(holdout_fraction(rows) * BUCKETS))
        return cls(upper, key, (key,) if key else tuple(names))

    @property
    def fraction(self) -> float:
        return self.upper / BUCKETS

    def buckets(self, batch: pa.RecordBatch) -> np.ndarray:
        """The holdout bucket of each row of `batch` (which has `columns`)."""
        if self.key:
            return second_buckets(batch.column(self.key))
        return content_buckets(batch.select(list(self.columns)))

    def held_out(self, batch: pa.RecordBatch) -> np.ndarray:
        """True for each row of `batch` held out for validation."""
        return self.buckets(batch) < self.upper

    def describe(self) -> dict:
        """What a reader needs to list the rows held out (recorded in train's outputs)."""
        if self.key:
            rule = (f"ABS(MOD(DIV(FARM_FINGERPRINT(CAST(`{self.key}` AS STRING)), {BUCKETS}), "
                    f"{BUCKETS})) < {self.upper}")
        else:
            rule = (f"conveyor.io.split.content_buckets(row) < {self.upper} (a hash of every "
                    "column's value)")
        return {"rule": rule, "key": self.key or "<row content>", "buckets": [0, self.upper],
                "fraction": self.fraction}
