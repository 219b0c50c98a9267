"""Validation suites: conveyor's concise spec, Great Expectations suites, and inference.

A suite can be given as
- a **conveyor spec** (YAML or JSON) naming per column its rules, and table-level rules::

      conveyor_suite: 1
      columns:
        bill_length_mm: {type: float64, max_null_fraction: 0.05, min: 25.0, max: 65.0}
        species: {type: string, nullable: false, allowed: [Adelie, Chinstrap, Gentoo]}
        id: {type: int64, unique: true}
        order_id: {type: int64, excluded: "an order number"}
      table: {min_rows: 100, max_rows: 1000000, exact_columns: true}

  `excluded` (a reason, or `false`) leaves a column out of drift, skew and the report's charts
  and overview (its other rules still hold); a column the suite does not mark is left out when
  it identifies rows (`conveyor.stats.columns.identifies_rows`, transform's rule for ids), unless
  marked `excluded: false` (`excluded_columns`);
- a **Great Expectations 1.x suite** as JSON (`{"name": ..., "expectations": [{"type": ...,
  "kwargs": {...}}]}`), run as it is;
- or be **inferred** from statistics (`infer_spec`), which separates **breakage** from **drift**:

      columns:
        body_mass_g:
          type: float64                   # breakage: another type
          nulls: {seen: 2, rows: 275}     # breakage: a null rate the baseline makes improbable
          min: 0                          # breakage: a negative value (the baseline had none)
          finite: true                    # breakage: NaN or +-inf (the baseline had none)
          expected: {min: 2430, max: 6570}   # drift only: reported, never fails
        island:
          type: string
          nulls: {seen: 0, rows: 275}
          expected: {values: [Biscoe, Dream, Torgersen]}   # drift only: new categories
        sample_id:
          type: int64
          nulls: {seen: 0, rows: 275}
          excluded: 275 distinct values in 275 rows: identifies rows   # no drift, no chart
      table: {min_rows: 1, exact_columns: true, significance: 0.001}

  `nulls` is sample-size aware: the limit for a split of n rows is the one-sided binomial
  (1 - significance) quantile at the Wilson upper bound (same significance) of the baseline's
  null rate, so one NULL in a 63-row split passes when the baseline had a few, and half the
  rows NULL fails. Rules written by hand (`min`, `max`, `allowed`, `nullable`,
  `max_null_fraction`, `unique`) are strict as written; `expected` rules are never failures.

A spec becomes Great Expectations expectations (`to_expectations`); its `type` rules are checked
against the Dataset's schema by conveyor itself. The suite used is always written out
(`write_suite`): `suite.yaml` (the spec, when there is one) and `expectations.json` (the GX suite).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics as _statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from conveyor.errors import InputError
from conveyor.gcp.files import uri_of
from conveyor.io.dataset import CONTRACT_TYPES
from conveyor.io.documents import read_mapping
from conveyor.stats.columns import (
    CATEGORICAL,
    NUMERIC,
    SplitStatistics,
    id_reason,
    identifies_rows,
)

SPEC_FILE, GX_FILE = "suite.yaml", "expectations.json"
#: Top-level keys of a suite: a conveyor spec's, and a GX suite's "expectations".
SUITE_KEYS = ("columns", "table", "conveyor_suite", "expectations")
_COLUMN_KEYS = {"type", "nullable", "max_null_fraction", "min", "max", "allowed", "unique",
                "nulls", "finite", "expected", "excluded"}
_EXPECTED_KEYS = {"min", "max", "values"}
_TABLE_KEYS = {"min_rows", "max_rows", "exact_columns", "significance"}
SIGNIFICANCE = 0.001
SEVERITY = "conveyor_severity"  # expectation meta key: "drift" for rules that never fail
BREAKAGE, DRIFT = "breakage", "drift"


@dataclasses.dataclass
class ColumnRules:
    type: str | None = None
    nullable: bool = True
    max_null_fraction: float | None = None
    min: float | None = None
    max: float | None = None
    allowed: list | None = None
    unique: bool = False
    nulls: tuple[int, int] | None = None  # (nulls, rows) seen in the baseline
    finite: bool = False  # no NaN or +-inf
    expected_min: float | None = None  # drift only
    expected_max: float | None = None
    expected_values: list | None = None
    excluded: str | bool | None = None  # why it is left out of drift; False: never; None: unsaid

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.type:
            out["type"] = self.type
        if not self.nullable:
            out["nullable"] = False
        if self.nulls is not None:
            out["nulls"] = {"seen": self.nulls[0], "rows": self.nulls[1]}
        for key in ("max_null_fraction", "min", "max", "allowed"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.finite:
            out["finite"] = True
        if self.unique:
            out["unique"] = True
        expected = {k: getattr(self, f"expected_{k}") for k in ("min", "max", "values")
                    if getattr(self, f"expected_{k}") is not None}
        if expected:
            out["expected"] = expected
        if self.excluded is not None:
            out["excluded"] = self.excluded
        return out


@dataclasses.dataclass
class SuiteSpec:
    columns: dict[str, ColumnRules]
    min_rows: int | None = 1
    max_rows: int | None = None
    exact_columns: bool = True
    significance: float = SIGNIFICANCE

    def to_dict(self) -> dict[str, Any]:
        table: dict[str, Any] = {"exact_columns": self.exact_columns}
        if self.min_rows is not None:
            table["min_rows"] = self.min_rows
        if self.max_rows is not None:
            table["max_rows"] = self.max_rows
        if self.significance != SIGNIFICANCE or any(r.nulls for r in self.columns.values()):
            table["significance"] = self.significance
        return {"conveyor_suite": 1,
                "columns": {name: rules.to_dict() for name, rules in self.columns.items()},
                "table": table}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> SuiteSpec:
        if not isinstance(data.get("columns"), Mapping):
            raise InputError(f"{where}: a conveyor suite needs a 'columns' mapping")
        columns = {}
        for name, rules in data["columns"].items():
            rules = rules or {}
            if not isinstance(rules, Mapping):
                raise InputError(f"{where}: rules of column {name!r} must be a mapping")
            unknown = sorted(set(rules) - _COLUMN_KEYS)
            if unknown:
                raise InputError(f"{where}: column {name!r}: unknown rule(s) {unknown} "
                                 f"(known: {', '.join(sorted(_COLUMN_KEYS))})")
            if rules.get("type") is not None and rules["type"] not in CONTRACT_TYPES:
                raise InputError(f"{where}: column {name!r}: type {rules['type']!r} is not one of "
                                 f"{', '.join(CONTRACT_TYPES)}")
            frac = rules.get("max_null_fraction")
            if frac is not None and not (isinstance(frac, (int, float)) and 0 <= frac <= 1):
                raise InputError(f"{where}: column {name!r}: max_null_fraction must be in [0, 1], "
                                 f"got {frac!r}")
            for key in ("min", "max"):
                v = rules.get(key)
                if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool)):
                    raise InputError(f"{where}: column {name!r}: {key} must be a number, got {v!r}")
            if rules.get("min") is not None and rules.get("max") is not None \
                    and rules["min"] > rules["max"]:
                raise InputError(
                    f"{where}: column {name!r}: min {rules['min']} > max {rules['max']}")
            if rules.get("allowed") is not None and not isinstance(rules["allowed"], list):
                raise InputError(f"{where}: column {name!r}: allowed must be a list")
            nulls = _nulls_rule(rules.get("nulls"), f"{where}: column {name!r}: nulls")
            expected = rules.get("expected") or {}
            if not isinstance(expected, Mapping) or set(expected) - _EXPECTED_KEYS:
                raise InputError(f"{where}: column {name!r}: expected must be a mapping of "
                                 f"{', '.join(sorted(_EXPECTED_KEYS))}, got {expected!r}")
            for key in ("min", "max"):
                v = expected.get(key)
                if v is not None and not _is_number(v):
                    raise InputError(f"{where}: column {name!r}: expected {key} must be a "
                                     f"number, got {v!r}")
            if expected.get("values") is not None and not isinstance(expected["values"], list):
                raise InputError(f"{where}: column {name!r}: expected values must be a list")
            excluded = rules.get("excluded")
            if excluded is not None and not isinstance(excluded, (str, bool)):
                raise InputError(f"{where}: column {name!r}: excluded must be a reason (text), "
                                 f"true or false, got {excluded!r}")
            columns[str(name)] = ColumnRules(
                type=rules.get("type"), nullable=bool(rules.get("nullable", True)),
                max_null_fraction=frac, min=rules.get("min"), max=rules.get("max"),
                allowed=rules.get("allowed"), unique=bool(rules.get("unique", False)),
                nulls=nulls, finite=bool(rules.get("finite", False)),
                expected_min=expected.get("min"), expected_max=expected.get("max"),
                expected_values=expected.get("values"),
                excluded="excluded by the suite" if excluded is True else excluded)
        table = data.get("table") or {}
        if not isinstance(table, Mapping):
            raise InputError(f"{where}: table must be a mapping, got {table!r}")
        unknown = sorted(set(table) - _TABLE_KEYS)
        if unknown:
            raise InputError(f"{where}: table: unknown rule(s) {unknown} "
                             f"(known: {', '.join(sorted(_TABLE_KEYS))})")
        significance = table.get("significance", SIGNIFICANCE)
        if not (_is_number(significance) and 0 < significance < 0.5):
            raise InputError(f"{where}: table: significance must be in (0, 0.5), "
                             f"got {significance!r}")
        return cls(columns, min_rows=table.get("min_rows", 1), max_rows=table.get("max_rows"),
                   exact_columns=bool(table.get("exact_columns", True)),
                   significance=float(significance))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _nulls_rule(value: Any, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    ok = (isinstance(value, Mapping) and set(value) == {"seen", "rows"}
          and all(isinstance(value[k], int) and not isinstance(value[k], bool) for k in value)
          and 0 <= value["seen"] <= value["rows"] and value["rows"] > 0)
    if not ok:
        raise InputError(f"{where}: expected {{seen: <nulls>, rows: <rows>}} with "
                         f"0 <= seen <= rows and rows > 0, got {value!r}")
    return int(value["seen"]), int(value["rows"])


# -- sample-size-aware null limits ------------------------------------------------------------

def wilson_upper(k: int, n: int, significance: float) -> float:
    """One-sided Wilson score upper bound of a rate seen as k of n, at `significance`."""
    if n <= 0:
        return 1.0
    z = _statistics.NormalDist().inv_cdf(1 - significance)
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def binomial_limit(n: int, p: float, significance: float) -> int:
    """The largest count k with P(X >= k) >= significance for X ~ Binomial(n, p): more than k
    successes in n trials is improbable (below `significance`) at rate p."""
    if n <= 0:
        return 0
    if p <= 0:
        return 0
    if p >= 1:
        return n
    mean, var = n * p, n * p * (1 - p)
    if mean > 200_000:  # normal approximation, one count more for its skew; exact below
        z = _statistics.NormalDist().inv_cdf(1 - significance)
        return min(n, int(math.floor(mean + z * math.sqrt(var) + 0.5)) + 1)
    # exact: walk the pmf up from 0 until the upper tail P(X > k) falls below `significance`
    log_p, log_q = math.log(p), math.log1p(-p)
    log_pmf = n * log_q  # P(X = 0)
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.exp(log_pmf)
        if 1.0 - cdf < significance:  # P(X >= k + 1) < significance: k + 1 is improbable
            return k
        log_pmf += math.log(n - k) - math.log(k + 1) + log_p - log_q
    return n


def null_limit(nulls: tuple[int, int], rows: int, significance: float) -> int:
    """How many NULLs a split of `rows` rows may hold, given (nulls, rows) in the baseline."""
    return binomial_limit(rows, wilson_upper(nulls[0], nulls[1], significance), significance)


@dataclasses.dataclass
class Suite:
    """What validate runs: GX expectation configurations, plus the spec they came from."""

    expectations: list  # great_expectations ExpectationConfiguration
    spec: SuiteSpec | None = None
    origin: str = ""

    def expectations_for(self, rows: int) -> list:
        """The expectations for a split of `rows` rows (a spec's null limits depend on it)."""
        return to_expectations(self.spec, rows) if self.spec is not None else self.expectations

    def to_gx_json(self) -> dict[str, Any]:
        return {"name": "conveyor", "expectations": [
            {"type": e.type, "kwargs": dict(e.kwargs), "meta": dict(e.meta or {})}
            for e in self.expectations]}


def to_expectations(spec: SuiteSpec, rows: int | None = None) -> list:
    """The GX expectation configurations of a spec (its `type` and `finite` rules are conveyor's
    own checks). `nulls` rules are set for a split of `rows` rows (default: the baseline's);
    `expected` rules carry `meta.conveyor_severity: drift`."""
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration as Config,
    )

    drift_meta = {SEVERITY: DRIFT}
    out = []
    if spec.exact_columns:
        out.append(Config(type="expect_table_columns_to_match_set",
                          kwargs={"column_set": list(spec.columns), "exact_match": True}))
    if spec.min_rows is not None or spec.max_rows is not None:
        out.append(Config(type="expect_table_row_count_to_be_between",
                          kwargs={"min_value": spec.min_rows, "max_value": spec.max_rows}))
    for name, r in spec.columns.items():
        if not r.nullable or r.max_null_fraction == 0:
            out.append(Config(type="expect_column_values_to_not_be_null", kwargs={"column": name}))
        elif r.max_null_fraction is not None:
            out.append(Config(type="expect_column_values_to_not_be_null",
                              kwargs={"column": name, "mostly": round(1 - r.max_null_fraction, 6)}))
        if r.nulls is not None and r.nullable and r.max_null_fraction is None:
            n = rows if rows is not None else r.nulls[1]
            limit = null_limit(r.nulls, n, spec.significance)
            if n and limit < n:
                # floor, so that exactly `limit` NULLs still pass GX's and conveyor's `mostly`
                mostly = math.floor((n - limit) / n * 1e9) / 1e9
                out.append(Config(
                    type="expect_column_values_to_not_be_null",
                    kwargs={"column": name, "mostly": mostly},
                    meta={"conveyor_rule": f"at most {limit} NULL(s) in {n} rows: baseline "
                          f"{r.nulls[0]} of {r.nulls[1]}, significance {spec.significance}"}))
        if r.min is not None or r.max is not None:
            out.append(Config(type="expect_column_values_to_be_between",
                              kwargs={"column": name, "min_value": r.min, "max_value": r.max}))
        if r.allowed is not None:
            out.append(Config(type="expect_column_values_to_be_in_set",
                              kwargs={"column": name, "value_set": list(r.allowed)}))
        if r.expected_min is not None or r.expected_max is not None:
            out.append(Config(type="expect_column_values_to_be_between",
                              kwargs={"column": name, "min_value": r.expected_min,
                                      "max_value": r.expected_max}, meta=dict(drift_meta)))
        if r.expected_values is not None:
            out.append(Config(type="expect_column_values_to_be_in_set",
                              kwargs={"column": name, "value_set": list(r.expected_values)},
                              meta=dict(drift_meta)))
        if r.unique:
            out.append(Config(type="expect_column_values_to_be_unique", kwargs={"column": name}))
    return out


