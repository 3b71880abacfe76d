"""The record of a development stack that stays up (``DIR/stack.json``), and stopping it.

``shardkeep dev up`` starts a supervisor (``client.cli.devrun``) in a session
of its own; the supervisor starts devkms, the relay, the enclave, the host and
the coordinator, writes this record once every one is healthy, and deletes it
after it stopped them. The record names each process's pid and address and
the ``SHARDKEEP_*`` environment the CLI needs; ``dev status`` and
``dev down`` read it.

Pids outlive the processes they named: before signalling one, :func:`ours`
checks (where ``/proc`` exists) that its command line still names the stack's
directory, so a recycled pid of an unrelated process is never signalled.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from client.cli.connection import SETTINGS
from tss.errors import InputError

__all__ = [
    "MARKER",
    "RECORD",
    "StackRecord",
    "alive",
    "ours",
    "read_record",
    "render_shell",
    "stop_stack",
    "write_record",
]

RECORD: Final = "stack.json"
MARKER: Final = ".shardkeep-dev"
STATE_ENV: Final = "SHARDKEEP_STATE"
# Environment variable -> the CLI flag it stands in for.
_FLAGS: Final[Mapping[str, str]] = {
    **{variable: f"--{name.replace('_', '-')}" for name, (variable, _) in SETTINGS.items()},
    STATE_ENV: "--state",
}


@dataclass(frozen=True)
class StackRecord:
    """A running development stack, as its supervisor recorded it.

    ``pids`` and ``addresses`` are keyed by process name (devkms, relay,
    enclave, host, coordinator); ``environment`` holds the ``SHARDKEEP_*``
    variables that point the CLI at the stack.
    """

    directory: Path
    supervisor: int
    pids: dict[str, int]
    addresses: dict[str, str]
    environment: dict[str, str]
    enrollment_codes: Path | None = None
    tls: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["directory"] = str(self.directory)
        data["enrollment_codes"] = (
            None if self.enrollment_codes is None else str(self.enrollment_codes)
        )
        return data

    @classmethod
    def from_json(cls, data: Any) -> StackRecord:
        """Raises ``InputError`` on a record that is not one (named)."""
        try:
            codes = data["enrollment_codes"]
            record = cls(
                directory=Path(data["directory"]),
                supervisor=int(data["supervisor"]),
                pids={str(k): int(v) for k, v in data["pids"].items()},
                addresses={str(k): str(v) for k, v in data["addresses"].items()},
                environment={str(k): str(v) for k, v in data["environment"].items()},
                enrollment_codes=None if codes is None else Path(codes),
                tls=bool(data["tls"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"not a dev stack record: {e!r}") from None
        return record


def write_record(record: StackRecord) -> None:
    """Write ``DIR/stack.json`` atomically (a reader never sees half a record)."""
    path = record.directory / RECORD
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record.to_json(), indent=2) + "\n")
    os.replace(partial, path)


def read_record(directory: Path) -> StackRecord | None:
    """The record in ``directory``, or None when no stack was recorded there.

    Raises:
        InputError: the file exists but is not a record.
    """
    try:
        text = (directory / RECORD).read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InputError(f"{directory / RECORD} is not JSON: {e}") from None
    return StackRecord.from_json(data)


def alive(pid: int) -> bool:
    """Whether ``pid`` names a live process (a zombie, exited but not reaped, is not live)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and never ours
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): kill(0) is all there is
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ours(pid: int, directory: Path) -> bool:
    """Whether live ``pid`` is still a process of the stack in ``directory`` (see the docstring)."""
    if not alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc at all: trust the record
    except OSError:
        return False
    return str(directory).encode() in command


def _wait_gone(pids: Mapping[str, int], seconds: float) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    left = {name: pid for name, pid in pids.items() if alive(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {name: pid for name, pid in left.items() if alive(pid)}
    return left


def stop_stack(record: StackRecord, grace: float = 30.0) -> list[str]:
    """Stop every process of the stack; return the names of those still running (none, normally).

    SIGTERM to the supervisor, which stops its processes in order (each
    drains gracefully); if it is gone, SIGTERM to each process left. Whatever
    still runs after ``grace`` seconds gets SIGKILL.
    """
    everything = {"supervisor": record.supervisor, **record.pids}
    targets = {name: pid for name, pid in everything.items() if ours(pid, record.directory)}
    if "supervisor" in targets:
        os.kill(record.supervisor, signal.SIGTERM)
    else:
        for pid in targets.values():
            os.kill(pid, signal.SIGTERM)
    left = _wait_gone(targets, grace)
    for pid in left.values():
        if ours(pid, record.directory):
            os.kill(pid, signal.SIGKILL)
    return sorted(_wait_gone(left, 5.0))


def render_shell(record: StackRecord) -> str:
    """The copy-pasteable text ``dev up`` prints: ``export`` lines, the flags, the devices' part.

    Every line but the exports is a shell comment, so ``eval "$(shardkeep dev up)"`` works.
    """
    directory = shlex.quote(str(record.directory))
    lines = [
        f"# shardkeep dev stack under {record.directory}: "
        + ", ".join(f"{name} (pid {pid})" for name, pid in record.pids.items()),
        f"# stop it with: shardkeep dev down --dir {directory}",
        *(f"export {name}={shlex.quote(value)}" for name, value in record.environment.items()),
        "# the same as flags:",
        "#   "
        + " ".join(
            f"{_FLAGS[name]} {shlex.quote(value)}"
            for name, value in record.environment.items()
            if name in _FLAGS
        ),
        "# wallet commands ask for a passcode (or read --passcode-file or SHARDKEEP_PASSCODE)",
    ]
    coordinator = record.addresses.get("coordinator")
    if coordinator is not None and record.enrollment_codes is not None:
        trust = " (TLS: devices trust SHARDKEEP_SERVER_CA)" if record.tls else ""
        lines.append(
            f"# devices: the coordinator listens on {coordinator}{trust}; "
            f"one-time enrollment codes in {record.enrollment_codes}"
        )
    return "\n".join(lines) + "\n"
