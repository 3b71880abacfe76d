#!/usr/bin/env python3
"""Run the shardkeep enclave with nitro-cli and stay alive exactly as long as it runs.

``nitro-cli run-enclave`` returns as soon as the enclave boots, so systemd
cannot watch the enclave by itself. This supervisor (ExecStart of
shardkeep-enclave.service) starts the enclave from a run-enclave JSON file,
then polls ``nitro-cli describe-enclaves``; when the enclave is gone (its
entrypoint exits when the enclave process dies, deploy/enclave/entrypoint.py)
it exits 1 and systemd's ``Restart=always`` starts a fresh one. SIGTERM
terminates the enclave and exits 0.

It refuses a debug-mode enclave: debug mode exposes the console and makes
the attested PCRs all zeros, which the KMS key policy and clients reject
anyway (deploy/kms/policy.py).

Standard library only (it runs with the parent's system Python).

    enclave_supervise.py --config /etc/shardkeep/run-enclave.json
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["main"]


class SupervisorError(Exception):
    """nitro-cli failed or answered something unexpected."""


def _nitro(nitro_cli: str, *args: str) -> Any:
    result = subprocess.run([nitro_cli, *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SupervisorError(
            f"nitro-cli {args[0]} failed ({result.returncode}): {result.stderr.strip()[-500:]}"
        )
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as e:
        raise SupervisorError(f"nitro-cli {args[0]} printed no JSON") from e


def _load_settings(path: Path) -> dict[str, Any]:
    settings = json.loads(path.read_text())
    if not isinstance(settings, dict):
        raise SupervisorError(f"{path} is not a JSON object")
    for key in ("enclave_name", "cpu_count", "memory_mib", "eif_path", "enclave_cid"):
        if key not in settings:
            raise SupervisorError(f"{path} lacks {key!r}")
    if settings.get("debug_mode", False) is not False:
        raise SupervisorError("debug_mode must be false for a production enclave")
    if settings.get("attach_console", False) is not False:
        raise SupervisorError("attach_console must be false (it needs debug mode)")
    return settings


def _find(enclaves: Any, enclave_id: str) -> dict[str, Any] | None:
    if not isinstance(enclaves, list):
        raise SupervisorError("describe-enclaves did not return a list")
    for enclave in enclaves:
        if isinstance(enclave, dict) and enclave.get("EnclaveID") == enclave_id:
            return enclave
    return None


def _log(message: str) -> None:
    print(f"enclave-supervise: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and watch the enclave; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="enclave_supervise.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", type=Path, required=True, help="run-enclave JSON settings")
    parser.add_argument("--nitro-cli", default="nitro-cli")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between checks")
    args = parser.parse_args(argv)

    stopping = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        settings = _load_settings(args.config)
        name = str(settings["enclave_name"])
        # A previous enclave of ours may survive a crash of this supervisor.
        for enclave in _nitro(args.nitro_cli, "describe-enclaves"):
            if isinstance(enclave, dict) and enclave.get("EnclaveName") == name:
                _log(f"terminating the leftover enclave {enclave.get('EnclaveID')}")
                _nitro(args.nitro_cli, "terminate-enclave", "--enclave-id", enclave["EnclaveID"])
        started = _nitro(args.nitro_cli, "run-enclave", "--config", str(args.config))
        enclave_id = started.get("EnclaveID") if isinstance(started, dict) else None
        if not isinstance(enclave_id, str):
            raise SupervisorError("run-enclave returned no EnclaveID")
        _log(f"started {enclave_id} (CID {started.get('EnclaveCID')})")
        while not stopping:
            enclave = _find(_nitro(args.nitro_cli, "describe-enclaves"), enclave_id)
            if enclave is None or enclave.get("State") != "RUNNING":
                state = "gone" if enclave is None else enclave.get("State")
                _log(f"enclave {enclave_id} is {state}; exiting so systemd restarts it")
                return 1
            if "DEBUG" in str(enclave.get("Flags", "NONE")).upper():
                _log(f"enclave {enclave_id} runs in debug mode; terminating it")
                _nitro(args.nitro_cli, "terminate-enclave", "--enclave-id", enclave_id)
                return 1
            deadline = time.monotonic() + args.interval
            while not stopping and time.monotonic() < deadline:
                time.sleep(min(0.1, args.interval))
        _log(f"terminating {enclave_id}")
        _nitro(args.nitro_cli, "terminate-enclave", "--enclave-id", enclave_id)
        return 0
    except (SupervisorError, OSError, ValueError, subprocess.TimeoutExpired) as e:
        _log(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
