"""The import rule (docs/architecture.md): dyco_perception's core imports no higher layer (its
ros/ node, the tools/ beside it, dyco_training, rclpy), the node in ros/ never imports tools/,
its modules import each other without a cycle, and the decoder methods share code through
decoders/common.py, never through each other. Parsed with `ast` (nothing is imported), lazy
imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "dyco_perception" / "dyco_perception"
PACKAGE = "dyco_perception"
ROS_NODE = "dyco_perception.ros"
TOOLS = "dyco_perception.tools"
HIGHER_LAYERS = (ROS_NODE, TOOLS, "dyco_training", "rclpy")
DECODERS = "dyco_perception.model.decoders"
DECODER_SHARED = {DECODERS, f"{DECODERS}.base", f"{DECODERS}.common"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imported_names(path: Path, module: str, is_package: bool) -> set[str]:
    """Every absolute module name `path` imports (`from a import b` gives a and a.b)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                anchor = here[: len(here) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, with the packages an import initialises on the
    way (`import a.b.c` runs a/__init__ and a/b/__init__) except the importer's own ancestors
    (already initialised when it runs)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own_ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges = set()
        for target in imported_names(path, name, path.name == "__init__.py"):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix not in own_ancestors and prefix != name:
                    edges.add(prefix)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def is_core(module: str) -> bool:
    return not (in_package(module, ROS_NODE) or in_package(module, TOOLS))


def test_the_graph_sees_the_packages_modules_and_their_imports() -> None:
    graph = import_graph()
    assert {"dyco_perception.config", "dyco_perception.validation", DECODERS} <= set(graph)
    assert "dyco_perception.validation" in graph["dyco_perception.config"]
    assert f"{DECODERS}.common" in graph[f"{DECODERS}.dyco3d"]
    assert DECODERS in graph["dyco_perception.model.network"]


def test_core_modules_import_no_higher_layer() -> None:
    offending = {}
    for name, path in package_modules().items():
        if not is_core(name):
            continue
        names = imported_names(path, name, path.name == "__init__.py")
        bad = sorted(n for n in names if n.startswith(HIGHER_LAYERS))
        if bad:
            offending[name] = bad
    assert not offending, f"core modules importing a higher layer: {offending}"


def test_the_node_imports_no_tool() -> None:
    graph = import_graph()
    assert f"{TOOLS}.make_bag" in graph and f"{ROS_NODE}.segment_node" in graph
    offending = {
        name: sorted(t for t in edges if in_package(t, TOOLS))
        for name, edges in graph.items()
        if in_package(name, ROS_NODE) and any(in_package(t, TOOLS) for t in edges)
    }
    assert not offending, f"node modules (ros/) importing the tools: {offending}"


def test_the_ros_shell_needs_no_training_package() -> None:
    offending = {}
    for name, path in package_modules().items():
        names = imported_names(path, name, path.name == "__init__.py")
        bad = sorted(n for n in names if n.startswith("dyco_training"))
        if bad:
            offending[name] = bad
    assert not offending, f"modules importing dyco_training: {offending}"


def test_core_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    core = {
        name: {t for t in edges if is_core(t)} for name, edges in graph.items() if is_core(name)
    }
    cycle = find_cycle(core)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_decoder_methods_share_code_through_common_not_each_other() -> None:
    graph = import_graph()
    methods = {n for n in graph if n.startswith(f"{DECODERS}.") and n not in DECODER_SHARED}
    assert {f"{DECODERS}.dyco3d", f"{DECODERS}.pointgroup"} <= methods
    offending = {m: sorted(graph[m] & methods) for m in methods if graph[m] & methods}
    assert not offending, f"decoder methods importing each other: {offending}"


def test_find_cycle_reports_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
