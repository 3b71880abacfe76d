"""What a new user meets first in `shardkeep`: --version, help for every flag and variable,
clear refusals before any prompt or network call, `wallet list` with damaged wallets,
new passcodes and `wallet passcode`, consistent round counting. No stack is needed: wallets
are written into the state directory from `tss.local` key shares."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

import client.cli.passcode
from client.cli.main import build_parser, main
from client.cli.state import StateIO, change_passcode, load_wallet, save_wallet, wallet_dir
from client.sdk.party import PartyIdentity, RoundProgress
from client.sdk.wallet import Wallet
from client.storage.errors import DecryptionError
from client.storage.shares import insecure_test_params
from tests.cli_harness import no_environment
from tss import local
from tss.ceremony import Ceremony, Message

__all__ = ["no_environment"]  # the fixture (tests.cli_harness)

ROOT = Path(__file__).resolve().parents[1]
PASSCODE = "correct horse battery staple"
DIGEST = "5e" * 32


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write_wallet(
    state: Path, wallet_id: str, passcode: str = PASSCODE, local_parties: int = 1
) -> Wallet:
    """A bip340 wallet of ``local_parties`` device parties and the server share, saved in
    ``state`` as `wallet create` would save it."""
    shares = local.keygen("bip340", threshold=2, parties=local_parties + 1)
    devices = {i: PartyIdentity.generate() for i in range(local_parties)}
    parties = [devices[i].party for i in range(local_parties)] + [PartyIdentity.generate().party]
    wallet = Wallet(
        wallet_id, "bip340", 2, parties, local_parties, shares[0].public_key, shares[0].epoch,
        {i: shares[i] for i in range(local_parties)},
    )  # fmt: skip
    save_wallet(
        state, wallet, devices, passcode, params=insecure_test_params(),
        insecure_allow_weak_kdf=True,
    )  # fmt: skip
    return wallet


def secret_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n")
    return path


@pytest.fixture
def silent_host(tmp_path: Path) -> Iterator[tuple[socket.socket, list[str]]]:
    """A listening socket as --host and --relay, and the connection options naming it: a
    command that contacts the network connects here (the test then sees it in accept())."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    address = f"127.0.0.1:{server.getsockname()[1]}"
    key = tmp_path / "coordinator.key"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    yield server, ["--host", address, "--relay", address, "--coordinator-key", str(key)]
    server.close()


