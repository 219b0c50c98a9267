"""Run a suite over a Dataset split in bounded memory, with Great Expectations doing the checking.

Great Expectations evaluates a pandas batch. A split is fed to it in chunks of `chunk_rows` rows
(by default as many rows as fill `CHUNK_BYTES` of uncompressed data, by the Parquet metadata:
173 k rows of the reference workload's 72 bytes), and each expectation's results are combined
across chunks according to what it measures:

- row-wise (column map) expectations, e.g. not-null, between, in-set: counts of elements, missing
  and unexpected values are summed, `mostly` is applied to the totals, examples are pooled;
- column-set expectations (table columns match a set or a list, a column exists): the same in every
  chunk, so the first chunk's result stands;
- row count expectations: evaluated by conveyor on the split's exact row count;
- uniqueness on a split of several chunks: counted by conveyor across all of them;
- anything else (aggregates such as a column's mean): run by Great Expectations once on the whole
  split, loading only the columns it names (memory then grows with the split).

Schema checks (types and missing columns of a conveyor spec: `schema_checks`) and a spec's
`finite` rules (`finite_checks`, from the statistics) are conveyor's own. An expectation
whose meta has `conveyor_severity: drift` (an inferred suite's `expected` rules) gives a result of
severity `drift`: reported with its figures, never a failure of the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from conveyor.io.dataset import Dataset
from conveyor.stats.columns import NUMERIC, ColumnStatistics

#: Uncompressed bytes of one chunk. Great Expectations' temporaries are a multiple of the chunk,
#: and what the allocators keep between chunks grows with it: at 512 k rows of the reference
#: workload (36 MB) validate's peak RSS went 589 -> 771 MB from 1 M to 10 M rows; at this size
#: (173 k rows) 541 -> 577 MB, for about twice the time (0.13 s per Great Expectations call).
#: bench/RESULTS.md, "Validate".
CHUNK_BYTES = 12 * 2**20
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 4096, 512 * 1024
MAX_EXAMPLES = 10
MAX_EXAMPLE_CHARS = 80
_SCHEMA_TYPES = {"expect_table_columns_to_match_set", "expect_table_columns_to_match_ordered_list",
                 "expect_column_to_exist", "expect_table_column_count_to_equal",
                 "expect_table_column_count_to_be_between"}
_ROW_COUNT_TYPES = {"expect_table_row_count_to_be_between", "expect_table_row_count_to_equal"}
_UNIQUE = "expect_column_values_to_be_unique"
_INDEX = "conveyor_index"


@dataclasses.dataclass
class CheckResult:
    """One rule checked on one split."""

    split: str
    kind: str  # schema | expectation
    rule: str  # e.g. expect_column_values_to_be_between(min_value=-6, max_value=6)
    column: str | None
    success: bool
    observed: str = ""
    unexpected: int = 0
    examples: list = dataclasses.field(default_factory=list)
    severity: str = "breakage"  # breakage | drift | warning (conveyor.validate.labels)

    @property
    def broken(self) -> bool:
        return not self.success and self.severity == "breakage"

    @property
    def drifted(self) -> bool:
        return not self.success and self.severity == "drift"

    @property
    def warned(self) -> bool:
        """Not met, and only worth a word: never a failure, never drift."""
        return not self.success and self.severity == "warning"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["examples"] = [v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
                           for v in self.examples]
        return out

    def line(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        examples = f"; e.g. {self.examples[:5]}" if self.examples else ""
        return f"[{self.split}] {where}: {self.rule}: {self.observed}{examples}"


def describe(config) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("column", "batch_id")}
    shown = []
    for k, v in kwargs.items():
        if isinstance(v, (list, tuple, set)) and len(v) > 8:
            v = f"[{', '.join(map(repr, list(v)[:8]))}, ... {len(v)} values]"
        shown.append(f"{k}={v}")
    return f"{config.type}({', '.join(shown)})"


def _column_of(config) -> str | None:
    return config.kwargs.get("column")


def columns_named(config) -> list[str]:
    kw = config.kwargs
    names = [kw.get("column"), kw.get("column_A"), kw.get("column_B"),
             *(kw.get("column_list") or [])]
    return [n for n in names if n]


def _domain(config) -> tuple:
    kw = config.kwargs
    return (config.type, kw.get("column"), kw.get("column_A"), kw.get("column_B"),
            tuple(kw.get("column_list") or ()))


def _groups(configs: Sequence) -> list[list[int]]:
    """Indices of `configs` in groups without two expectations of one type on one column: a GX
    suite keeps only the last of such a pair (it replaces an 'equivalent' expectation), so an
    inferred suite's breakage bound and drift range on one column must run in separate suites."""
    groups: list[tuple[set, list[int]]] = []
    for i, config in enumerate(configs):
        key = _domain(config)
        for seen, members in groups:
            if key not in seen:
                seen.add(key)
                members.append(i)
                break
        else:
            groups.append(({key}, [i]))
    return [members for _, members in groups]