def from_gx_json(data: Mapping[str, Any], where: str) -> list:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration as Config,
    )

    items = data.get("expectations")
    if not isinstance(items, list):
        raise InputError(f"{where}: a Great Expectations suite needs an 'expectations' list")
    out = []
    for i, item in enumerate(items):
        kind = ((item.get("type") or item.get("expectation_type"))
                if isinstance(item, Mapping) else None)
        if not kind:
            raise InputError(f"{where}: expectation #{i} has no 'type'")
        try:
            config = Config(type=kind, kwargs=dict(item.get("kwargs") or {}),
                            meta=dict(item.get("meta") or {}))
            config.to_domain_obj()  # unknown types and bad kwargs fail here, not mid-run
        except Exception as exc:  # GX raises many kinds; all mean a bad suite
            raise InputError(f"{where}: expectation #{i} ({kind}) is not valid: {exc}") from None
        out.append(config)
    return out


def load_suite(path: str | Path) -> Suite:
    """A suite from a file (spec YAML/JSON or GX JSON) or a suite artifact folder."""
    path = Path(path)
    if path.is_dir():
        for name in (SPEC_FILE, GX_FILE):
            if (path / name).is_file():
                return load_suite(path / name)
        raise InputError(f"{path}: a suite folder holds {SPEC_FILE} or {GX_FILE}; found neither")
    # the one reader of a user's YAML/JSON: errors never quote a file that is not a suite
    data = read_mapping(path, "suite", SUITE_KEYS)
    where = uri_of(path)  # a download is named by its gs:// URI
    if "expectations" in data:
        return Suite(from_gx_json(data, where), origin=f"Great Expectations suite {where}")
    spec = SuiteSpec.from_dict(data, where)
    return Suite(to_expectations(spec), spec, origin=f"conveyor suite {where}")


