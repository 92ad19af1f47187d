"""The package's shape: no module over MAX_LINES lines, no import circle among clar_ray modules.

The import graph is read from the source with ``ast`` (nothing is imported): every
``import clar_ray...`` and ``from ... import ...``, relative ones resolved against the module's
package, function-level ones included, and ``importlib.import_module("clar_ray...")`` with a
constant name; imports under ``if TYPE_CHECKING:`` are left out (they never run).
``from package import name`` points at the module ``package.name`` when there is one, else at
``package``; a parent package is not an edge of its own (Python imports it first,
but an ``__init__`` that gathers its submodules would otherwise be a circle with each of them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "clar_ray"
#: Most lines a module may have (the style guide's "split at ~500").
MAX_LINES = 500
#: Modules still over MAX_LINES while their owners split them: printed, not failed. Drop an
#: entry once its module is within the limit (the test says so).
PENDING_SPLIT: set[str] = set()
#: Import circles (as the set of their modules) whose owners have not yet broken them: printed,
#: not failed. Drop an entry once the circle is gone (the test says so).
PENDING_CIRCLES: set[frozenset[str]] = set()

Graph = Mapping[str, set[str]]


# ------------------------------------------------------------------------ the import graph


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name → source file, for every ``.py`` file of ``root/package``."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _string_import(node: ast.AST) -> str | None:
    """The module of ``importlib.import_module("a.b")`` (a constant name), else None."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func, first = node.func, node.args[0]
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module")
    if named and isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom | ast.Call]:
    """Every import under ``node`` (``import_module`` calls too), skipping the bodies of
    ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)) or _string_import(child):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _imports(child)


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name`` or its longest prefix that is a module of the package."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module → the package's modules it imports (anywhere in it, TYPE_CHECKING aside)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Call):
                targets = [str(_string_import(node))]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in modules else base)
            for target in targets:
                known = _known(target, modules) if target.startswith(package) else None
                if known is not None and known != name:
                    graph[name].add(known)
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """The circles a depth-first search meets (each as ``[a, b, ..., a]``), in module order."""
    state: dict[str, int] = {}  # absent: not seen; 1: on the current path; 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


# ------------------------------------------------------------------------ the checker itself


def test_find_cycles_finds_a_circle_and_only_a_circle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []  # a diamond is no circle


def test_graph_reads_relative_function_level_and_string_imports_not_type_checking_ones(
        tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("import importlib\n\ndef f():\n    from pkg.sub import c\n\n"
                              "def g():\n    return importlib.import_module('pkg.sub')\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import X\n")
    (pkg / "sub" / "c.py").write_text(  # the TYPE_CHECKING import would be a second circle
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n"
        "else:\n    import pkg.a as a\nfrom .. import a\nX = 1\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub", "pkg.sub.c"},
                     "pkg.sub": {"pkg.sub.c"}, "pkg.sub.c": {"pkg.a"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "pkg.a"]]


# ------------------------------------------------------------------------ clar_ray


def test_no_import_circle_among_clar_ray_modules() -> None:
    cycles = find_cycles(import_graph(ROOT, PACKAGE))
    for cycle in cycles:
        if frozenset(cycle) in PENDING_CIRCLES:
            print("import circle, breaking it is pending: " + " -> ".join(cycle))
    cycles = [c for c in cycles if frozenset(c) not in PENDING_CIRCLES]
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_pending_circles_are_listed_only_while_they_exist() -> None:
    found = {frozenset(c) for c in find_cycles(import_graph(ROOT, PACKAGE))}
    gone = [sorted(c) for c in PENDING_CIRCLES if c not in found]
    assert not gone, f"no longer circles: {gone}: drop them from PENDING_CIRCLES"


def _line_counts() -> dict[str, int]:
    return {str(path.relative_to(ROOT)): len(path.read_text().splitlines())
            for path in module_names(ROOT, PACKAGE).values()}


def test_pending_splits_are_listed_only_while_over_the_limit() -> None:
    counts = _line_counts()
    for module in sorted(PENDING_SPLIT):
        print(f"{module}: {counts.get(module)} lines (limit {MAX_LINES}, split pending)")
    within = {m: counts.get(m) for m in PENDING_SPLIT if counts.get(m, 0) <= MAX_LINES}
    assert not within, f"within the limit now: {within}: drop them from PENDING_SPLIT"


def test_no_module_is_over_the_line_limit() -> None:
    over = {m: n for m, n in _line_counts().items() if n > MAX_LINES and m not in PENDING_SPLIT}
    assert not over, f"modules over {MAX_LINES} lines (split them at a seam): {over}"


# ------------------------------------------------------------------------ function length

#: Most lines of code (no blank lines, comments or docstring) a function may have.
MAX_FUNCTION_LINES = 60
#: A function may be longer when a comment right above its ``def`` starts with this and says why.
LONG_REASON = "# long:"


def long_functions(path: Path) -> dict[str, int]:
    """``{function name: lines of code}`` of the functions of a file over the limit, without a
    ``# long:`` reason on the line above them."""
    source = path.read_text()
    lines = source.splitlines()
    out = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        first = body[0]
        start = first.lineno
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                first.value.value, str):
            start = first.end_lineno + 1 if first.end_lineno is not None else start
        code = [line for line in lines[start - 1:node.end_lineno]
                if line.strip() and not line.strip().startswith("#")]
        decorated = min([d.lineno for d in node.decorator_list] + [node.lineno])
        reason = lines[decorated - 2].strip().startswith(LONG_REASON) if decorated > 1 else False
        if len(code) > MAX_FUNCTION_LINES and not reason:
            out[node.name] = len(code)
    return out


def test_long_functions_are_found_and_a_reason_excuses_them(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES + 1))
    (tmp_path / "a.py").write_text(f'def long():\n    """Doc."""\n{body}\n'
                                   f"def short():\n    return 1\n\n"
                                   f"{LONG_REASON} a table, not a story\ndef excused():\n{body}")
    assert long_functions(tmp_path / "a.py") == {"long": MAX_FUNCTION_LINES + 1}


def test_no_function_is_over_the_limit_without_a_reason() -> None:
    over = {f"{path.relative_to(ROOT)}:{name}": n
            for path in module_names(ROOT, PACKAGE).values()
            for name, n in long_functions(path).items()}
    assert not over, (f"functions over {MAX_FUNCTION_LINES} lines of code (split them, or say "
                      f"why above the def with '{LONG_REASON} ...'): {over}")
