"""The architecture, enforced: `gateway` and `consumers` share only `hareway`, the consumer
runtime never loads a web framework, and no module imports itself through others."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "consumers", "hareway")
WEB_FRAMEWORKS = ("fastapi", "starlette", "uvicorn")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    }


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path) -> Iterator[str]:
    """Every module `name` imports at run time, at the top or inside a function."""
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for statement in node.orelse:
                yield from visit(statement)
            return
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}"  # a submodule, or a name in `base`
            yield base
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")))


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {imported for imported in imports(name, path) if imported in known} - {name}
        for name, path in known.items()
    }


def test_gateway_and_consumers_never_import_each_other_and_hareway_neither() -> None:
    crossings = []
    for name, path in modules().items():
        top = name.split(".")[0]
        forbidden = {"gateway": ("consumers",), "consumers": ("gateway",)}.get(
            top, ("gateway", "consumers")
        )
        for imported in imports(name, path):
            if imported.split(".")[0] in forbidden:
                crossings.append(f"{name} imports {imported}")
    assert crossings == []


def test_the_consumer_runtime_imports_no_web_framework() -> None:
    found = [
        f"{name} imports {imported}"
        for name, path in modules().items()
        if name.split(".")[0] in ("consumers", "hareway")
        for imported in imports(name, path)
        if imported.split(".")[0] in WEB_FRAMEWORKS
    ]
    assert found == []


def test_no_module_imports_itself_through_others() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in index:
            connect(node)
    assert cycles == []


@pytest.mark.parametrize(
    ("entry", "absent"),
    [
        ("import gateway.app, gateway.__main__, gateway.testing", ("consumers",)),
        (
            "import consumers, consumers.__main__, consumers.runner, consumers.testing",
            ("gateway", *WEB_FRAMEWORKS),
        ),
        ("import hareway.cli, hareway.store, hareway.amqp", ("gateway", "consumers")),
    ],
)
def test_importing_one_side_loads_nothing_of_the_other(entry: str, absent: tuple[str, ...]) -> None:
    # In a fresh interpreter: what an import really drags in, lazy imports aside.
    probe = (
        f"{entry}\nimport sys\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {absent!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]", done.stdout