class _Runner:
    """Several GX suites over the same frames, results in the order of `configs`."""

    def __init__(self, configs: Sequence, name: str):
        self.groups = _groups(configs)
        self.runners = [_Gx([configs[i] for i in g], f"{name}-{n}")
                        for n, g in enumerate(self.groups)]
        self.size = len(configs)

    def run(self, frame) -> list:
        out: list = [None] * self.size
        for group, runner in zip(self.groups, self.runners):
            results = runner.run(frame)
            if len(results) != len(group):  # never silently pair a result with another rule
                raise RuntimeError(f"Great Expectations returned {len(results)} results for "
                                   f"{len(group)} expectations")
            for i, outcome in zip(group, results):
                out[i] = outcome
        return out


def _is_row_wise(config) -> bool:
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
    )

    return isinstance(config.to_domain_obj(), (ColumnMapExpectation, ColumnPairMapExpectation))


class _Gx:
    """An ephemeral Great Expectations context with one pandas asset, reused for every chunk."""

    def __init__(self, configs: Sequence, name: str):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = self.context.data_sources.add_pandas(f"conveyor-{name}")
        asset = source.add_dataframe_asset("split")
        batch = asset.add_batch_definition_whole_dataframe("chunk")
        suite = gx.ExpectationSuite(name=name)
        for i, config in enumerate(configs):  # tagged: GX may return results in another order
            suite.add_expectation_configuration(type(config)(
                type=config.type, kwargs=dict(config.kwargs),
                meta={**(config.meta or {}), _INDEX: i}))
        suite = self.context.suites.add(suite)
        self.definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite))
        self.configs = list(configs)

    def run(self, frame) -> list:
        """The results in the order of `configs` (GX orders failed evaluations differently)."""
        result = self.definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES})
        ordered: list = [None] * len(self.configs)
        for outcome in result.results:
            config = outcome.expectation_config
            index = ((config.meta if config is not None else None) or {}).get(_INDEX)
            if not isinstance(index, int) or not 0 <= index < len(ordered) \
                    or ordered[index] is not None:
                raise RuntimeError(f"Great Expectations returned a result conveyor cannot match "
                                   f"to its expectation: {outcome.expectation_config}")
            ordered[index] = outcome
        if any(o is None for o in ordered):
            raise RuntimeError(f"Great Expectations returned {len(result.results)} results for "
                               f"{len(ordered)} expectations")
        return ordered


