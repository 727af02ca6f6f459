"""The import graph of src/: no cycles, layers that import only downward, and lazy imports only where they defer
a heavy dependency.

Every import statement counts, module level or inside a function: a lazy import only hides a cycle until someone
moves it to the top of the file. The toyfaces layers, bottom up: the world (src.toyworld.*), its judge
(src.toyworld.judge), the evaluation (src.evaluation), the build (src.toyworld.build). Parsed statically with ``ast``.
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


def import_nodes(path: Path, scope: str = "all") -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a file: ``all``, those run at import time (``module``: outside any function) or
    those inside functions (``function``)."""
    tree = ast.parse(path.read_text(), str(path))
    inside = {
        id(n)
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(fn)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    if scope == "all":
        return nodes
    return [n for n in nodes if (id(n) in inside) == (scope == "function")]


def imports_of(name: str, path: Path, modules: dict[str, Path], nodes: list | None = None) -> set[str]:
    """The src modules ``name`` imports: ``import src.x.y`` -> the longest known prefix; ``from src.x import y`` ->
    ``src.x.y`` when y is a submodule, else ``src.x``; relative imports resolved against the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in import_nodes(path) if nodes is None else nodes:
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
    assert "src.toyworld.assets" in graph["src.toyworld.build.stages"]  # from src.toyworld import assets
    assert "src.models.arcface" in graph["src.evaluation.real"]  # only imported inside a method
    assert "src.evaluation.guide" in graph["src.evaluation.toyfaces"]  # only imported inside a method


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
    judge = {
        "src.toyworld.judge.oracle",
        "src.toyworld.judge.calibration",
        "src.toyworld.judge.calibration_set",
    }
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


def layer_of(module: str) -> int | None:
    """The toyfaces layer of a module, bottom up (None: the framework, outside the layers)."""
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


LAYERS = (  # most specific prefix first
    ("src.toyworld.build", 3),
    ("src.evaluation", 2),
    ("src.toyworld.judge", 1),
    ("src.toyworld", 0),
)
LAYER_NAMES = ("the world", "the judge", "the evaluation", "the build")


def test_toyfaces_layers_import_only_downward():
    """world < judge < evaluation < build: no module reaches a layer above its own, not even through the
    framework's modules (the world must not import the judge, the judge neither the evaluation nor the build)."""
    graph = import_graph()
    assert {layer_of(m) for m in graph} >= {0, 1, 2, 3}, "every layer has modules"
    upward = [
        f"{m} ({LAYER_NAMES[layer_of(m)]}) -> {d} ({LAYER_NAMES[layer_of(d)]})"
        for m in sorted(graph)
        if layer_of(m) is not None
        for d in sorted(reachable(graph, m))
        if (layer_of(d) or -1) > layer_of(m)
    ]
    assert not upward, "imports up the toyfaces layers:\n" + "\n".join(upward)


# third-party packages whose import is slow or pulls big libraries: the one reason for an import inside a function
HEAVY = frozenset(
    {
        "open_clip",
        "lpips",
        "facenet_pytorch",
        "wandb",
        "pytorch_lightning",
        "lightning",
        "kornia",
        "torchmetrics",
    }
)


def heavy_packages() -> dict[str, set[str]]:
    """Per src module, the HEAVY packages that importing it loads (its module-level imports, transitively)."""
    modules = src_modules()
    direct: dict[str, set[str]] = {}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        nodes = import_nodes(path, "module")
        graph[name] = imports_of(name, path, modules, nodes)
        tops = {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
        tops |= {n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        direct[name] = {t.split(".")[0] for t in tops} & HEAVY
    return {m: direct[m].union(*(direct[d] for d in reachable(graph, m))) for m in modules}


def test_lazy_imports_only_defer_heavy_dependencies():
    """An import of a src module inside a function is there to defer a heavy package that the importing module
    does not load anyway, never to dodge a cycle: anything else belongs at the top of the file."""
    modules = src_modules()
    heavy = heavy_packages()
    needless = []
    for name, path in modules.items():
        for node in import_nodes(path, "function"):
            targets = imports_of(name, path, modules, [node])
            deferred = set().union(*(heavy[t] for t in targets)) - heavy[name] if targets else set()
            if targets and not deferred:
                needless.append(f"{name}: {ast.unparse(node)}")
    assert not needless, "imports inside functions that defer nothing heavy (move them up):\n" + "\n".join(
        needless
    )


def test_lazy_import_check_sees_a_needless_one(tmp_path):
    """The check above flags a function-level import of a light module (planted in a temporary file)."""
    modules = src_modules()
    path = tmp_path / "planted.py"
    path.write_text("def f():\n    from src.utils.stats import mean_ci\n    return mean_ci\n")
    nodes = import_nodes(path, "function")
    assert [ast.unparse(n) for n in nodes] == ["from src.utils.stats import mean_ci"]
    targets = imports_of("src.planted", path, modules, nodes)
    assert targets == {"src.utils.stats"} and not heavy_packages()["src.utils.stats"]


def test_importing_the_package_loads_no_command():
    """``import src`` (which ``python -m src.<command>`` runs first) must not import a command's module: runpy
    would then run a second copy of it (a RuntimeWarning on stderr, and module state held twice)."""
    import subprocess
    import sys

    commands = {module_name(p) for p in SRC.rglob("*.py") if 'if __name__ == "__main__"' in p.read_text()}
    assert "src.convert" in commands and "src.toyworld.build.__main__" in commands
    code = "import sys, src; print(' '.join(m for m in sys.modules if m.startswith('src.')))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=SRC.parent).stdout.split())  # fmt: skip
    assert not commands & loaded, f"import src loads commands: {sorted(commands & loaded)}"
