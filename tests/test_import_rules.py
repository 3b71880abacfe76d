"""Import rules (docs/architecture.md): `tss` imports no other project package;
`host` never imports `tss` or `enclave`; `relay` stays transport-only; and no
project module imports itself back through others (no import circles, lazy
imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = {
    "tss", "enclave", "host", "relay", "client", "coordinator", "shardkeep", "bench", "devkms",
}  # fmt: skip

# package -> project packages it must never import
FORBIDDEN = {
    "tss": PROJECT_PACKAGES - {"tss"},
    "host": {"tss", "enclave", "client", "coordinator"},
    "relay": {"tss", "enclave", "host", "client", "coordinator"},
    "enclave": {"host", "client", "relay", "coordinator"},
    # A device links the client SDK: it must never carry the coordinator's code.
    "client": {"enclave", "host", "coordinator"},
    "coordinator": {"enclave", "host"},
    # The KMS stand-in is "AWS's side": it may use the attestation verifier only.
    "devkms": {"tss", "enclave", "host", "relay", "coordinator"},
}
# Development tooling that starts the whole system, the coordinator included.
EXCEPTIONS = {"client/cli/demo.py": {"coordinator"}}


def test_chain_parsers_import_no_service() -> None:
    # shardkeep.chains is read by the enclave and the client alike: it may lean on
    # tss's errors, never on a side of the service.
    services = {"enclave", "host", "relay", "client", "coordinator"}
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "shardkeep" / "chains").rglob("*.py"))
        for name in sorted(imported_packages(path) & services)
    ]
    assert violations == []


def imported_packages(path: Path) -> set[str]:
    """Top-level package names a module imports (absolute imports only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_import_rules(package: str) -> None:
    modules = modules_of(package)
    assert modules, f"package {package} has no modules"
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules
        for name in sorted(
            imported_packages(path)
            & FORBIDDEN[package] - EXCEPTIONS.get(str(path.relative_to(ROOT)), set())
        )
    ]
    assert violations == []


def test_checker_sees_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import enclave.seal\nfrom tss.curve import G\nfrom . import x\n")
    assert imported_packages(bad) == {"enclave", "tss"}


# The protocol core is sans-IO (docs/architecture.md): no sockets, asyncio, logging,
# clocks or OS randomness. Only the in-process runner `tss.local` draws its
# randomness from the OS, because its callers (tests, benchmarks) pass none.
IO_MODULES = {
    "socket",
    "asyncio",
    "logging",
    "time",
    "os",
    "secrets",
    "random",
    "grpc",
    "structlog",
}
ALLOWED_IO = {"local.py": {"secrets"}}


def test_tss_is_sans_io() -> None:
    violations = []
    for path in modules_of("tss"):
        used = imported_packages(path) & (IO_MODULES - ALLOWED_IO.get(path.name, set()))
        violations += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(used)]
    assert violations == []


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Project modules a module imports when it runs, lazily inside functions
    too (``if TYPE_CHECKING:`` blocks never run): ``from a.b import c`` counts
    as ``a.b.c`` when that is a module, else as ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found & known


def import_graph() -> dict[str, set[str]]:
    paths = [p for package in sorted(PROJECT_PACKAGES) for p in modules_of(package)]
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) - {module_name(p)} for p in paths}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            component.append(node)
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_project_module_imports_itself_back() -> None:
    assert circles(import_graph()) == []


def test_circle_finder_sees_a_lazy_circle() -> None:
    graph = {"a.store": {"a.sqlite"}, "a.sqlite": {"a.store"}, "a.other": {"a.store"}}
    assert circles(graph) == [["a.sqlite", "a.store"]]
