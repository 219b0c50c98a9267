"""What a training run can check before it reads a row: parameters that agree, a model base path
that takes a version, and a source whose schema has the label, the slices and the split key.

Every problem found is reported at once, in one `InputError` (a `SourceNotFoundError` when the
only problems are missing things), each line naming the parameter and what was expected, and
for what is missing what to do (`conveyor.gcp.hints`): the command that creates a bucket (on
the local stack, or gcloud's), the closest existing table, the command that loads a file as a
table on the local stack. The source's schema comes from a BigQuery dry run (no rows read,
nothing billed); the base path is probed by `ModelBasePath.check_writable` (a probe object
written and deleted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.errors import InputError, SourceNotFoundError
from conveyor.gcp import bigquery_client, hints, retry
from conveyor.params import did_you_mean
from conveyor.params import problems as parameter_problems


@dataclasses.dataclass
class Preflight:
    columns: dict[str, str]  # the source's columns and contract types
    problems: list[str]

    def summary(self) -> str:
        if self.problems:
            return "preflight: " + "; ".join(self.problems)
        return (f"preflight: ok ({len(self.columns)} columns in the source; the model base path "
                "takes a version)")


@retry.giving_up("preflight")
def check(*, label: str, model_base_path: str, table: str = "", query: str = "",
          split_key: str = "", split_ratios: Mapping[str, float] | None = None,
          eval_split: str = "eval", slices: Sequence[str] = (), feature_spec_uri: str = "",
          project: str = "", location: str = "") -> Preflight:
    """Run every check; raise one error listing every problem, or return what was seen."""
    from conveyor.ingest.bigquery import source_schema
    from conveyor.io.split import SplitSpec
    from conveyor.registry import ModelBasePath

    problems: list[str] = []
    missing: list[str] = []
    if bool(table) == bool(query):
        problems.append("give exactly one of table or query "
                        f"(table={table!r}, query={'<set>' if query else repr(query)})")
    if not label and not feature_spec_uri:
        problems.append("label: empty; name the label column (or give feature_spec_uri)")
    problems += parameter_problems({"slices": list(slices or [])})  # their one definition
    try:
        spec = SplitSpec.parse(dict(split_ratios or {}) or None, split_key or None)
        if eval_split not in spec.names:
            problems.append(f"split_ratios: no {eval_split!r} split ({', '.join(spec.names)}): "
                            "evaluate and early stopping use it; add it, e.g. "
                            "{\"train\": 0.8, \"eval\": 0.2}")
    except InputError as exc:
        problems.append(str(exc))
    base = None
    try:
        base = ModelBasePath(model_base_path)
        base.check_writable()
    except SourceNotFoundError as exc:
        bucket = base.bucket_name if base is not None else ""
        missing.append(_with_hint(str(exc), hints.missing_bucket(bucket, location)
                                  if bucket else ""))
    except InputError as exc:
        problems.append(str(exc))
    columns: dict[str, str] = {}
    if bool(table) != bool(query):
        try:
            columns = source_schema(table=table or None, query=query or None,
                                    project=project or None, location=location or None)
        except SourceNotFoundError as exc:
            hint = hints.missing_table(bigquery_client(project or None, location or None),
                                       table) if table else ""
            missing.append(_with_hint(str(exc), hint))
        except InputError as exc:
            problems.append(str(exc))
    if columns:
        where = f"table {table}" if table else "the query's result"
        for parameter, names in (("label", [label] if label else []),
                                 ("split_key", [split_key] if split_key else []),
                                 ("slices", list(slices or []))):
            for name in names:
                if name not in columns:
                    problems.append(_not_a_column(parameter, name, columns, where))
    everything = missing + problems
    if everything:
        kind = SourceNotFoundError if missing and not problems else InputError
        raise kind("preflight: " + "; ".join(everything))
    return Preflight(columns, [])


def _with_hint(message: str, hint: str) -> str:
    """`message` and what to do (`conveyor.gcp.hints`), without a second "did you mean" when
    the code that raised already gave one."""
    if "did you mean" in message and hint.startswith(" (did you mean"):
        hint = hint[hint.index(")") + 1:]
    return message + hint


def _not_a_column(parameter: str, name: str, columns: dict[str, Any], where: str) -> str:
    folded = {c.casefold(): c for c in columns}
    hint = (f" (did you mean {folded[name.casefold()]!r}? names are case-sensitive here)"
            if name.casefold() in folded else did_you_mean([name], columns))
    shown = ", ".join(list(columns)[:30]) + (", ..." if len(columns) > 30 else "")
    return f"{parameter}: {name!r} is not a column of {where}{hint} (columns: {shown})"
