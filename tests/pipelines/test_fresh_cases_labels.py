"""Fresh cases for issue 25's classes 3 (a label that makes a metric meaningless) and 7 (split
luck), written after the fixes and run once against them, through the training pipeline in
kfp.local: an absurd label in the *eval* split, and a new class whose only rows all land in
eval."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from support import key_landing_in

from conveyor.local import seed
from conveyor.registry import ModelBasePath

pytestmark = [pytest.mark.local, pytest.mark.slow]


def with_rows(*rows: tuple[str, dict]) -> pa.Table:
    """The penguins with a `key` column and, per (split, values), a copy of row 0 with
    `values` whose key lands in that split."""
    table = seed.penguins()
    table = table.append_column("key", pa.array(range(table.num_rows), pa.int64()))
    extra, start = [], 20_000
    for where, values in rows:
        row = table.slice(0, 1).to_pylist()[0] | values
        row["key"] = key_landing_in(where, start=start)
        start = row["key"] + 1
        extra.append(row)
    return pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])


def run(tmp_path: Path, name: str, table: pa.Table, label: str) -> tuple[Path, bool]:
    from kfp import local

    from conveyor.pipelines import training

    table_id = f"fresh_labels.{name}"
    seed.load_table(table, table_id)
    root = tmp_path / name
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    try:
        training.pipeline(table=table_id, label=label, split_key="key",
                          model_base_path=str(root / "models"))
        ok = True
    except RuntimeError:
        ok = False
    return root, ok


def test_a_negative_absurd_label_in_eval_pushes_nothing(stack, tmp_path):
    root, _ = run(tmp_path, "absurd_eval", with_rows(("eval", {"body_mass_g": -1e25})),
                  "body_mass_g")
    assert ModelBasePath(str(root / "models")).versions() == []
    verdict = json.loads(next(root.glob("*/validate/statistics/validation.json")).read_text())
    assert any(b["column"] == "body_mass_g" for b in verdict["breakage"]), verdict["breakage"]


def test_a_new_class_with_every_row_in_eval_is_not_breakage(stack, tmp_path):
    root, ok = run(tmp_path, "rare_eval", with_rows(("eval", {"species": "Emperor"}),
                                                     ("eval", {"species": "Emperor"})),
                   "species")
    verdict = json.loads(next(root.glob("*/validate/statistics/validation.json")).read_text())
    assert not verdict["broken"], verdict["breakage"]
    assert ok
