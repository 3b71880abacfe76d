"""`shardkeep attestation verify` (client.cli.main), in process and once as a subprocess."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from client.cli.main import main
from enclave.nsm import SimulatedNsm, image_pcrs
from tests.vectors import ATTESTATION

REAL = ATTESTATION / "evervault_beta_valid-attestation-doc-bytes.cbor"
REAL_AT = "1665651483"  # 2022-10-13T08:58:03Z, one second after the document
REAL_PCR0 = (
    "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28"
    "d9d5599936332687e6f66fc890ac8cf150142d8b"
)
NOW = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
IMAGE = "shardkeep-enclave:cli-test"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def nsm() -> SimulatedNsm:
    return SimulatedNsm(IMAGE, clock=lambda: NOW)


@pytest.fixture
def simulated(nsm: SimulatedNsm, tmp_path: Path) -> tuple[Path, Path]:
    document = tmp_path / "doc.cbor"
    document.write_bytes(nsm.attestation(nonce=b"\x01\x02", user_data=b"hello"))
    root = tmp_path / "root.pem"
    root.write_bytes(nsm.root_certificate_pem)
    return document, root


def test_real_document_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["attestation", "verify", str(REAL), "--at", REAL_AT, "--json"], capsys)
    assert (status, err) == (0, "")
    doc = json.loads(out)
    assert doc["module_id"] == "i-020b6af9246d90e92-enc0183d09086c24190"
    assert doc["timestamp"] == "2022-10-13T08:58:02.136+00:00"
    assert doc["digest"] == "SHA384"
    assert doc["pcrs"]["0"] == REAL_PCR0
    assert sorted(doc["pcrs"], key=int) == [str(i) for i in range(16)]
    assert doc["public_key"] is None and doc["user_data"] is None
    assert len(bytes.fromhex(doc["nonce"])) == 256
    assert len(doc["cabundle"]) == 4
    assert bytes.fromhex(doc["certificate"])[:2] == b"\x30\x82"


def test_real_document_summary(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["attestation", "verify", str(REAL), "--at", REAL_AT], capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "attestation document valid"
    assert "  module_id:   i-020b6af9246d90e92-enc0183d09086c24190" in lines
    assert f"  PCR0:        {REAL_PCR0}" in lines
    assert "  public_key:  (absent)" in lines


@pytest.mark.parametrize(
    "at",
    [
        "2022-10-13T08:58:03Z",
        "2022-10-13T08:58:03",
        "2022-10-13T10:58:03+02:00",
        "1665651482.5",
        REAL_AT,
    ],
    ids=["iso-z", "iso-naive-utc", "iso-offset", "unix-float", "unix"],
)
def test_time_formats(at: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["attestation", "verify", str(REAL), "--at", at], capsys)[0] == 0


def test_real_document_expired_now(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["attestation", "verify", str(REAL), "--json"], capsys)
    assert (status, out) == (1, "")
    assert err.startswith(
        "shardkeep: attestation document invalid (expired): certificate (CN=i-020b6af9246d90e92-"
    )
    assert "expired at 2022-10-13T11:58:02+00:00" in err


def test_pcr_and_nonce_options(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["attestation", "verify", str(REAL), "--at", REAL_AT]
    assert run([*base, "--pcr", f"0={REAL_PCR0}"], capsys)[0] == 0
    status, _, err = run([*base, "--pcr", f"0={'00' * 48}", "--pcr", f"1={'00' * 48}"], capsys)
    assert status == 1
    assert err.startswith("shardkeep: attestation document invalid (pcr-mismatch): PCR0 is f4d4")
    assert "; PCR1 is " in err
    status, _, err = run([*base, "--nonce", "cb3d"], capsys)
    assert status == 1 and "(nonce-mismatch)" in err


def test_simulated_document_needs_its_root(
    simulated: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    document, root = simulated
    at = NOW.isoformat()
    status, _, err = run(["attestation", "verify", str(document), "--at", at], capsys)
    assert status == 1 and "(untrusted-root)" in err
    argv = ["attestation", "verify", str(document), "--at", at, "--root", str(root), "--json"]
    pcrs = [f"--pcr={i}={value.hex()}" for i, value in image_pcrs(IMAGE).items()]
    status, out, err = run([*argv, *pcrs, "--nonce", "0102"], capsys)
    assert (status, err) == (0, "")
    doc = json.loads(out)
    assert (doc["nonce"], doc["user_data"]) == ("0102", b"hello".hex())
    assert doc["timestamp"] == "2031-01-02T03:04:05.000+00:00"


def test_debug_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    debug = SimulatedNsm(IMAGE, debug=True, clock=lambda: NOW)
    document, root = tmp_path / "debug.cbor", tmp_path / "root.pem"
    document.write_bytes(debug.attestation())
    root.write_bytes(debug.root_certificate_pem)
    argv = ["attestation", "verify", str(document), "--root", str(root), "--at", NOW.isoformat()]
    status, _, err = run(argv, capsys)
    assert status == 1
    assert err == (
        "shardkeep: attestation document invalid (debug-mode): "
        "PCR0 is all zeros: the enclave runs in debug mode\n"
    )
    assert run([*argv, "--allow-debug"], capsys)[0] == 0


def test_document_from_stdin(
    simulated: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    document, root = simulated
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(document.read_bytes())))
    argv = ["attestation", "verify", "-", "--root", str(root), "--at", NOW.isoformat()]
    assert run(argv, capsys)[0] == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--at", "yesterday"], "not ISO 8601 or Unix seconds: 'yesterday'"),
        (["--at", "1e300"], "time out of range: '1e300'"),
        (["--pcr", "0:abcd"], "expected N=HEX, got '0:abcd'"),
        (["--pcr", "x=abcd"], "expected N=HEX, got 'x=abcd'"),
        (["--pcr", "0=zz"], "not hexadecimal: 'zz'"),
        (["--nonce", "xyz"], "not hexadecimal: 'xyz'"),
        (["--pcr", "0=abcd"], "shardkeep: expected PCR0 must be 32, 48 or 64 bytes"),
        (["--pcr", f"40={'00' * 48}"], "shardkeep: expected PCR index 40 is not in 0..31"),
        (["--pcr", f"0={REAL_PCR0}", "--pcr", f"0={REAL_PCR0}"], "shardkeep: --pcr 0 given twice"),
        (["--root", "/nonexistent/root.pem"], "shardkeep: cannot read /nonexistent/root.pem: "),
    ],
    ids=[
        "bad-time",
        "time-overflow",
        "pcr-no-equals",
        "pcr-bad-index",
        "pcr-bad-hex",
        "nonce-bad-hex",
        "pcr-wrong-size",
        "pcr-index-range",
        "pcr-twice",
        "missing-root",
    ],
)
def test_usage_errors(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["attestation", "verify", str(REAL), "--at", REAL_AT, *extra], capsys)
    assert (status, out) == (2, "")
    assert message in err


def test_missing_file_and_missing_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["attestation", "verify", "/nonexistent/doc.cbor"], capsys)
    assert status == 2
    assert err.startswith("shardkeep: cannot read /nonexistent/doc.cbor: ")
    assert run(["attestation", "verify"], capsys)[0] == 2
    assert run(["attestation"], capsys)[0] == 2
    assert run([], capsys)[0] == 2
    status, out, _ = run(["attestation", "verify", "--help"], capsys)
    assert status == 0 and "--allow-debug" in out


def test_garbage_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x84\x44")
    status, _, err = run(["attestation", "verify", str(garbage)], capsys)
    assert status == 1
    assert err.startswith("shardkeep: attestation document invalid (malformed): ")


def test_module_entry_point_subprocess() -> None:
    command = [sys.executable, "-m", "client.cli", "attestation", "verify", str(REAL)]
    result = subprocess.run(
        [*command, "--at", "2022-10-13T08:58:03Z", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["module_id"] == "i-020b6af9246d90e92-enc0183d09086c24190"
    failed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode == 1
    assert "(expired)" in failed.stderr
