"""deploy/host/first_boot_check.py against a running (simulated-NSM) enclave."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.nsm import SimulatedNitroPki, image_pcrs
from tests.enclave_harness import IMAGE, Stack, devkms, with_enclave
from tests.test_deploy import DEPLOY, load_script

first_boot = load_script(DEPLOY / "host" / "first_boot_check.py")


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


def release_pcrs(path: Path, **override: bytes) -> Path:
    """A pcrs.json as build.sh writes it, for the simulated image (PCR8 zero: unsigned)."""
    values = {f"PCR{i}": v for i, v in image_pcrs(IMAGE).items()} | {"PCR8": bytes(48)}
    values.update(override)
    path.write_text(json.dumps({"commit": "test"} | {k: v.hex() for k, v in values.items()}))
    return path


def run_check(pki: SimulatedNitroPki, tmp_path: Path, args: list[str], *, root: bool = True) -> int:
    root_file = tmp_path / "root.pem"
    root_file.write_bytes(pki.root_certificate_pem)
    argv = ["--enclave", f"unix:{tmp_path / 'enclave.sock'}", *args]
    if root:
        argv += ["--root", str(root_file)]

    async def body(_stack: Stack) -> Any:
        return await asyncio.to_thread(first_boot.main, argv)

    with devkms(pki) as endpoint:
        status: int = asyncio.run(
            with_enclave(pki, endpoint, tmp_path, Ed25519PrivateKey.generate(), body)
        )
    return status


def test_first_boot_check_prints_live_pcrs_and_passes(
    pki: SimulatedNitroPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcrs = release_pcrs(tmp_path / "release.pcrs.json")
    assert run_check(pki, tmp_path, ["--pcrs", str(pcrs)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("PCR")}
    assert sorted(lines) == sorted(f"PCR{i}" for i in range(16))  # every locked PCR
    assert image_pcrs(IMAGE)[0].hex() in lines["PCR0"] and "pinned" in lines["PCR0"]
    assert "pinned" not in lines["PCR4"]
    assert "first-boot check passed" in out


def test_first_boot_check_names_the_differing_pcr(
    pki: SimulatedNitroPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcrs = release_pcrs(tmp_path / "release.pcrs.json", PCR1=bytes(range(48)))
    assert run_check(pki, tmp_path, ["--pcrs", str(pcrs)]) == 1
    captured = capsys.readouterr()
    assert "PCR1 of the running enclave differ" in captured.err
    assert image_pcrs(IMAGE)[1].hex() in captured.out  # the live value is still shown


def test_first_boot_check_refuses_a_document_off_the_trusted_root(
    pki: SimulatedNitroPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcrs = release_pcrs(tmp_path / "release.pcrs.json")
    assert run_check(pki, tmp_path, ["--pcrs", str(pcrs)], root=False) == 1  # AWS root
    assert "does not verify" in capsys.readouterr().err


def test_first_boot_check_without_an_enclave_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcrs = release_pcrs(tmp_path / "release.pcrs.json")
    argv = ["--pcrs", str(pcrs), "--enclave", f"unix:{tmp_path / 'none.sock'}"]
    assert first_boot.main(argv) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
