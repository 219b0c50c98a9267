"""Every module of conveyor reads in one sitting: at most 500 lines, and no function over 80.
A KFP component or pipeline function counts like any other (its signature is its interface, so
keep the body short)."""

from __future__ import annotations

import ast
from pathlib import Path

from conveyor import layers

PACKAGE = Path(layers.__file__).parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def sizes(root: Path) -> list[str]:
    """What is too long under `root`, one line each."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(root)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            problems.append(f"{rel}: {len(text.splitlines())} lines (> {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{rel}:{node.lineno}: {node.name} is {length} lines "
                                    f"(> {MAX_FUNCTION_LINES})")
    return problems


def test_modules_and_functions_are_short():
    problems = sizes(PACKAGE)
    assert not problems, "split these by concern or into named stages:\n" + "\n".join(problems)


def test_a_long_function_is_caught(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def f():\n{body}")
    (problem,) = sizes(tmp_path)
    assert "f is 81 lines" in problem
