"""A save of the CLI state never loses the committed share nor leaves a half-written file.

Faults injected through ``client.cli.state.StateIO`` at every write and every
key derivation of a save (a full disk, an interrupt in the Argon2id step),
a real kernel write failure (RLIMIT_FSIZE) and SIGKILLs of a process that is
saving with the real Argon2id costs. After each, the state loads at the old
epoch with the old shares, or at the new one with the new shares; nothing else.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.cli.state import (
    REAL_IO,
    StateIO,
    commit_pending,
    discard_pending,
    load_pending,
    load_pending_description,
    load_wallet,
    save_pending,
    save_wallet,
    wallet_dir,
)
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet
from client.storage.shares import (
    Argon2Params,
    Passcode,
    insecure_test_params,
    write_file_atomically,
)
from tss import local
from tss.keyshare import KeyShare

PASSCODE = "a long passphrase for the crash tests"
WEAK = insecure_test_params()
CHANGE = {"kind": "refresh", "ceremony_id": "refresh-test"}


Wallets = tuple[Wallet, Wallet, dict[int, PartyIdentity], Wallet]


def make_wallets() -> Wallets:
    """A 2-of-3 wallet (parties 0 and 1 local, 2 the server) at epochs 0, 1 and 2 (refreshes)."""
    epochs = [local.keygen("bip340", threshold=2, parties=3)]
    for _ in range(2):
        epochs.append(local.refresh(epochs[-1]))
    devices = {0: PartyIdentity.generate(), 1: PartyIdentity.generate()}
    parties = [devices[0].party, devices[1].party, PartyIdentity.generate().party]

    def wallet(of: list[KeyShare]) -> Wallet:
        return Wallet(
            "wallet-crash", "bip340", 2, parties, 2, of[0].public_key, of[0].epoch,
            {0: of[0], 1: of[1]},
        )  # fmt: skip

    return wallet(epochs[0]), wallet(epochs[1]), devices, wallet(epochs[2])


@pytest.fixture(scope="module")
def wallets() -> Wallets:
    return make_wallets()


def save(state: Path, wallet: Wallet, devices: dict[int, PartyIdentity], io: StateIO) -> None:
    save_wallet(state, wallet, devices, PASSCODE, params=WEAK, insecure_allow_weak_kdf=True, io=io)


def pend(state: Path, wallet: Wallet, devices: dict[int, PartyIdentity], io: StateIO) -> None:
    save_pending(
        state, wallet, devices, PASSCODE, CHANGE, params=WEAK, insecure_allow_weak_kdf=True, io=io
    )


def secrets_of(wallet: Wallet) -> dict[int, bytes]:
    return {i: s.secret_share_bytes for i, s in wallet.shares.items()}


def committed_epoch_is(state: Path, expected: Wallet) -> None:
    loaded = load_wallet(state, expected.wallet_id, PASSCODE, insecure_allow_weak_kdf=True).wallet
    assert loaded.epoch == expected.epoch
    assert secrets_of(loaded) == secrets_of(expected)


def no_temporary_files(state: Path) -> None:
    assert [p.name for p in state.rglob("*.tmp")] == []


class Fault(Exception):
    """Stands for the injected failure in the counting hooks below."""


def failing_io(
    fail_write_at: int | None = None,
    fail_encrypt_at: int | None = None,
    raise_: Callable[[], BaseException] = lambda: OSError(errno.ENOSPC, "No space left on device"),
) -> tuple[StateIO, list[int]]:
    """StateIO whose n-th write (or encryption) raises; ``counts`` = [writes, encryptions]."""
    counts = [0, 0]

    def write(path: Path, data: bytes) -> None:
        counts[0] += 1
        if counts[0] == fail_write_at:
            raise raise_()
        REAL_IO.write(path, data)

    def encrypt(
        share: KeyShare, wallet_id: str, passcode: Passcode, params: Argon2Params, weak: bool
    ) -> bytes:
        counts[1] += 1
        if counts[1] == fail_encrypt_at:
            raise raise_()
        return REAL_IO.encrypt(share, wallet_id, passcode, params, weak)

    return StateIO(encrypt=encrypt, write=write), counts


@pytest.fixture
def saved_at_epoch_0(tmp_path: Path, wallets: Wallets) -> Iterator[Path]:
    template = tmp_path / "template"
    save(template, wallets[0], wallets[2], REAL_IO)
    yield template


def fresh_copy(template: Path, name: str) -> Path:
    state = template.parent / name
    shutil.copytree(template, state)
    return state


def test_enospc_at_every_write_of_a_commit_keeps_the_old_epoch(
    saved_at_epoch_0: Path, wallets: Wallets
) -> None:
    """A full disk at any write of a refresh's save: the old epoch loads, no torn file."""
    old, new, devices, _ = wallets
    probe, counts = failing_io()
    save(fresh_copy(saved_at_epoch_0, "probe"), new, devices, probe)
    writes = counts[0]
    assert writes == 5  # two shares, two identities, wallet.json
    for k in range(1, writes + 1):
        state = fresh_copy(saved_at_epoch_0, f"enospc-{k}")
        io, _ = failing_io(fail_write_at=k)
        with pytest.raises(OSError) as caught:
            save(state, new, devices, io)
        assert caught.value.errno == errno.ENOSPC
        committed_epoch_is(state, old)
        no_temporary_files(state)
        save(state, new, devices, REAL_IO)  # space freed: the retry commits
        committed_epoch_is(state, new)


