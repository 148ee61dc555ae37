"""The package's shape: no import cycles between amc's modules, and no module that has grown past its job."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "amc"
MAX_LINES = 450
LARGER = {}  # module -> why it may be longer (none today)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every amc module `name` imports, at the top or inside a function (a lazy import still ties two modules)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        edges.update(t for t in targets if t in modules and t != name)
    return edges


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    # the root package is the public facade: it imports the API modules, and nothing inside may import it back
    assert not [name for name, edges in graph.items() if "amc" in edges and not name.startswith("amc.cli")], \
        "modules inside amc import the facade `amc` (import the module that defines the name instead)"
    graph["amc"] = set()  # its own imports cannot close a cycle once nothing imports it back (the cli package is the top)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_has_grown_past_its_job():
    too_long = {name: n for name, path in _modules().items()
                if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in LARGER}
    assert not too_long, f"split these modules, or say why in LARGER: {too_long}"
    env = PACKAGE / "env.py"
    assert len(env.read_text().splitlines()) <= 200  # a thin Gymnasium wrapper over the budget and the scorer


def _assigned_attributes(tree: ast.AST) -> list[tuple[str, int]]:
    """(attribute, line) of every assignment to an attribute of an object other than `self`."""
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            for t in (target.elts if isinstance(target, ast.Tuple) else [target]):
                if isinstance(t, ast.Attribute) and not (isinstance(t.value, ast.Name) and t.value.id == "self"):
                    found.append((t.attr, node.lineno))
    return found


# the state of amc's own objects, each written only by its owner's module: the racing bar, the budget an
# environment clips by and what it holds, a latency model's calibration, the search's phases and scorer
OWNED = {"best": "amc.scoring", "calibration": "amc.scoring", "budget": "amc.env",
         "limit": "amc.budget", "total_cost": "amc.budget", "cost_model": "amc.budget",
         "scale": "amc.latency.table", "offset_ms": "amc.latency.table", "points": "amc.latency.table",
         "dropped_point": "amc.latency.table", "final_seconds": "amc.callbacks", "episodes": "amc.callbacks"}


def test_no_module_writes_another_objects_state():
    """Scores are return values and each object's state is its own: nothing assigns `<other>.best` (the racing
    bar is `Scorer.note_best`), `<env>.budget` (`CompressionEnv.use_budget`), a budget's or latency model's
    figures (a refit makes new ones) or the phases of a search, outside the owner's module, in the package
    or its benchmarks; and no budget is refreshed in place."""
    paths = {**_modules(), **{f"benchmarks.{p.stem}": p for p in (SRC.parent / "benchmarks").glob("*.py")}}
    offenders = [f"{name}:{line} .{attr}" for name, path in paths.items()
                 for attr, line in _assigned_attributes(ast.parse(path.read_text()))
                 if attr in OWNED and OWNED[attr] != name]
    assert not offenders, f"assigned from outside its owner: {offenders}"
    refreshed = [name for name, path in paths.items() if "refresh_costs" in path.read_text()]
    assert not refreshed, f"a budget is built anew (Budget.refitted), never refreshed: {refreshed}"


def test_the_attribute_check_sees_an_assignment_from_outside():
    tree = ast.parse("scorer.best = 1\nself.best = 2\na, other.best = 3, 4\nx.best += 1\n")
    assert [line for attr, line in _assigned_attributes(tree) if attr == "best"] == [1, 3, 4]


def _run_file_literals(tree: ast.AST, names: set[str]) -> list[tuple[str, int]]:
    """(name, line) of every string in code that is a run file's name or a path ending in one (`out /
    "summary.json"`, `open("run/model.pt")`); the text of an f-string (a message naming a file) is not code."""
    in_messages = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for inner in ast.walk(node)}
    return [(node.value, node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_messages
            and any(node.value == name or node.value.endswith("/" + name) for name in names)]


def test_only_the_run_directory_names_its_files():
    """A run's files have one owner (`amc.runs.RunDir`, with `amc.run_lifecycle`); their names live in
    `amc.run_names`. No other module builds a run file's path from its literal name (model.pt, summary.json, ...):
    it calls RunDir's methods."""
    from amc.run_names import RUN_FILES

    offenders = [f"{name}:{line} {literal!r}" for name, path in _modules().items() if name != "amc.run_names"
                 for literal, line in _run_file_literals(ast.parse(path.read_text()), RUN_FILES)]
    assert not offenders, f"run files named outside amc.run_names (use RunDir's methods): {offenders}"


def test_the_run_file_check_sees_a_path_built_by_name():
    tree = ast.parse('a = out / "summary.json"\nb = open("run/model.pt")\nc = f"wrote {out}/model.pt"\n'
                     'd = "model.pt is the export"\n')
    assert _run_file_literals(tree, {"summary.json", "model.pt"}) == [("summary.json", 1), ("run/model.pt", 2)]
