"""The shape of zoo/: the import-linter layers contract, no import cycles (imports inside
functions count too), no private name imported across modules, no function over 100 lines.

Each failure lists every offender, so one run says what to fix.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import zoo

PACKAGE = Path(zoo.__file__).resolve().parent
REPO = PACKAGE.parent
MAX_FUNCTION_LINES = 100


def _module_files() -> dict[str, Path]:
    """``zoo.x`` -> ``zoo/x.py`` for every module of the package (``zoo`` for ``__init__``)."""
    files = {}
    for path in sorted(PACKAGE.glob("*.py")):
        files["zoo" if path.stem == "__init__" else f"zoo.{path.stem}"] = path
    return files


MODULES = _module_files()


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST):
    """Every node of ``tree``, at any depth (function bodies included), except what is under
    ``if TYPE_CHECKING:``, which never runs. The ``else:`` of such an ``if`` does run."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _base(module: str, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module
    package = module if module == "zoo" else module.rpartition(".")[0]
    parts = package.split(".")
    parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join(parts + ([node.module] if node.module else []))


def _imports(module: str, tree: ast.AST) -> list[tuple[str, str, int]]:
    """``(imported module, name or "", line)`` for each zoo import in ``tree``. ``from zoo
    import x`` imports the module ``zoo.x`` when there is one, else the name ``x`` of ``zoo``."""
    found = []
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "zoo"]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node)
            if base is None or base.split(".")[0] != "zoo":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, "", node.lineno) if sub in MODULES else (base, alias.name, node.lineno))
    return found


def _trees() -> dict[str, ast.AST]:
    return {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def _graph() -> dict[str, set[str]]:
    """Module -> the zoo modules it imports, anywhere in its code."""
    graph = {}
    for module, tree in _trees().items():
        graph[module] = {target for target, _, _ in _imports(module, tree) if target in MODULES and target != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the component's first module back to itself (breadth first)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return sorted(component)  # unreachable for a strongly connected component


# -- the tests ---------------------------------------------------------------------------------


def test_the_import_linter_contract_holds():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    if not lint_imports.exists():
        pytest.fail(f"{lint_imports} is missing: pip install -e '.[test]' installs import-linter")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}{result.stderr}"


def test_the_cycle_finder_finds_cycles():
    # the check below passing means something only if it can fail
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycle_in_zoo_counting_imports_inside_functions():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles in zoo/ (imports inside functions count):\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in cycles
    )


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _private_uses(module: str, tree: ast.AST) -> list[str]:
    """``from zoo.x import _y``, and ``x._y`` where ``x`` names another zoo module."""
    uses = []
    aliases = {}  # local name -> zoo module, from `import zoo.x as m` and `from zoo import x`
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
        elif isinstance(node, ast.ImportFrom) and _base(module, node) in MODULES:
            base = _base(module, node)
            for a in node.names:
                if f"{base}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{base}.{a.name}"
    for target, name, line in _imports(module, tree):
        if target != module and _is_private(name):
            uses.append(f"{line}: from {target} import {name}")
    for node in _nodes(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = _dotted(node.value)
            owner = aliases.get(owner, owner)
            if owner in MODULES and owner != module:
                uses.append(f"{node.lineno}: {owner}.{node.attr}")
    return uses


def test_no_private_name_is_used_across_modules():
    offenders = [
        f"  {_relative(MODULES[module])}:{use}"
        for module, tree in _trees().items()
        for use in _private_uses(module, tree)
    ]
    assert not offenders, "private names of another zoo module (make them public or move the code):\n" + "\n".join(
        offenders
    )


def test_no_function_in_zoo_is_longer_than_100_lines():
    offenders = []
    for module, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    offenders.append(f"  {_relative(MODULES[module])}:{node.lineno}: {node.name} ({length} lines)")
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)
