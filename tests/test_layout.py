"""The code's layout: every module imports, imports only what its package may, and no import circle.

The table below is the architecture each package's ``__init__`` docstring states. Imports are read
from the source (those inside functions too, which is where the heavy ones are), so a lazy import
that breaks the layering fails here as well.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import veil

SRC = Path(veil.__file__).parent

CORE = {"veil.errors", "veil.device", "veil.faces", "veil.align", "veil.models", "veil.detect", "veil.protect"}
MAY_IMPORT: dict[str, set[str]] = {
    "veil.errors": set(),
    "veil.console": {"veil.errors"},
    "veil.device": {"veil.errors"},
    "veil.faces": {"veil.errors"},
    "veil.align": {"veil.errors"},
    "veil.models": {"veil.errors", "veil.device", "veil.align"},
    "veil.media": {"veil.errors"},
    "veil.detect": {"veil.errors", "veil.device", "veil.faces", "veil.align", "veil.models"},
    "veil.protect": {"veil.errors", "veil.faces", "veil.align"},
    "veil.cloak": CORE | {"veil.media"},  # the target bank's photos (cloak.targets.load_bank)
    "veil.qmvae": CORE | {"veil.media", "veil.console"},
    "veil.keep": CORE | {"veil.media"},
    "veil.export": {"veil.errors", "veil.faces", "veil.media", "veil.protect"},
    "veil.pipeline": CORE | {"veil.media", "veil.keep", "veil.export"},
    "veil.review": CORE | {"veil.media", "veil.export", "veil.console", "veil.pipeline"},
    "veil.batch": CORE | {"veil", "veil.media", "veil.keep", "veil.pipeline"},
    "veil.stream": {"veil.errors", "veil.device", "veil.models", "veil.media", "veil.console"},
    "veil.action": {"veil.errors", "veil.device", "veil.models", "veil.media", "veil.console"},
    "veil.evaluate": CORE | {"veil.media", "veil.console"},
    "veil.cli": {"veil", "veil.console", "veil.errors", "veil.models", "veil.detect", "veil.protect", "veil.media",
                 "veil.export", "veil.review",
                 "veil.pipeline", "veil.batch", "veil.qmvae", "veil.stream", "veil.action", "veil.evaluate"},
    "veil": {"veil.detect", "veil.faces", "veil.media", "veil.pipeline", "veil.protect"},
}
# Modules of the learned systems that are part of the core: arrays in, arrays out, no media code.
SYSTEM_MATH = {"veil.cloak.protector", "veil.cloak.optimise", "veil.cloak.ops", "veil.qmvae.model", "veil.qmvae.deidentify", "veil.qmvae.paste", "veil.qmvae.search",
               "veil.qmvae.protector", "veil.qmvae.checkpoint"}
IO = {"veil.media", "veil.export", "veil.review", "veil.pipeline", "veil.batch", "veil.keep", "veil.cli", "veil.console", "veil.evaluate"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _unit(module: str) -> str:
    """The package (or top-level module) a module belongs to: veil.qmvae.train -> veil.qmvae."""
    return ".".join(module.split(".")[:2])


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str) -> set[str]:
    """The veil modules `module` imports anywhere in its source (not under TYPE_CHECKING)."""
    tree = ast.parse(MODULES[module].read_text())
    skipped = {id(n) for block in ast.walk(tree) if _type_checking(block) for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "veil"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "veil":
            for alias in node.names:  # `from veil.detect import centerface` imports a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found - {module}


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"))
def test_every_package_says_what_it_may_import(package):
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text())) or ""
    assert "May import" in doc or package == "veil", f"{package}: its docstring says what it is and what it may import"


def test_the_table_names_every_package():
    assert {_unit(m) for m in MODULES} == set(MAY_IMPORT)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layering(module):
    unit = _unit(module)
    foreign = {_unit(m) for m in _imports(module)} - {unit}
    assert foreign <= MAY_IMPORT[unit], f"{module} imports {sorted(foreign - MAY_IMPORT[unit])}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m) in CORE or m in SYSTEM_MATH))
def test_the_core_imports_no_io(module):
    assert not {_unit(m) for m in _imports(module)} & IO


def test_nothing_outside_evaluate_and_the_cli_imports_evaluate():
    users = {m for m in MODULES if any(_unit(i) == "veil.evaluate" for i in _imports(m))}
    assert {_unit(m) for m in users} <= {"veil.evaluate", "veil.cli"}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports that comes back to where it started, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (circle := visit(n, path + [n])):
                return circle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (circle := visit(m, [m])):
            return circle
    return None


def test_find_circle_finds_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle():
    circle = find_circle({m: _imports(m) & set(MODULES) for m in MODULES})
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_table_has_no_circle_between_packages():
    order: list[str] = []

    def place(unit: str, seen: tuple[str, ...] = ()) -> None:
        assert unit not in seen, f"packages in a circle: {seen + (unit,)}"
        for dep in sorted(MAY_IMPORT[unit]):
            place(dep, seen + (unit,))
        if unit not in order:
            order.append(unit)

    for unit in sorted(MAY_IMPORT):
        place(unit)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_files_stay_small(module):
    lines = MODULES[module].read_text().count("\n")
    assert lines <= 420, f"{module}: {lines} lines; a module that grows past ~400 lines is two ideas"
