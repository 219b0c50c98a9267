"""Every hyper-parameter train takes is documented in the README's table, with its default."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from conveyor.train.hyperparameters import Hyperparameters

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_lists_every_hyperparameter_with_its_default():
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", README.read_text(), re.MULTILINE))
    for field in dataclasses.fields(Hyperparameters):
        assert field.name in rows, f"README's hyper-parameter table lacks {field.name}"
        default = getattr(Hyperparameters(), field.name)
        shown = rows[field.name].strip("` ")
        assert shown == (default if isinstance(default, str) else json.dumps(default)), \
            (field.name, shown, default)
