"""The CLI's software passkey file keeps its signature counter durably.

Each approval first replaces the file (a fresh temporary file, fsync, rename,
then fsync of the directory, so a power cut cannot bring back an old counter
the enclave would refuse). A temporary file that a crashed process left
behind must not stop the next approval.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from client.sdk.approvals import SoftwarePasskey
from client.sdk.policy_files import PasskeyFile, save_passkey


def passkey_file(tmp_path: Path) -> Path:
    path = tmp_path / "phone.passkey"
    save_passkey(SoftwarePasskey("phone", "wallet.example", "https://wallet.example"), path)
    return path


def test_a_leftover_temporary_file_does_not_stop_the_next_approval(tmp_path: Path) -> None:
    path = passkey_file(tmp_path)
    # What a process with this pid (or any other) left when it crashed mid-write.
    leftovers = [
        tmp_path / f".{path.name}.{os.getpid()}.tmp",
        tmp_path / f".{path.name}.12345.tmp",
    ]
    for leftover in leftovers:
        leftover.write_text("half a passkey")
    approver = PasskeyFile(path)
    approver.approve(b"\x01" * 32)
    approver.approve(b"\x02" * 32)
    assert json.loads(path.read_text())["sign_count"] == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Our writes left nothing behind, and did not touch another process's file.
    assert sorted(tmp_path.iterdir()) == sorted([path, *leftovers])
    assert all(leftover.read_text() == "half a passkey" for leftover in leftovers)


def test_the_renamed_counter_is_made_durable_in_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = passkey_file(tmp_path)
    synced: list[os.stat_result] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.fstat(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    PasskeyFile(path).approve(b"\x03" * 32)
    directory = tmp_path.stat()
    # The new file's contents, then the directory entry that names it.
    assert [stat.S_ISDIR(s.st_mode) for s in synced] == [False, True]
    assert (synced[1].st_dev, synced[1].st_ino) == (directory.st_dev, directory.st_ino)


def test_a_failed_counter_write_withholds_the_approval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = passkey_file(tmp_path)
    before = path.read_text()

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        PasskeyFile(path).approve(b"\x04" * 32)
    assert path.read_text() == before
    assert list(tmp_path.iterdir()) == [path]