@dataclasses.dataclass
class _Tally:
    config: Any
    elements: int = 0
    missing: int = 0
    unexpected: int = 0
    examples: list = dataclasses.field(default_factory=list)
    error: str = ""
    success: bool | None = None
    observed: str = ""

    def add(self, outcome) -> None:
        if outcome.exception_info and outcome.exception_info.get("raised_exception"):
            self.error = str(outcome.exception_info.get("exception_message"))[:300]
            return
        r = outcome.result or {}
        self.elements += int(r.get("element_count") or 0)
        self.missing += int(r.get("missing_count") or 0)
        self.unexpected += int(r.get("unexpected_count") or 0)
        room = MAX_EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(_plain(v) for v in (r.get("partial_unexpected_list") or [])[:room])
        if self.success is None:  # column-set and other whole-table results: first chunk stands
            self.success = bool(outcome.success)
            observed = r.get("observed_value")
            if observed is not None:
                self.observed = f"observed {observed}"
            details = r.get("details") or {}
            mismatched = details.get("mismatched")
            if mismatched:
                self.observed = f"mismatched columns {mismatched}"

    def map_result(self, split: str) -> CheckResult:
        base = self.elements - self.missing
        mostly = float(self.config.kwargs.get("mostly", 1.0) or 1.0)
        ok = base == 0 or (base - self.unexpected) / base >= mostly
        share = self.unexpected / base if base else 0.0
        observed = (f"{self.unexpected} of {base} values unexpected ({share:.2%})"
                    + (f", allowed {1 - mostly:.2%}" if mostly < 1 else ""))
        return self._result(split, ok, observed)

    def whole_result(self, split: str) -> CheckResult:
        return self._result(split, bool(self.success), self.observed or
                            ("ok" if self.success else "failed"))

    def _result(self, split: str, ok: bool, observed: str) -> CheckResult:
        meta = self.config.meta or {}
        if meta.get("conveyor_rule"):
            observed = f"{observed} ({meta['conveyor_rule']})"
        if self.error:
            ok, observed = False, f"could not be evaluated: {self.error}"
        severity = "drift" if meta.get("conveyor_severity") == "drift" else "breakage"
        return CheckResult(split, "expectation", describe(self.config), _column_of(self.config), ok,
                           observed, self.unexpected, self.examples, severity)


def _plain(value: Any) -> Any:
    """An example value as reports and messages show it: long strings are cut (a 10 MB value
    would otherwise be copied into the report, the error message and the logs)."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, (str, bytes)) and len(value) > MAX_EXAMPLE_CHARS:
        return f"{value[:MAX_EXAMPLE_CHARS]!r}... ({len(value)} characters)"
    return value


def chunk_rows_for(dataset: Dataset, split: str, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows per chunk for `split`: as many as fill `chunk_bytes` at the split's mean uncompressed
    row size (the Parquet footers' row-group sizes), within [MIN_CHUNK_ROWS, MAX_CHUNK_ROWS]."""
    groups = dataset.row_groups(split)
    rows, size = sum(g.rows for g in groups), sum(g.bytes for g in groups)
    if not rows or not size:
        return MAX_CHUNK_ROWS
    return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, chunk_bytes * rows // size)))


def run_expectations(dataset: Dataset, split: str, configs: Sequence, *,
                     chunk_rows: int | None = None,
                     on_batch=None) -> list[CheckResult]:
    """Check `configs` on one split, streaming it in chunks of `chunk_rows` rows (default:
    `chunk_rows_for`); `on_batch(batch)` sees every chunk (validate computes its statistics in
    the same pass)."""
    rows = dataset.split(split).rows
    if chunk_rows is None:
        chunk_rows = chunk_rows_for(dataset, split)
    single = rows <= chunk_rows
    chunked, counted, whole = [], [], []  # (index, config) by how each is evaluated
    for i, config in enumerate(configs):
        if config.type in _ROW_COUNT_TYPES or (config.type == _UNIQUE and not single):
            counted.append((i, config))
        elif config.type in _SCHEMA_TYPES or single or _is_row_wise(config):
            chunked.append((i, config))
        else:
            whole.append((i, config))

    tallies = [_Tally(c) for _, c in chunked]
    uniques = {c.kwargs["column"]: _UniqueCounter() for _, c in counted if c.type == _UNIQUE}
    gx_runner = _Runner([c for _, c in chunked], f"{split}-chunks") if chunked else None
    for batch in dataset.iter_batches(split, batch_size=chunk_rows):
        if on_batch is not None:
            on_batch(batch)
        for column, counter in uniques.items():
            counter.update(batch.column(column))
        if gx_runner is not None:
            for tally, outcome in zip(tallies, gx_runner.run(batch.to_pandas())):
                tally.add(outcome)

    results: dict[int, CheckResult] = {}
    for (i, config), tally in zip(chunked, tallies):
        row_wise = config.type not in _SCHEMA_TYPES and _is_row_wise(config)
        results[i] = tally.map_result(split) if row_wise else tally.whole_result(split)
    for i, config in counted:
        results[i] = (uniques[config.kwargs["column"]].result(split, config)
                      if config.type == _UNIQUE else _row_count(config, rows, split))
    if whole:
        for (i, _), result in zip(whole, _run_whole(dataset, split, [c for _, c in whole])):
            results[i] = result
    return [results[i] for i in range(len(configs))]


