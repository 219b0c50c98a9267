"""Parquet is read and written only in conveyor/io/: a Dataset's shards through
`conveyor.io.dataset` (the Dataset contract), other Parquet files through `conveyor.io.parquet`.
A step that opened shards itself would bypass the contract (its checks, its layout), so a module
outside io/ that imports pyarrow.parquet, at any level, fails here."""

from __future__ import annotations

import ast
from pathlib import Path

from conveyor import layers

PACKAGE = Path(layers.__file__).parent
ALLOWED = PACKAGE / "io"


def parquet_imports(path: Path) -> list[int]:
    """Lines of the file's imports of pyarrow.parquet (`import pyarrow.parquet`,
    `from pyarrow import parquet`, `from pyarrow.parquet import X`)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            if any(a.name == "pyarrow.parquet" or a.name.startswith("pyarrow.parquet.")
                   for a in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module == "pyarrow.parquet" or node.module.startswith("pyarrow.parquet."):
                lines.append(node.lineno)
            elif node.module == "pyarrow" and any(a.name == "parquet" for a in node.names):
                lines.append(node.lineno)
    return lines


def offenders(root: Path, allowed: Path) -> list[str]:
    return [f"{path.relative_to(root)}:{line}" for path in sorted(root.rglob("*.py"))
            if allowed not in path.parents for line in parquet_imports(path)]


def test_only_io_imports_pyarrow_parquet():
    found = offenders(PACKAGE, ALLOWED)
    assert not found, ("modules outside conveyor/io/ import pyarrow.parquet (read a Dataset "
                       "through conveyor.io.dataset, other Parquet files through "
                       "conveyor.io.parquet):\n" + "\n".join(found))


def test_each_spelling_is_caught(tmp_path):
    (tmp_path / "io").mkdir()
    (tmp_path / "io" / "dataset.py").write_text("import pyarrow.parquet as pq\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.py").write_text("def f():\n    import pyarrow.parquet as pq\n")
    (tmp_path / "train" / "b.py").write_text("from pyarrow import parquet\n")
    (tmp_path / "train" / "c.py").write_text("from pyarrow.parquet import ParquetFile\n")
    (tmp_path / "train" / "d.py").write_text("import pyarrow as pa\nimport pyarrow.compute\n")
    assert offenders(tmp_path, tmp_path / "io") == ["train/a.py:2", "train/b.py:1", "train/c.py:1"]
