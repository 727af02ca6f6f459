"""No import cycles inside src/: every import statement (module level or inside a function) counts.

A lazy import only hides a cycle until someone moves it to the top of the file; keeping the graph acyclic keeps
the layering clear (evaluation -> callbacks never, losses <-> evaluation never). Parsed statically with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    """``src/a/b.py`` -> ``src.a.b``; a package's ``__init__.py`` is the package itself."""
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def src_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py")) if "assets" not in p.relative_to(SRC).parts}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The src modules ``name`` imports: ``import src.x.y`` -> the longest known prefix; ``from src.x import y`` ->
    ``src.x.y`` when y is a submodule, else ``src.x``; relative imports resolved against the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                prefixes = (".".join(parts[:i]) for i in range(len(parts), 0, -1))
                found.update(next(([p] for p in prefixes if p in modules), []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    found.add(sub)
                elif target in modules:
                    found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = src_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, comp) for comp in components]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A concrete cycle through the smallest module of a strongly connected component (breadth-first)."""
    start = min(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def test_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_graph_sees_function_level_and_submodule_imports():
    graph = import_graph()
    assert "src.evaluation.generic" in graph["src.eval"]
    assert "src.toyworld.assets" in graph["src.toyworld.build"]  # from src.toyworld import assets
    assert "src.models.arcface" in graph["src.evaluation.real"]  # only imported inside a method
    assert "src.toyworld.assets" in graph["src.evaluation.toyfaces"]  # only imported inside a method


def test_layering_of_the_evaluation_code():
    """callbacks -> evaluation -> losses / models, never back (not even through other modules)."""
    graph = import_graph()
    evaluation = [m for m in graph if m.startswith("src.evaluation.")]
    assert {"src.evaluation.generic", "src.evaluation.grids"} <= reachable(graph, "src.callbacks")
    assert not [m for m in evaluation if "src.callbacks" in reachable(graph, m)]
    assert not [m for m in reachable(graph, "src.losses") if m.startswith("src.evaluation")]
    assert not graph["src.evaluation"], "src/evaluation/__init__.py re-exports nothing"


def test_no_import_cycles_in_src():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_judge_never_trains_anything():
    """The oracle and its calibration data are evaluation-only: nothing a training step runs (the identity net
    included) can reach them."""
    graph = import_graph()
    judge = {"src.toyworld.oracle", "src.toyworld.calibration", "src.toyworld.calibration_set"}
    trainer_sides = (
        "src.losses",
        "src.module",
        "src.augment",
        "src.data.latents",
        "src.builders",
        "src.toyworld.identity",
    )
    for trainer_side in trainer_sides:
        assert not judge & (reachable(graph, trainer_side) | {trainer_side}), trainer_side