def assert_never_contacted(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        server.accept()


### --version and help


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--version")
    assert status == 0
    assert out.strip() == f"shardkeep {importlib.metadata.version('shardkeep')}"


def every_parser(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from every_parser(child)


# Deliberately hidden: a test-only switch that makes share files guessable.
HIDDEN = {"--insecure-weak-kdf"}


def test_every_flag_and_argument_has_help() -> None:
    missing = [
        f"{prog}: {action.option_strings or action.dest}"
        for prog, parser in every_parser(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and not set(action.option_strings) & HIDDEN
        and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert missing == []
    assert len(list(every_parser(build_parser()))) >= 14  # shardkeep, attestation, wallet, ...


def test_help_lists_every_environment_variable_the_cli_reads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sources = "".join(path.read_text() for path in (ROOT / "client" / "cli").glob("*.py"))
    variables = set(re.findall(r"SHARDKEEP_[A-Z_]+", sources))
    assert {"SHARDKEEP_HOST", "SHARDKEEP_PASSCODE", "SHARDKEEP_NEW_PASSCODE"} <= variables
    for argv in (["--help"], ["wallet", "--help"]):
        status, out, _ = run(capsys, *argv)
        assert status == 0
        assert {v for v in variables if v not in out} == set(), argv


### Refusals before any prompt, decryption or network call


def test_an_unknown_wallet_names_the_listing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    write_wallet(state, "known")
    for argv in (
        ["sign", "nope", "--digest", DIGEST],
        ["backup", "nope"],
        ["refresh", "nope"],
        ["passcode", "nope"],
        ["export", "nope", "--out", str(tmp_path / "key")],
    ):
        status, _, err = run(capsys, "wallet", *argv, "--state", str(state))
        assert status == 2, argv
        assert f"no wallet nope in {state} (see `shardkeep wallet list`)" in err, argv


def test_threshold_is_checked_before_any_network_call(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    silent_host: tuple[socket.socket, list[str]],
) -> None:
    server, connection = silent_host
    passcode = ["--passcode-file", str(secret_file(tmp_path, "p", PASSCODE))]
    state = ["--state", str(tmp_path / "state")]
    key_file = secret_file(tmp_path, "key", "11" * 32)
    for command, extra, expected in (
        ("create", ["--threshold", "3"], "--threshold 3 exceeds the 2 parties"),
        ("create", ["--threshold", "4", "--local-parties", "2"], "exceeds the 3 parties"),
        ("create", ["--threshold", "1"], "threshold 1 refused"),
        ("import", ["--key-file", str(key_file), "--threshold", "3"], "exceeds the 2 parties"),
    ):
        status, _, err = run(capsys, "wallet", command, *extra, *connection, *passcode, *state)
        assert status == 2 and expected in err, (extra, err)
    write_wallet(tmp_path / "state", "w", local_parties=2)
    for extra, expected in (
        (["--threshold", "4"], "exceeds the 3 parties"),
        (["--threshold", "3", "--local-parties", "1"], "exceeds the 2 parties"),
        (["--threshold", "3", "--without-server"], "exceeds the 2 parties"),
        (["--threshold", "1"], "threshold 1 refused"),
    ):
        status, _, err = run(
            capsys, "wallet", "reshare", "w", *extra, *connection, *passcode, *state
        )
        assert status == 2 and expected in err, (extra, err)
    assert_never_contacted(server)


def test_pcr_is_refused_where_no_attestation_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--pcr used to be accepted, and ignored, by commands that never see the enclave."""
    state = tmp_path / "state"
    write_wallet(state, "w")
    for argv in (["list"], ["backup", "w"], ["passcode", "w"]):
        for flag in (["--pcr", "0=" + "00" * 48], ["--allow-debug"]):
            status, _, err = run(capsys, "wallet", *argv, *flag, "--state", str(state))
            assert status == 2 and "unrecognized arguments" in err, (argv, flag)
    status, _, err = run(
        capsys, "wallet", "export", "--offline", str(tmp_path / "x.share"),
        "--out", str(tmp_path / "key"), "--pcr", "0=00", "--state", str(state),
    )  # fmt: skip
    assert status == 2 and "--offline talks to no enclave" in err


def test_commands_that_attest_take_pcr(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("create", "sign", "recover", "reshare", "refresh", "export", "import"):
        status, out, _ = run(capsys, "wallet", command, "--help")
        assert status == 0 and "--pcr N=HEX" in out and "--allow-debug" in out, command


### New passcodes


def test_a_weak_new_passcode_is_refused_before_any_network_call(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    silent_host: tuple[socket.socket, list[str]],
) -> None:
    server, connection = silent_host
    for weak, expected in (
        ("short pass", "at least 12 characters (it has 10)"),
        ("abababababababab", "at least 6 different characters"),
    ):
        status, _, err = run(
            capsys, "wallet", "create", *connection, "--state", str(tmp_path / "state"),
            "--passcode-file", str(secret_file(tmp_path, "p", weak)),
        )  # fmt: skip
        assert status == 2 and expected in err
        assert weak not in err
    assert_never_contacted(server)


class Terminal:
    def isatty(self) -> bool:
        return True


def typed(monkeypatch: pytest.MonkeyPatch, *entries: str) -> list[str]:
    """Answer getpass prompts with ``entries``, as a user at a terminal; return the prompts."""
    answers, prompts = iter(entries), []

    def getpass(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(client.cli.passcode.sys, "stdin", Terminal())
    monkeypatch.setattr(client.cli.passcode.getpass, "getpass", getpass)
    return prompts


def test_a_new_passcode_at_a_prompt_is_typed_twice(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    silent_host: tuple[socket.socket, list[str]],
) -> None:
    server, connection = silent_host
    prompts = typed(monkeypatch, PASSCODE, PASSCODE + "!")
    status, _, err = run(capsys, "wallet", "create", *connection, "--state", str(tmp_path / "s"))
    assert status == 2 and "the two entries of the passcode differ" in err
    assert prompts == ["shardkeep passcode: ", "shardkeep passcode again: "]
    assert_never_contacted(server)
    # An existing passcode (here: sign) is asked once.
    write_wallet(tmp_path / "s", "w")
    prompts = typed(monkeypatch, "wrong but long enough")
    status, _, err = run(
        capsys, "wallet", "sign", "w", "--digest", DIGEST, *connection, "--state",
        str(tmp_path / "s"), "--insecure-weak-kdf",
    )  # fmt: skip
    assert status == 1 and "wrong passcode" in err
    assert prompts == ["shardkeep passcode: "]
    assert_never_contacted(server)


### wallet passcode


def test_wallet_passcode_changes_the_passcode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    wallet = write_wallet(state, "w", local_parties=2)
    new = "a new and longer passphrase"
    status, out, err = run(
        capsys, "wallet", "passcode", "w", "--state", str(state), "--insecure-weak-kdf", "--json",
        "--passcode-file", str(secret_file(tmp_path, "old", PASSCODE)),
        "--new-passcode-file", str(secret_file(tmp_path, "new", new)),
    )  # fmt: skip
    assert status == 0, err
    assert json.loads(out) == {"wallet_id": "w", "parties": [0, 1], "backup_needed": True}
    loaded = load_wallet(state, "w", new, insecure_allow_weak_kdf=True)
    assert {i: s.secret_share for i, s in loaded.wallet.shares.items()} == {
        i: s.secret_share for i, s in wallet.shares.items()
    }
    with pytest.raises(DecryptionError):
        load_wallet(state, "w", PASSCODE, insecure_allow_weak_kdf=True)


def test_wallet_passcode_refuses_a_weak_or_unchanged_passcode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    write_wallet(state, "w")
    old = ["--passcode-file", str(secret_file(tmp_path, "old", PASSCODE))]
    for new, expected in (("tiny", "at least 12 characters"), (PASSCODE, "is the old one")):
        status, _, err = run(
            capsys, "wallet", "passcode", "w", "--state", str(state), "--insecure-weak-kdf", *old,
            "--new-passcode-file", str(secret_file(tmp_path, "new", new)),
        )  # fmt: skip
        assert status == 2 and expected in err
    load_wallet(state, "w", PASSCODE, insecure_allow_weak_kdf=True)  # unchanged


def test_an_interrupted_passcode_change_finishes_when_run_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_wallet(state, "w", local_parties=2)
    new = "a new and longer passphrase"
    written: list[Path] = []

    def write_once(path: Path, data: bytes) -> None:
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        StateIO().write(path, data)

    with pytest.raises(OSError):
        change_passcode(
            state, "w", PASSCODE, new, params=insecure_test_params(),
            insecure_allow_weak_kdf=True, io=StateIO(write=write_once),
        )  # fmt: skip
    # Party 0 is under the new passcode, party 1 still under the old one.
    load_wallet(state, "w", new, parties=[0], insecure_allow_weak_kdf=True)
    load_wallet(state, "w", PASSCODE, parties=[1], insecure_allow_weak_kdf=True)
    changed = change_passcode(
        state, "w", PASSCODE, new, params=insecure_test_params(), insecure_allow_weak_kdf=True
    )
    assert changed == (1,)
    load_wallet(state, "w", new, insecure_allow_weak_kdf=True)


### wallet list


def test_wallet_list_shows_damaged_wallets_as_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wallet whose files were lost or garbled used to vanish from the listing."""
    state = tmp_path / "state"
    for name in ("fine", "no-share", "bad-json", "foreign-share"):
        write_wallet(state, name)
    next(wallet_dir(state, "no-share").rglob("party-0.share")).unlink()
    (wallet_dir(state, "bad-json") / "wallet.json").write_text("{not json")
    foreign = next(wallet_dir(state, "foreign-share").rglob("party-0.share"))
    foreign.write_bytes(next(wallet_dir(state, "fine").rglob("party-0.share")).read_bytes())

    status, out, _ = run(capsys, "wallet", "list", "--state", str(state), "--json")
    assert status == 0
    listed: dict[str, Any] = json.loads(out)
    assert [w["wallet_id"] for w in listed["wallets"]] == ["fine"]
    damaged = {d["wallet_id"] or d["directory"]: d["reason"] for d in listed["damaged"]}
    assert damaged == {
        "no-share": "party 0's share file is missing",
        wallet_dir(state, "bad-json").name: "wallet.json unreadable (not JSON)",
        "foreign-share": "party 0's share belongs to another wallet or epoch",
    }
    status, out, _ = run(capsys, "wallet", "list", "--state", str(state))
    assert status == 0
    assert "wallets: fine\n" in out and "no-share (party 0's share file is missing)" in out


### Progress


class ThreeRounds(Ceremony[bytes]):
    """Two parties; round 2 expects no message (it completes with round 1)."""

    rounds = 3

    def _start(self) -> list[Message]:
        return self._broadcast(1, b"1")

    def _expected_senders(self, round_: int) -> list[int]:
        return [] if round_ == 2 else [p for p in self.parties if p != self.me]

    def _run_round(self, round_: int, payloads: Any) -> list[Message]:
        if round_ == 3:
            self._finish(b"done")
            return []
        return self._broadcast(3, b"3") if round_ == 2 else []


def test_rounds_are_counted_once_each_from_one_to_the_last() -> None:
    """Progress used to say "round 0 of n" on the first message and repeat a round per
    message; now each round is reported once, in order, when it completes."""
    seen: list[str] = []
    me, peer = ThreeRounds(0, [0, 1], None), ThreeRounds(1, [0, 1], None)  # type: ignore[arg-type]
    rounds = RoundProgress(me, seen.append)
    outbound = peer.start()
    me.start()
    rounds.update()
    assert seen == []
    for message in outbound:
        me.receive(message)
    rounds.update()
    assert seen == ["round 1 of 3 done", "round 2 of 3 done"]
    for message in peer.receive(Message(1, 0, None, b"1")):
        me.receive(message)
    rounds.update()
    rounds.update()
    assert me.done
    assert seen == ["round 1 of 3 done", "round 2 of 3 done", "round 3 of 3 done"]
