"""Who may import whom, read from the source with ``ast`` (README, "Architecture").

* Outside ``service/backend/`` nothing in ``service/`` imports the embedded engine: not
  ``Keyspace``, ``Board``, ``SessionStore`` (nor their modules), not ``store.disk``. Routes, the
  hub, the WebSocket endpoint and the metrics see only ``service/backend/api.py``.
* ``store`` never imports ``service``.
* ``service/`` has no import cycle (imports under ``if TYPE_CHECKING:`` count too: a cycle
  there is still two modules that cannot be understood apart).
"""

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Modules of the embedded engine, and the names that stand for it wherever they are imported.
ENGINE_MODULES = ("store.keyspace", "store.boards", "store.sessions", "store.skiplist", "store.ttl")
ENGINE_NAMES = {"Keyspace", "Board", "SessionStore"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        yield _module_name(path), path


def _imports(path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import in the file, at any depth."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield base, alias.name, node.lineno


def _is_engine(module: str, name: str | None) -> bool:
    if module == "store.disk" or module.startswith("store.disk."):
        return True
    if module in ENGINE_MODULES:
        return True
    if name is not None and name in ENGINE_NAMES and module.startswith("store"):
        return True
    # ``from store import disk`` / ``from store import keyspace``
    return (
        module == "store"
        and name is not None
        and f"store.{name}"
        in (
            "store.disk",
            *ENGINE_MODULES,
        )
    )


def test_only_the_backend_imports_the_engine() -> None:
    leaks = [
        f"{path.relative_to(ROOT)}:{line}: {module}{'.' + name if name else ''}"
        for mod, path in _sources("service")
        if not (mod == "service.backend" or mod.startswith("service.backend."))
        for module, name, line in _imports(path)
        if _is_engine(module, name)
    ]
    assert not leaks, "outside service/backend/, only the protocols may be used:\n" + "\n".join(
        leaks
    )


def test_store_never_imports_service() -> None:
    leaks = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for _, path in _sources("store")
        for module, _name, line in _imports(path)
        if module == "service" or module.startswith("service.")
    ]
    assert not leaks, "store must not import service:\n" + "\n".join(leaks)


def _service_graph() -> dict[str, set[str]]:
    modules = dict(_sources("service"))
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for module, name, _ in _imports(path):
            for target in (f"{module}.{name}" if name else None, module):
                if target in modules and target != mod:
                    # ``from service.backend import offline`` is an edge to the module, not
                    # to the (tiny) package __init__.
                    graph[mod].add(target)
                    break
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_service_has_no_import_cycle() -> None:
    cycle = _cycle(_service_graph())
    assert cycle is None, "import cycle in service/: " + " -> ".join(cycle or [])


def test_the_checks_see_what_they_guard() -> None:
    """The walkers find real imports: a check that parses nothing would pass forever."""
    graph = _service_graph()
    assert "service.backend.api" in graph["service.runtime"]
    assert "service.backend.embedded" in graph["service.app"]
    assert _is_engine("store.keyspace", "Keyspace") and _is_engine("store.disk.journal", None)
    assert _is_engine("store", "Board") and not _is_engine("store.errors", "StoreError")
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