def test_enospc_at_every_write_of_a_pending_save_and_its_commit(
    saved_at_epoch_0: Path, wallets: Wallets
) -> None:
    """Pending, then commit, with a full disk at each write: old epoch, or new once committed."""
    old, new, devices, _ = wallets
    for k in range(1, 6):  # save_pending writes 5 files, commit_pending 1
        state = fresh_copy(saved_at_epoch_0, f"pending-{k}")
        io, _ = failing_io(fail_write_at=k)
        with pytest.raises(OSError):
            pend(state, new, devices, io)
        committed_epoch_is(state, old)
        assert load_pending_description(state, new.wallet_id) is None
        no_temporary_files(state)
    state = fresh_copy(saved_at_epoch_0, "pending-commit")
    pend(state, new, devices, REAL_IO)
    io, _ = failing_io(fail_write_at=1)
    with pytest.raises(OSError):
        commit_pending(state, new.wallet_id, io=io)
    committed_epoch_is(state, old)
    pending = load_pending(state, new.wallet_id, PASSCODE, insecure_allow_weak_kdf=True)
    assert pending is not None and secrets_of(pending[0].wallet) == secrets_of(new)
    commit_pending(state, new.wallet_id)
    committed_epoch_is(state, new)
    assert load_pending_description(state, new.wallet_id) is None


