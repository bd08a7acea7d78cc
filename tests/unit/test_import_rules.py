"""The import rule, checked from the code itself (every `import` and `from … import`, also those
inside functions, which only defer the cost of an import, not the dependency):

- `canary/` (the decision core and the request path) and `registry/` (MLflow) never import
  `controller/`, nor each other: `controller/` is the one place where they meet;
- `canary/` is two subpackages and nothing else: the decision core (`canary.decision`: spec,
  engine, checks, judges) never imports the traffic side (`canary.traffic`: router, comparator,
  mirror, what a model answered), which may import the core's types;
- `controller/`'s rooms lean one way: the runtime at its root (reconcile, the platform port, the
  registry poll) imports none of them; the backends behind the port (`kserve`, `local`) never
  import each other; nothing outside the command lines (`cli`) imports them;
- no circle among the product's modules: each can be read, and tested, after what it imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("canary", "controller", "registry")


def product_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    return modules


def imported_names(path: Path, module: str) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """module -> the product modules it imports (a name imported from a package counts as that
    package's submodule when there is one, else as the package)."""
    modules = product_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target in imported_names(path, name):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
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
    return found


def test_the_graph_sees_imports_at_module_level_and_inside_functions() -> None:
    graph = import_graph()
    assert "controller.reconcile" in graph["controller.local.runner"]  # module level
    assert "controller.local.runner" in graph["controller.cli.main"]  # inside a function


def test_canary_and_registry_never_import_controller_nor_each_other() -> None:
    crossings = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if module.split(".")[0] in ("canary", "registry") and target.split(".")[0] != module.split(".")[0]
    ]
    assert crossings == []


def test_the_decision_core_never_imports_the_traffic_side() -> None:
    graph = import_graph()
    sides = {module.split(".")[1] for module in graph if module.startswith("canary.")}
    assert sides == {"decision", "traffic"}, "every canary module sits in canary.decision or canary.traffic"
    crossings = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith("canary.decision")
        for target in sorted(targets)
        if target.startswith("canary.traffic")
    ]
    assert crossings == []


ROOMS = ("cli", "demo", "kserve", "kube", "local", "report")


def room(module: str) -> str | None:
    """The room of a controller module (`controller.kserve.patch` -> `kserve`); None at the root."""
    parts = module.split(".")
    return parts[1] if parts[0] == "controller" and len(parts) > 2 and parts[1] in ROOMS else None


def test_controller_rooms_lean_one_way() -> None:
    graph = import_graph()
    rooms_found = {room(module) for module in graph} - {None}
    assert rooms_found == set(ROOMS), "a new room under controller/ belongs in ROOMS and in the rules"
    wrong = []
    for module, targets in graph.items():
        if not module.startswith("controller."):
            continue
        here = room(module)
        for target in sorted(targets):
            there = room(target)
            if there is None or there == here:
                continue
            if here is None:
                wrong.append(f"{module} (the runtime) imports the room {there}: {target}")
            elif {here, there} == {"kserve", "local"}:
                wrong.append(f"{module} imports the other backend: {target}")
            elif there == "cli":
                wrong.append(f"{module} imports the command lines: {target}")
    assert wrong == []


def test_no_module_imports_itself_back_through_others() -> None:
    assert circles(import_graph()) == []


def test_a_circle_is_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]