def _row_count(config, rows: int, split: str) -> CheckResult:
    kw = config.kwargs
    if config.type == "expect_table_row_count_to_equal":
        ok = rows == kw.get("value")
    else:
        lo, hi = kw.get("min_value"), kw.get("max_value")
        ok = (lo is None or rows >= lo) and (hi is None or rows <= hi)
    return CheckResult(split, "expectation", describe(config), None, ok, f"{rows} rows")


class _UniqueCounter:
    """Exact duplicate count of a column across chunks (memory grows with its distinct values)."""

    def __init__(self) -> None:
        self.seen: set = set()
        self.values = 0
        self.duplicates = 0
        self.examples: list = []

    def update(self, column: pa.Array | pa.ChunkedArray) -> None:
        for value in pc.drop_null(column).to_pylist():
            self.values += 1
            if value in self.seen:
                self.duplicates += 1
                if len(self.examples) < MAX_EXAMPLES:
                    self.examples.append(_plain(value))
            else:
                self.seen.add(value)

    def result(self, split: str, config) -> CheckResult:
        return CheckResult(split, "expectation", describe(config), config.kwargs["column"],
                           self.duplicates == 0,
                           f"{self.duplicates} of {self.values} values are duplicates",
                           self.duplicates, self.examples)


def _run_whole(dataset: Dataset, split: str, configs: Sequence) -> list[CheckResult]:
    names = sorted({n for c in configs for n in columns_named(c)} & set(dataset.schema.names))
    frame = dataset.read_table(split, names or None).to_pandas()
    tallies = [_Tally(c) for c in configs]
    for tally, outcome in zip(tallies, _Runner(configs, f"{split}-whole").run(frame)):
        tally.add(outcome)
    return [t.whole_result(split) for t in tallies]


def schema_checks(used: Any, split: str, types: Mapping[str, str]) -> list[CheckResult]:
    """Columns the suite (`conveyor.validate.suite.Suite`) names that the dataset lacks, and its
    spec's type rules."""
    out: list[CheckResult] = []
    named: dict[str, None] = {}
    for config in used.expectations:
        for n in columns_named(config):
            named.setdefault(n, None)
    if used.spec is not None:
        for n in used.spec.columns:
            named.setdefault(n, None)
    for n in named:
        if n not in types:
            detail = f"missing from the dataset (columns: {', '.join(types)})"
            out.append(CheckResult(split, "schema", "column exists", n, False, detail))
    if used.spec is not None:
        for n, rules in used.spec.columns.items():
            if rules.type and n in types:
                out.append(CheckResult(split, "schema", f"type is {rules.type}", n,
                                       rules.type == types[n], f"type is {types[n]}"))
    return out


def finite_checks(used: Any, split: str,
                  column_stats: Mapping[str, ColumnStatistics]) -> list[CheckResult]:
    """The `finite` rules of a suite's spec (`conveyor.validate.suite.Suite`), from the
    statistics of the same pass (GX sees NaN as NULL)."""
    out: list[CheckResult] = []
    if used.spec is None:
        return out
    for n, rules in used.spec.columns.items():
        c = column_stats.get(n)
        if not rules.finite or c is None or c.kind != NUMERIC:
            continue
        bad = c.nan + c.inf
        out.append(CheckResult(
            split, "values", "finite (no NaN or +-inf; the baseline had none)", n, bad == 0,
            f"{c.nan} NaN and {c.inf} infinite of {c.count} values" if bad
            else f"{c.count} finite values", bad))
    return out
