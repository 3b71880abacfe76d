"""``shardkeep dev up|down|status``: a development stack that stays up for trying things.

``dev up`` starts devkms, the relay, the enclave, the host and the coordinator
in the background on embedded defaults (``client.cli.devstack``; ``--tls``:
TLS, mutual TLS and an API token, as a deployment), under ``--dir``
(default ``var/dev``), and prints the ``SHARDKEEP_*`` environment and the
flags the CLI needs, as shell lines: ``eval "$(shardkeep dev up)"`` points
the shell's ``shardkeep wallet ...`` at the stack. ``dev status`` shows each
process; ``dev down`` stops them all. Each ``dev up`` makes a fresh
deployment: the directory of the previous one (marked ``.shardkeep-dev``),
its wallets included, is deleted; a directory it did not make is refused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final, TextIO

from client.cli.devstate import (
    MARKER,
    RECORD,
    StackRecord,
    alive,
    ours,
    read_record,
    render_shell,
    stop_stack,
)
from client.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from client.cli.workdir import ForeignDirectoryError, prepare_marked_directory
from tss.errors import InputError

__all__ = ["add_dev_commands"]

STARTUP_SECONDS: Final = 120.0
SUPERVISOR_LOG: Final = "devrun.log"


def add_dev_commands(commands: Any) -> None:
    """Register ``dev`` and its subcommands on the top-level subparsers."""
    dev = commands.add_parser(
        "dev", help="a development stack that stays up (up, status, down)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    actions = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir", type=Path, default=Path("var/dev"),
        help="the stack's directory (default var/dev)",
    )  # fmt: skip
    up = actions.add_parser(
        "up", parents=[where], help="start the stack; print the CLI's environment and flags"
    )
    up.add_argument(
        "--tls", action="store_true",
        help="serve the host, relay and coordinator on loopback TCP with TLS; mutual TLS "
        "and an API token at the host",
    )  # fmt: skip
    up.add_argument("--json", action="store_true", help="print the stack's record as JSON")
    up.set_defaults(handler=_up)
    status = actions.add_parser("status", parents=[where], help="the stack's processes")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=_status)
    down = actions.add_parser("down", parents=[where], help="stop every process of the stack")
    down.set_defaults(handler=_down)


def _print_record(record: StackRecord, as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(record.to_json(), indent=2), file=out)
    else:
        print(render_shell(record), end="", file=out)


def _up(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    directory: Path = args.dir.resolve()
    try:
        record = read_record(directory)
    except InputError as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_USAGE
    if record is not None:
        if ours(record.supervisor, directory):
            print(f"shardkeep: the dev stack in {directory} is already running", file=err)
            _print_record(record, args.json, out)
            return EXIT_OK
        stop_stack(record)  # the supervisor died: stop what it left behind
    try:
        prepare_marked_directory(directory, MARKER, "shardkeep dev up")
    except ForeignDirectoryError as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_USAGE
    print(f"starting devkms, relay, enclave, host and coordinator under {directory}", file=err)
    log = directory / SUPERVISOR_LOG
    with log.open("ab") as sink:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "client.cli.devrun", str(directory),
             *(["--tls"] if args.tls else [])],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, cwd=directory,
            start_new_session=True,  # outlives this command and the terminal's Ctrl-C
        )  # fmt: skip
    record = _wait_for_record(directory, supervisor)
    if record is None:
        if supervisor.poll() is None:
            supervisor.terminate()
        try:
            supervisor.wait(timeout=30)
        except subprocess.TimeoutExpired:
            supervisor.kill()
        print(
            f"shardkeep: the dev stack did not start: {_last_line(log)}; see {directory}/*.log",
            file=err,
        )
        return EXIT_FAILED
    _print_record(record, args.json, out)
    return EXIT_OK


def _wait_for_record(directory: Path, supervisor: subprocess.Popen[bytes]) -> StackRecord | None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and supervisor.poll() is None:
        record = read_record(directory)
        if record is not None:
            return record
        time.sleep(0.1)
    return None


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def _status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    directory: Path = args.dir.resolve()
    try:
        record = read_record(directory)
    except InputError as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_USAGE
    if record is None:
        print(f"shardkeep: no dev stack is running in {directory}", file=err)
        return EXIT_FAILED
    running = {name: alive(pid) for name, pid in record.pids.items()}
    if args.json:
        processes = {
            name: {"pid": pid, "running": running[name], "address": record.addresses.get(name)}
            for name, pid in record.pids.items()
        }
        print(json.dumps({"directory": str(directory), "processes": processes}), file=out)
    else:
        for name, pid in record.pids.items():
            state = "running" if running[name] else "STOPPED"
            address = record.addresses.get(name, "")
            print(f"{name:<12} {state:<8} pid {pid:<8} {address}", file=out)
    if not all(running.values()):
        print(f"shardkeep: some processes stopped; see {directory}/*.log", file=err)
        return EXIT_FAILED
    return EXIT_OK


def _down(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    directory: Path = args.dir.resolve()
    try:
        record = read_record(directory)
    except InputError as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_USAGE
    if record is None:
        print(f"shardkeep: no dev stack is running in {directory}", file=err)
        return EXIT_OK
    left = stop_stack(record)
    if left:
        print(f"shardkeep: still running after SIGKILL: {', '.join(left)}", file=err)
        return EXIT_FAILED
    (directory / RECORD).unlink(missing_ok=True)  # the supervisor deletes it, unless it died
    print(f"dev stack in {directory} stopped", file=err)
    return EXIT_OK