@pytest.mark.parametrize("fail_at", [1, 2])
def test_interrupt_during_argon2_keeps_the_old_epoch(
    saved_at_epoch_0: Path,
    wallets: Wallets,
    fail_at: int,
) -> None:
    """Ctrl-C while the passcode key is being derived (the first or second share)."""
    old, new, devices, _ = wallets
    for action in (save, pend):
        state = fresh_copy(saved_at_epoch_0, f"interrupt-{action.__name__}-{fail_at}")
        io, _ = failing_io(fail_encrypt_at=fail_at, raise_=KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            action(state, new, devices, io)
        committed_epoch_is(state, old)
        assert load_pending_description(state, new.wallet_id) is None
        no_temporary_files(state)


def test_write_file_atomically_removes_its_temporary_file_when_fsync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC reported at fsync (delayed allocation): the old file stays, no temporary file."""
    target = tmp_path / "file"
    write_file_atomically(target, b"old contents")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        write_file_atomically(target, b"new contents that do not fit")
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_discarded_pending_key_change_leaves_the_committed_wallet(
    saved_at_epoch_0: Path, wallets: Wallets
) -> None:
    old, new, devices, _ = wallets
    state = fresh_copy(saved_at_epoch_0, "discard")
    pend(state, new, devices, REAL_IO)
    discard_pending(state, new.wallet_id)
    committed_epoch_is(state, old)
    assert sorted(p.name for p in wallet_dir(state, old.wallet_id).iterdir()) == [
        "epoch-0",
        "wallet.json",
    ]


def test_discarded_pending_keygen_leaves_no_wallet(tmp_path: Path, wallets: Wallets) -> None:
    first, _, devices, _ = wallets
    pend(tmp_path, first, devices, REAL_IO)
    with pytest.raises(FileNotFoundError):
        load_wallet(tmp_path, first.wallet_id, PASSCODE, insecure_allow_weak_kdf=True)
    discard_pending(tmp_path, first.wallet_id)
    assert not wallet_dir(tmp_path, first.wallet_id).exists()


def test_commit_keeps_the_previous_epoch_and_prunes_older_ones(
    saved_at_epoch_0: Path, wallets: Wallets
) -> None:
    """The host keeps the previous epoch signable until every party acknowledged the new one."""
    _, new, devices, third = wallets
    state = fresh_copy(saved_at_epoch_0, "prune")
    save(state, new, devices, REAL_IO)
    save(state, third, devices, REAL_IO)
    assert sorted(p.name for p in wallet_dir(state, new.wallet_id).iterdir()) == [
        "epoch-1",
        "epoch-2",
        "wallet.json",
    ]


def test_wallet_of_the_older_layout_loads_and_moves_on(
    saved_at_epoch_0: Path, wallets: Wallets
) -> None:
    """Shares kept at the top level (before epoch directories) load; two commits later they go."""
    old, new, devices, third = wallets
    state = fresh_copy(saved_at_epoch_0, "legacy")
    directory = wallet_dir(state, old.wallet_id)
    for path in (directory / "epoch-0").iterdir():
        path.rename(directory / path.name)
    (directory / "epoch-0").rmdir()
    committed_epoch_is(state, old)
    save(state, new, devices, REAL_IO)
    assert (directory / "party-0.share").exists()  # epoch 0 is the previous epoch: kept
    save(state, third, devices, REAL_IO)
    assert sorted(p.name for p in directory.iterdir()) == ["epoch-1", "epoch-2", "wallet.json"]
    committed_epoch_is(state, third)


# --- real failures in a child process -------------------------------------------------

CHILD = """
import resource, signal, sys
from pathlib import Path
from client.cli.state import REAL_IO, StateIO, load_wallet, save_wallet
from client.storage.shares import DEFAULT_ARGON2_PARAMS

state, source, limit, passcode = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
loaded = load_wallet(source, sys.argv[5], passcode, insecure_allow_weak_kdf=True)

def encrypt(share, wallet_id, passcode, params, weak):
    print("argon2", flush=True)
    return REAL_IO.encrypt(share, wallet_id, passcode, params, weak)

if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
save_wallet(state, loaded.wallet, loaded.devices, passcode, params=DEFAULT_ARGON2_PARAMS,
            io=StateIO(encrypt=encrypt, write=REAL_IO.write))
print("saved", flush=True)
"""


def child(state: Path, wallet: Wallet, devices: dict[int, PartyIdentity], limit: int) -> list[str]:
    """A process that saves ``wallet`` into ``state`` with the real Argon2id costs."""
    source = state.parent / "source"
    save(source, wallet, devices, REAL_IO)
    return [
        sys.executable, "-c", CHILD, str(state), str(source), str(limit), PASSCODE,
        wallet.wallet_id,
    ]  # fmt: skip


def save_strong(state: Path, wallet: Wallet, devices: dict[int, PartyIdentity]) -> None:
    save_wallet(state, wallet, devices, PASSCODE)


@pytest.mark.slow
def test_kernel_write_failure_during_save_keeps_the_old_epoch(
    tmp_path: Path, wallets: Wallets
) -> None:
    """A real write(2) failure (RLIMIT_FSIZE: the file cannot grow) half-way through a file."""
    old, new, devices, _ = wallets
    state = tmp_path / "state"
    save_strong(state, old, devices)
    share_bytes = (wallet_dir(state, old.wallet_id) / "epoch-0" / "party-0.share").stat().st_size
    run = subprocess.run(child(state, new, devices, share_bytes // 2), capture_output=True)
    assert run.returncode != 0 and b"saved" not in run.stdout
    assert b"File too large" in run.stderr  # EFBIG from the kernel, inside the share write
    loaded = load_wallet(state, old.wallet_id, PASSCODE).wallet
    assert loaded.epoch == 0 and secrets_of(loaded) == secrets_of(old)
    no_temporary_files(state)


@pytest.mark.slow
@pytest.mark.parametrize("argon2_runs_seen", [1, 2])
def test_sigkill_during_argon2_keeps_a_loadable_epoch(
    tmp_path: Path, wallets: Wallets, argon2_runs_seen: int
) -> None:
    """SIGKILL while the real (64 MiB, t=3) Argon2id runs: the old epoch loads."""
    old, new, devices, _ = wallets
    state = tmp_path / "state"
    save_strong(state, old, devices)
    process = subprocess.Popen(child(state, new, devices, 0), stdout=subprocess.PIPE)
    assert process.stdout is not None
    for _ in range(argon2_runs_seen):
        assert process.stdout.readline() == b"argon2\n"
    time.sleep(0.02)  # well inside a ~0.2-1 s derivation
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    loaded = load_wallet(state, old.wallet_id, PASSCODE).wallet
    assert loaded.epoch == 0 and secrets_of(loaded) == secrets_of(old)
    save_strong(state, new, devices)  # the next save succeeds over the debris
    assert secrets_of(load_wallet(state, new.wallet_id, PASSCODE).wallet) == secrets_of(new)
