"""The project's docs stand on their own: every link resolves inside the repository, the README
keeps its two commands at the top, and every test the threat model names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").rglob("*.md"))
MARKDOWN = [ROOT / "README.md", *DOCS, *sorted((ROOT / "deploy").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
TEST_REFERENCE = re.compile(r"`(test_\w+\.py)::(test_\w+)`")


def links(path: Path) -> list[str]:
    return LINK.findall(path.read_text())


def test_the_docs_exist() -> None:
    names = {path.relative_to(ROOT / "docs").as_posix() for path in DOCS}
    expected = {"README.md", "architecture.md", "threat-model.md", "protocols.md"}
    assert expected | {"operations.md", "benchmarks.md"} <= names


def test_every_relative_link_resolves_to_a_file_in_the_repository() -> None:
    broken = []
    for path in MARKDOWN:
        for target in links(path):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            resolved = (path.parent / target.split("#")[0]).resolve()
            if not (resolved.is_relative_to(ROOT) and resolved.exists()):
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_the_readme_links_only_into_the_repository() -> None:
    readme = ROOT / "README.md"
    assert [t for t in links(readme) if re.match(r"[a-z]+:", t)] == []
    assert {"docs/README.md", "docs/architecture.md", "docs/threat-model.md"} <= set(links(readme))


def test_the_readme_keeps_its_two_commands_at_the_top() -> None:
    text = (ROOT / "README.md").read_text()
    first_section = text.split("\n## ")[1]
    assert first_section.startswith("Two commands\n")
    block = first_section.split("```")[1]
    commands = [line.split("#")[0].strip() for line in block.splitlines()[1:] if line.strip()]
    assert commands == ["make run", "make test"]


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "threat-model.md").read_text()
    named = TEST_REFERENCE.findall(text)
    assert len(named) > 50
    missing = [
        f"{module}::{name}"
        for module, name in named
        if not re.search(rf"^(async )?def {name}\(", (ROOT / "tests" / module).read_text(), re.M)
    ]
    assert missing == []


def test_the_docs_speak_of_the_project_alone() -> None:
    """No document points readers at material outside the repository (design notes kept
    elsewhere, a sibling checkout, tracker notes)."""
    outside = re.compile(r"\.\./shared|\bDESIGN\.md|\bSTYLE\.md|issue notes", re.I)
    found = {
        path.relative_to(ROOT).as_posix(): outside.findall(path.read_text()) for path in MARKDOWN
    }
    assert {name: hits for name, hits in found.items() if hits} == {}


def test_no_code_cites_notes_outside_the_repository() -> None:
    """Comments, docstrings, protos and deployment files cite the project's docs or a spec,
    never design or style notes a clone does not have."""
    outside = re.compile(r"\b(?:DESIGN|STYLE)\.md\b")
    suffixes = {".py", ".pyi", ".proto", ".conf", ".service", ".sh", ".toml", ".yaml", ".yml"}
    cited = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted(ROOT.rglob("*"))
        if path.suffix in suffixes
        and path.is_file()
        and not {".git", ".venv", "var", "__pycache__"} & set(path.relative_to(ROOT).parts)
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert cited == []
