"""Every import in conveyor points down the floors of conveyor.layers, function-level imports
included, so no package imports a later one and no two packages form a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conveyor import layers

PACKAGE = Path(layers.__file__).parent


def imports(path: Path, root: Path) -> list[tuple[str, int]]:
    """(the conveyor package a statement imports, its line) for every import in the file."""
    rel = path.relative_to(root).with_suffix("")
    module = ["conveyor", *rel.parts]
    if module[-1] == "__init__":
        module = module[:-1]
        here = module
    else:
        here = module[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                name = [*base, *(node.module.split(".") if node.module else [])]
            else:
                name = (node.module or "").split(".")
            if name == ["conveyor"]:  # from conveyor import evaluate, ...
                targets = [["conveyor", alias.name] for alias in node.names]
            else:
                targets = [name]
        for target in targets:
            if target[0] == "conveyor" and len(target) > 1:
                found.append((target[1], node.lineno))
    return found


def package_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else path.stem


def violations(root: Path, floor_of=layers.floor_of) -> list[str]:
    """Each import that points sideways or up, as 'file:line: a (floor) -> b (floor)'."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        package = package_of(path, root)
        for target, line in imports(path, root):
            if target == package or package == layers.ROOT:
                continue
            try:
                mine, theirs = floor_of(package), floor_of(target)
            except KeyError as missing:
                problems.append(f"{path.relative_to(root)}:{line}: {missing} has no floor in "
                                "conveyor/layers.py")
                continue
            if theirs >= mine:
                problems.append(f"{path.relative_to(root)}:{line}: {package} (floor {mine}) "
                                f"imports {target} (floor {theirs})")
    return problems


def test_every_import_points_down():
    problems = violations(PACKAGE)
    assert not problems, "imports that do not point down:\n" + "\n".join(problems)


def test_every_package_has_a_floor():
    packages = {package_of(p, PACKAGE) for p in PACKAGE.rglob("*.py")} - {layers.ROOT}
    missing = sorted(p for p in packages if not any(p in f for f in layers.FLOORS))
    assert not missing, f"packages without a floor in conveyor/layers.py: {missing}"


def test_no_package_is_on_two_floors():
    seen = [p for floor in layers.FLOORS for p in floor]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("code", [
    "from conveyor.push import push\n",
    "def f():\n    from conveyor.push.push import STATISTICS_FILE\n",
    "import conveyor.push.push\n",
    "from conveyor import push\n",
    "from ..push import push\n",
])
def test_an_upward_import_is_caught(tmp_path, code):
    """The checker itself: an import from an earlier step to a later one, in each spelling."""
    (tmp_path / "validate").mkdir()
    (tmp_path / "validate" / "__init__.py").write_text("")
    (tmp_path / "validate" / "checks.py").write_text(code)
    (tmp_path / "push").mkdir()
    (tmp_path / "push" / "__init__.py").write_text("from conveyor.validate import checks\n")
    problems = violations(tmp_path)
    assert len(problems) == 1 and "validate (floor" in problems[0] and "imports push" in problems[0]


def test_a_sideways_import_is_caught(tmp_path):
    """Two packages on one floor may not import each other: that is how cycles start."""
    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / "x.py").write_text("from conveyor.reports import html\n")
    assert len(violations(tmp_path)) == 1
