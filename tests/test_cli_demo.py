"""`shardkeep demo --dir` deletes only a directory an earlier demo made."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from client.cli.demo import MARKER, DemoDirectoryError, prepare_directory, run_demo
from client.cli.main import main


def test_demo_refuses_a_non_empty_directory_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack on a careless user: `demo --dir ~/wallets` used to rmtree whatever it was given.
    Now the directory and every file in it stay, and the demo starts nothing."""
    mine = tmp_path / "wallets"
    (mine / "keys").mkdir(parents=True)
    (mine / "keys" / "seed.txt").write_text("my own file\n")
    status = main(["demo", "--dir", str(mine)])
    err = capsys.readouterr().err
    assert status == 2
    assert "is not empty and was not made by `shardkeep demo`" in err
    assert (mine / "keys" / "seed.txt").read_text() == "my own file\n"
    assert sorted(p.name for p in mine.rglob("*")) == ["keys", "seed.txt"]


def test_demo_refuses_a_file_as_its_directory(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(DemoDirectoryError, match="not a directory"):
        prepare_directory(target)
    assert target.read_text() == "keep me"


def test_a_new_or_empty_directory_is_used_and_marked(tmp_path: Path) -> None:
    for directory in (tmp_path / "new" / "demo", tmp_path / "empty"):
        if directory.name == "empty":
            directory.mkdir()
        prepare_directory(directory)
        assert [p.name for p in directory.iterdir()] == [MARKER]


def test_a_directory_an_earlier_demo_made_is_recreated(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    prepare_directory(directory)
    (directory / "host.db").write_bytes(b"old run")
    (directory / "pki").mkdir()
    prepare_directory(directory)
    assert [p.name for p in directory.iterdir()] == [MARKER]


def test_the_whole_demo_story_passes(tmp_path: Path) -> None:
    """What `make run` runs: every step of the story, each checked by the demo itself
    (signatures verified, the old epoch refused once the devices acknowledged the new one)."""
    out = io.StringIO()
    assert run_demo(tmp_path / "demo", out) == 0
    story = out.getvalue()
    assert "a share of the old epoch is refused" in story
    assert "Solana address" in story and "verified by libsodium" in story
    assert "refused by the enclave: " in story and "no allow policy" in story
    assert story.rstrip().endswith("demo finished: all checks passed")
