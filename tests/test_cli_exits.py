"""The CLI's documented exit statuses for Ctrl-C and a closed pipe, and one-line
failures (no tracebacks), with the real ``shardkeep`` process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from client.cli import main as cli_main
from client.cli.exits import EXIT_CLOSED_PIPE, EXIT_FAILED, EXIT_INTERRUPTED
from client.errors import InternalSdkError

CLI = [sys.executable, "-c", "from client.cli.main import main; raise SystemExit(main())"]


def coordinator_key(tmp_path: Path) -> Path:
    path = tmp_path / "coordinator.key"
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return path


def test_ctrl_c_exits_130_with_one_line(tmp_path: Path) -> None:
    """A host that accepts connections and never answers keeps ``wallet create``
    waiting; SIGINT ends it with 130 and one line, not a KeyboardInterrupt
    traceback."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        process = subprocess.Popen(
            [
                *CLI, "wallet", "create", "--scheme", "bip340", "--host", f"127.0.0.1:{port}",
                "--relay", f"127.0.0.1:{port}", "--coordinator-key", str(coordinator_key(tmp_path)),
                "--state", str(tmp_path / "state"), "--timeout", "60",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "SHARDKEEP_PASSCODE": "correct horse battery staple"},
            # A shell's background job ignores SIGINT, and children inherit that:
            # the CLI gets Ctrl-C's default, however the tests were started.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        assert process.stderr is not None
        started = process.stderr.readline()  # the client is past start-up, waiting on the host
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
        err = started + rest
    assert process.returncode == EXIT_INTERRUPTED, err
    lines = err.decode().strip().splitlines()
    assert lines[-1] == "shardkeep: interrupted", lines  # after the progress lines
    assert "Traceback" not in err.decode()


# ``python -m client.cli`` whose import of ``client.cli.main`` (the SDK, gRPC, the
# cryptography) says so on stderr and then takes 60 s: an interrupt lands mid-import.
SLOW_IMPORT = """
import importlib.abc, runpy, sys, time

class SlowImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "client.cli.main":
            print("importing", file=sys.stderr, flush=True)
            time.sleep(60)
        return None

sys.meta_path.insert(0, SlowImport())
runpy.run_module("client.cli", run_name="__main__")
"""


def test_ctrl_c_while_the_cli_still_imports_exits_130_with_one_line() -> None:
    """Ctrl-C in the CLI's first seconds, while its modules load: the same one line and
    130 as later, not a KeyboardInterrupt traceback from inside an import."""
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_IMPORT, "wallet", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as above
    )
    assert process.stderr is not None
    assert process.stderr.readline() == b"importing\n"  # the import of the CLI has begun
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, out, err) == (EXIT_INTERRUPTED, b"", b"shardkeep: interrupted\n")


def test_closed_pipe_exits_141_without_a_traceback(tmp_path: Path) -> None:
    """``shardkeep ... | head -0``: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    command = [*CLI, "wallet", "list", "--state", str(tmp_path), "--json"]
    try:
        process = subprocess.run(
            command, stdout=write_end, stderr=subprocess.PIPE, timeout=30, check=False
        )
    finally:
        os.close(write_end)
    assert process.returncode == EXIT_CLOSED_PIPE
    assert process.stderr == b""


def test_an_unreachable_service_is_one_line_with_exit_1(tmp_path: Path) -> None:
    """Nothing listening: a typed SDK error, one line, exit status 1."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    process = subprocess.run(
        [
            *CLI, "wallet", "create", "--scheme", "bip340", "--host", f"127.0.0.1:{port}",
            "--relay", f"127.0.0.1:{port}", "--coordinator-key", str(coordinator_key(tmp_path)),
            "--state", str(tmp_path / "state"), "--timeout", "20",
        ],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "SHARDKEEP_PASSCODE": "correct horse battery staple"},
    )  # fmt: skip
    err = [line for line in process.stderr.decode().strip().splitlines() if ":" in line]
    assert process.returncode == 1, err
    assert err[-1].startswith("shardkeep: "), err
    assert "Traceback" not in process.stderr.decode()


def test_an_sdk_failure_no_command_maps_is_one_line_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every SDK failure is a WalletError: one the command does not map itself
    (here an SDK bug) still ends as one line and exit 1, never a traceback."""

    def broken(*args: object, **kwargs: object) -> None:
        raise InternalSdkError("internal error in the SDK (KeyError)")

    monkeypatch.setattr(cli_main, "verify", broken)
    document = tmp_path / "doc.bin"
    document.write_bytes(b"any")
    assert cli_main.main(["attestation", "verify", str(document)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err == "shardkeep: internal error in the SDK (KeyError)\n"
