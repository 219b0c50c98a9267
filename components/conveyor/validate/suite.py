"""Validation suites: conveyor's concise spec, Great Expectations suites, and inference.

A suite can be given as
- a **conveyor spec** (YAML or JSON) naming per column its rules, and table-level rules::

      conveyor_suite: 1
      columns:
        bill_length_mm: {type: float64, max_null_fraction: 0.05, min: 25.0, max: 65.0}
        species: {type: string, nullable: false, allowed: [Adelie, Chinstrap, Gentoo]}
        id: {type: int64, unique: true}
      table: {min_rows: 100, max_rows: 1000000, exact_columns: true}

- a **Great Expectations 1.x suite** as JSON (`{"name": ..., "expectations": [{"type": ...,
  "kwargs": {...}}]}`), run as it is;
- or be **inferred** from statistics (`infer_spec`): types, null fractions, ranges widened by a
  margin, and the value sets of low-cardinality string and bool columns.

A spec becomes Great Expectations expectations (`to_expectations`); its `type` rules are checked
against the Dataset's schema by conveyor itself. The suite used is always written out
(`write_suite`): `suite.yaml` (the spec, when there is one) and `expectations.json` (the GX suite).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from conveyor.errors import InputError
from conveyor.io.dataset import CONTRACT_TYPES
from conveyor.validate.stats import CATEGORICAL, NUMERIC, SplitStatistics

SPEC_FILE, GX_FILE = "suite.yaml", "expectations.json"
_COLUMN_KEYS = {"type", "nullable", "max_null_fraction", "min", "max", "allowed", "unique"}
_TABLE_KEYS = {"min_rows", "max_rows", "exact_columns"}


@dataclasses.dataclass
class ColumnRules:
    type: str | None = None
    nullable: bool = True
    max_null_fraction: float | None = None
    min: float | None = None
    max: float | None = None
    allowed: list | None = None
    unique: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.type:
            out["type"] = self.type
        if not self.nullable:
            out["nullable"] = False
        for key in ("max_null_fraction", "min", "max", "allowed"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.unique:
            out["unique"] = True
        return out


@dataclasses.dataclass
class SuiteSpec:
    columns: dict[str, ColumnRules]
    min_rows: int | None = 1
    max_rows: int | None = None
    exact_columns: bool = True

    def to_dict(self) -> dict[str, Any]:
        table: dict[str, Any] = {"exact_columns": self.exact_columns}
        if self.min_rows is not None:
            table["min_rows"] = self.min_rows
        if self.max_rows is not None:
            table["max_rows"] = self.max_rows
        return {"conveyor_suite": 1,
                "columns": {name: rules.to_dict() for name, rules in self.columns.items()},
                "table": table}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> "SuiteSpec":
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
                raise InputError(f"{where}: column {name!r}: min {rules['min']} > max {rules['max']}")
            if rules.get("allowed") is not None and not isinstance(rules["allowed"], list):
                raise InputError(f"{where}: column {name!r}: allowed must be a list")
            columns[str(name)] = ColumnRules(
                type=rules.get("type"), nullable=bool(rules.get("nullable", True)),
                max_null_fraction=frac, min=rules.get("min"), max=rules.get("max"),
                allowed=rules.get("allowed"), unique=bool(rules.get("unique", False)))
        table = data.get("table") or {}
        unknown = sorted(set(table) - _TABLE_KEYS)
        if unknown:
            raise InputError(f"{where}: table: unknown rule(s) {unknown} "
                             f"(known: {', '.join(sorted(_TABLE_KEYS))})")
        return cls(columns, min_rows=table.get("min_rows", 1), max_rows=table.get("max_rows"),
                   exact_columns=bool(table.get("exact_columns", True)))


@dataclasses.dataclass
class Suite:
    """What validate runs: GX expectation configurations, plus the spec they came from."""

    expectations: list  # great_expectations ExpectationConfiguration
    spec: SuiteSpec | None = None
    origin: str = ""

    def to_gx_json(self) -> dict[str, Any]:
        return {"name": "conveyor", "expectations": [
            {"type": e.type, "kwargs": dict(e.kwargs), "meta": dict(e.meta or {})}
            for e in self.expectations]}


def to_expectations(spec: SuiteSpec) -> list:
    """The GX expectation configurations of a spec (its `type` rules are schema checks)."""
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration as Config,
    )

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
        if r.min is not None or r.max is not None:
            out.append(Config(type="expect_column_values_to_be_between",
                              kwargs={"column": name, "min_value": r.min, "max_value": r.max}))
        if r.allowed is not None:
            out.append(Config(type="expect_column_values_to_be_in_set",
                              kwargs={"column": name, "value_set": list(r.allowed)}))
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
        kind = item.get("type") or item.get("expectation_type") if isinstance(item, Mapping) else None
        if not kind:
            raise InputError(f"{where}: expectation #{i} has no 'type'")
        try:
            config = Config(type=kind, kwargs=dict(item.get("kwargs") or {}),
                            meta=dict(item.get("meta") or {}))
            config.to_domain_obj()  # unknown types and bad kwargs fail here, not mid-run
        except Exception as exc:  # noqa: BLE001  (GX raises many kinds; all mean a bad suite)
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
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"suite: cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise InputError(f"suite: {path} is neither YAML nor JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise InputError(f"suite: {path} holds no mapping")
    if "expectations" in data:
        return Suite(from_gx_json(data, str(path)), origin=f"Great Expectations suite {path}")
    spec = SuiteSpec.from_dict(data, str(path))
    return Suite(to_expectations(spec), spec, origin=f"conveyor suite {path}")


def write_suite(suite: Suite, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if suite.spec is not None:
        (folder / SPEC_FILE).write_text(
            f"# {suite.origin}\n" + yaml.safe_dump(suite.spec.to_dict(), sort_keys=False))
    (folder / GX_FILE).write_text(json.dumps(suite.to_gx_json(), indent=2) + "\n")


def infer_spec(stats: SplitStatistics, margin: float = 0.1, max_categories: int = 100) -> SuiteSpec:
    """A spec from a baseline's statistics: what a person would write after looking at them.

    - type: the column's type;
    - nulls: none seen -> not nullable; else the null fraction seen plus max(1%, margin x it);
    - numeric: [min - margin x range, max + margin x range];
    - string and bool columns with at most `max_categories` values: those values.
    """
    columns = {}
    for name, c in stats.columns.items():
        r = ColumnRules(type=c.type)
        if c.nulls == 0:
            r.nullable = False
        else:
            r.max_null_fraction = round(min(1.0, c.null_fraction + max(0.01, c.null_fraction * margin)), 4)
        if c.kind == NUMERIC and c.min is not None and math.isfinite(c.min) and math.isfinite(c.max):
            width = (c.max - c.min) or abs(c.max) or 1.0
            lo, hi = c.min - margin * width, c.max + margin * width
            if c.type == "int64":
                lo, hi = math.floor(lo), math.ceil(hi)
            r.min, r.max = _round(lo), _round(hi)
        if c.kind == CATEGORICAL and c.values is not None and not c.truncated \
                and 0 < len(c.values) <= max_categories:
            r.allowed = sorted(c.values, key=str)
        columns[name] = r
    return SuiteSpec(columns, min_rows=1, exact_columns=True)


def _round(x: float) -> float | int:
    if isinstance(x, int) or float(x).is_integer():
        return int(x)
    return float(f"{x:.6g}")