def write_suite(suite: Suite, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if suite.spec is not None:
        (folder / SPEC_FILE).write_text(
            f"# {suite.origin}\n" + yaml.safe_dump(suite.spec.to_dict(), sort_keys=False))
    (folder / GX_FILE).write_text(json.dumps(suite.to_gx_json(), indent=2) + "\n")


def infer_spec(stats: SplitStatistics, margin: float = 0.1, max_categories: int = 100,
               strict_values: tuple[str, ...] = ()) -> SuiteSpec:
    """A spec from a baseline's statistics, breakage apart from drift (module docstring).

    Breakage (fails under policy fail):
    - type: the column's type; the column set (order free);
    - nulls: the baseline's (nulls, rows), checked sample-size aware;
    - numeric columns whose baseline min >= 0: min 0 (a negative value is impossible);
    - numeric columns without NaN or inf in the baseline: finite;
    - columns in `strict_values` (a label checked against its own train split): their values.

    Drift (reported, never fails):
    - numeric: expected [min - margin x range, max + margin x range], clipped at 0 for a
      non-negative domain and at 1 for a [0, 1] one, integers for int64;
    - string and bool columns with at most `max_categories` values: those values.

    A column that identifies rows (not one in `strict_values`) is marked `excluded`, with no
    drift rule: new ids are not drift.
    """
    columns = {}
    for name, c in stats.columns.items():
        r = ColumnRules(type=c.type, nulls=(c.nulls, c.rows) if c.rows else None)
        if name not in strict_values and identifies_rows(c):
            r.excluded = id_reason(c)
        if (c.kind == NUMERIC and c.min is not None and math.isfinite(c.min)
                and math.isfinite(c.max)):
            r.finite = c.nan == 0 and c.inf == 0
            width = (c.max - c.min) or abs(c.max) or 1.0
            lo, hi = c.min - margin * width, c.max + margin * width
            if c.min >= 0:
                r.min = 0
                lo = max(lo, 0.0)
                if c.max <= 1 and c.type == "float64":
                    hi = min(hi, 1.0)
            if c.type == "int64":
                lo, hi = math.floor(lo), math.ceil(hi)
            if not r.excluded:
                r.expected_min, r.expected_max = _round(lo), _round(hi)
        if c.kind == CATEGORICAL and c.values is not None and not c.truncated \
                and 0 < len(c.values) <= max_categories and not r.excluded:
            values = sorted(c.values, key=str)
            if name in strict_values:
                r.allowed = values
            else:
                r.expected_values = values
        columns[name] = r
    return SuiteSpec(columns, min_rows=1, exact_columns=True)


def excluded_columns(suite: Suite, stats: SplitStatistics,
                     label: str | None = None) -> dict[str, str]:
    """Columns of `stats` left out of drift, skew and the report's charts, with the reason: those
    the suite marks `excluded`, and any other that identifies rows in `stats` (unless the suite
    says `excluded: false`); never the label."""
    rules = suite.spec.columns if suite.spec is not None else {}
    out = {}
    for name, c in stats.columns.items():
        said = rules[name].excluded if name in rules else None
        if name == label or said is False:
            continue
        if isinstance(said, str):
            out[name] = said
        elif identifies_rows(c):
            out[name] = id_reason(c)
    return out


def _round(x: float) -> float | int:
    if isinstance(x, int) or float(x).is_integer():
        return int(x)
    return float(f"{x:.6g}")
