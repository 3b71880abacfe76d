"""DESIGN.md §2 import rules: `tss` imports no other project package; `host`
never imports `tss` or `enclave`; `relay` stays transport-only."""

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


# The protocol core is sans-IO (DESIGN.md §2): no sockets, asyncio, logging,
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
