"""Imports only run downward: ecrm → agents → streams → schemas (docs/design.md). Every
import in the tree is read with `ast` (those inside functions and under TYPE_CHECKING
too), so a module that reaches up a floor fails here rather than in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the floors, top first: a module may import its own floor and those below it
FLOORS = ("ecrm", "agents", "streams", "schemas")


def _floor_of(module: str) -> str | None:
    top = module.split(".", 1)[0]
    return top if top in FLOORS else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def upward_imports(root: Path = ROOT) -> list[str]:
    """`file:line imports module` for each import that runs up a floor."""
    wrong = []
    for floor in FLOORS:
        rank = FLOORS.index(floor)
        for path in sorted((root / floor).rglob("*.py")):
            for line, module in _imports(path):
                target = _floor_of(module)
                if target is not None and FLOORS.index(target) < rank:
                    wrong.append(f"{path.relative_to(root)}:{line} imports {module}")
    return wrong


def test_no_module_imports_a_floor_above_its_own() -> None:
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "streams").mkdir()
    (tmp_path / "streams" / "bad.py").write_text(
        "def f():\n    from agents.profile.keeper import ProfileKeeper\n"
    )
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "fine.py").write_text("import orjson\nfrom schemas import pii\n")
    assert upward_imports(tmp_path) == ["streams/bad.py:2 imports agents.profile.keeper"]


@pytest.mark.parametrize("floor", FLOORS)
def test_every_floor_is_a_package_the_check_reads(floor: str) -> None:
    assert any((ROOT / floor).rglob("*.py")), f"{floor}/ holds no module: the check reads nothing"


def test_the_api_calls_the_domain_not_a_command() -> None:
    """ecrm/api/ and ecrm/commands/ are two shells on the same floor: what both need lives
    a floor below (agents/), so neither imports the other."""
    api = ROOT / "ecrm" / "api"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted(api.rglob("*.py"))
        for line, module in _imports(path)
        if module.startswith("ecrm.commands")
    ]
    assert wrong == []
