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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from conveyor.errors import InputError, SchemaError
from conveyor.gcp.sql import check_identifier, quote_column
from conveyor.io.dataset import check_split_names

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
