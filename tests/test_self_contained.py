"""A clone with nothing beside it is complete: vendored vectors match their provenance, and no
file in the repository reads data from a path outside it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tests.vectors import VECTORS

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = VECTORS / "PROVENANCE.md"
# Directories a checkout or a run creates, never part of the repository.
NOT_OURS = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", "var"}
TEXT_SUFFIXES = {"", ".py", ".pyi", ".md", ".toml", ".txt", ".cfg", ".ini", ".sh", ".json", ".yaml"}
TEXT_SUFFIXES |= {".yml", ".conf", ".service", ".target", ".env", ".example", ".sql", ".proto"}
# A sibling checkout the project once read its vectors from, by every name it went under.
SIBLING = re.compile(r"\.\./shared\b|SHARDKEEP_SHARED|parents\[\d+\]\s*/\s*[\"']shared[\"']")
RELATIVE = re.compile(r"(?<![\w.])((?:\.\./)+[\w.\-/]*)")
FILE_PARENTS = re.compile(r"__file__\)\.resolve\(\)\.parents\[(\d+)\]")


def provenance_rows() -> dict[str, str]:
    """File name (relative to tests/vectors) -> SHA-256, from PROVENANCE.md's table."""
    rows = {}
    for line in PROVENANCE.read_text().splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.fullmatch(r"[0-9a-f]{64}", cells[4]):
            rows[cells[0]] = cells[4]
    return rows


def vendored_files() -> set[str]:
    return {
        path.relative_to(VECTORS).as_posix()
        for path in VECTORS.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    } - {"__init__.py", "PROVENANCE.md"}


def repository_text_files() -> list[Path]:
    """The repository's own text files: code, docs, build and deploy files (not vendored data)."""
    files = []
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if NOT_OURS & set(relative.parts) or not path.is_file() or path.suffix not in TEXT_SUFFIXES:
            continue
        if relative.parts[:2] == ("tests", "vectors") and path.suffix != ".py":
            continue
        files.append(path)
    return files


def test_every_vendored_vector_has_a_provenance_row_with_its_sha256() -> None:
    rows = provenance_rows()
    assert set(rows) == vendored_files()
    for name, digest in rows.items():
        actual = hashlib.sha256((VECTORS / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name} differs from its upstream copy"


def test_the_ed25519_vectors_are_vendored_for_a_later_implementation() -> None:
    names = vendored_files()
    assert "rfc9591/frost-ed25519-sha512.json" in names
    assert {n for n in names if n.startswith("zf-frost-ed25519/")} == {
        f"zf-frost-ed25519/{leaf}"
        for leaf in (
            "elements.json",
            "repair-share.json",
            "vectors-big-identifier.json",
            "vectors.json",
            "vectors_dkg.json",
        )
    }


def test_the_scan_covers_code_docs_and_deployment_files() -> None:
    scanned = {path.relative_to(ROOT).as_posix() for path in repository_text_files()}
    for expected in ("README.md", "Makefile", "tests/vectors/__init__.py", "client/cli/main.py"):
        assert expected in scanned
    assert any(name.startswith("deploy/") for name in scanned)
    assert "tests/vectors/bip-0340-test-vectors.csv" not in scanned  # upstream data, not ours


def offences(text: str, path: Path) -> list[str]:
    """Where ``text``, living at ``path``, names a sibling checkout, or a relative path or a
    ``__file__`` parent that leaves the repository."""
    found = [f"names {m.group(0)!r}" for m in SIBLING.finditer(text)]
    for match in RELATIVE.finditer(text):
        if not (path.parent / match.group(1)).resolve().is_relative_to(ROOT):
            found.append(f"{match.group(1)} leaves the repository")
    for match in FILE_PARENTS.finditer(text):
        if not path.parents[int(match.group(1))].is_relative_to(ROOT):
            found.append(f"__file__ parents[{match.group(1)}] leaves the repository")
    return found


def test_no_file_reads_outside_the_repository() -> None:
    """No code, doc, build or deployment file points at a checkout beside the repository or at a
    path above it (this file spells those patterns in order to find them, so it is left out)."""
    me = Path(__file__).resolve()
    found = {
        path.relative_to(ROOT).as_posix(): offences(path.read_text(errors="replace"), path)
        for path in repository_text_files()
        if path != me
    }
    assert {name: what for name, what in found.items() if what} == {}


def test_the_scan_catches_a_loader_that_reads_a_sibling_checkout() -> None:
    """The scan is not vacuous: the vector loader this project once had is caught, four ways."""
    old_loader = (
        'SHARED = Path(os.environ.get("SHARDKEEP_' + 'SHARED", '
        'Path(__file__).resolve().parents[2] / "shared"))\n'
        'DOCS = "../../outside/notes.md"\n'
    )
    assert len(offences(old_loader, ROOT / "tests" / "vectors.py")) == 4
    inside = 'HERE = Path(__file__).resolve().parents[1] / "README.md"\n'
    assert offences(inside, ROOT / "tests" / "test_x.py") == []
