"""The house's layering, read from the source (ast) of every module: no module imports from a stage above
its own (cache and bridge < extract < evaluate < cli; the package root's errors module below them all), and
no two modules import each other, directly or around a circle, outside the method registry."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the stage of each top-level name of the package; a module may import from its own stage and those below
STAGES = {"errors": 0, "__init__": 0, "cache": 1, "bridge": 1, "extract": 2, "evaluate": 3, "cli": 4}
#: where import circles are allowed: bridge/methods/__init__.py imports every method, whose modules sit inside it
REGISTRY = "clipbridge.bridge.methods"


def _modules() -> dict[str, Path]:
    """{dotted name: file} of every module of the package."""
    found = {}
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        if any(part.startswith(".") for part in parts) or parts[0] in ("tests", "build", "docs", "setup"):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("clipbridge",) + parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `path` imports, anywhere in it (module level or inside a function);
    `from package import name` counts as an import of package.name when that is a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                         for alias in node.names)
    return {name for name in names if name.split(".")[0] == "clipbridge"}


def _top(module: str) -> str:
    """'clipbridge.evaluate.fitting.api' -> 'evaluate'; the package itself -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _stage(module: str) -> int:
    return STAGES[_top(module)]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path, modules) if m in modules and m != name} for name, path in modules.items()}


def test_every_clipbridge_import_resolves_to_a_module_of_the_tree():
    """What a static import-graph tool sees from the checkout: each `clipbridge.*` module named in an import
    is a file or package of this tree (the package is the repository root)."""
    modules = _modules()
    unresolved = sorted(f"{name} -> {target}" for name, path in modules.items()
                        for target in _imports(path, modules) if target not in modules)
    assert not unresolved


def test_no_module_imports_from_a_stage_above_its_own():
    upward = sorted(f"{name} -> {target}" for name, targets in _graph().items() for target in targets
                    if _stage(target) > _stage(name))
    assert not upward


def test_cache_and_bridge_do_not_import_each_other():
    graph = _graph()
    across = sorted(f"{name} -> {target}" for name, targets in graph.items() for target in targets
                    if {_top(name), _top(target)} == {"cache", "bridge"})
    assert not across


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def test_no_import_circles_outside_the_method_registry():
    circles = [c for c in _circles(_graph()) if not all(m == REGISTRY or m.startswith(REGISTRY + ".") for m in c)]
    assert not circles


def test_the_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
