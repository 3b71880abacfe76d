"""The enclave's randomness mixes the kernel's and the NSM's on every draw; NSM chosen by mode."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from pathlib import Path

import pytest

from enclave import devsetup
from enclave.config import EnclaveConfig
from enclave.entropy import INFO, mixed_random
from enclave.main import build_deps, open_nsm
from enclave.nsm import NsmError, SimulatedNsm

KERNEL = bytes(range(32))
DEVICE = bytes(range(100, 132))


class CountingNsm:
    """An NSM stand-in whose GetRandom answers fixed bytes and counts calls."""

    def __init__(self, random: bytes = DEVICE) -> None:
        self.random = random
        self.calls = 0

    def attestation(
        self,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        raise AssertionError("not used")

    def get_random(self, n: int) -> bytes:
        self.calls += 1
        return self.random[:n]


def rfc5869(ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 written from RFC 5869 §2.2-2.3 (no salt: HashLen zeros)."""
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def test_each_draw_is_hkdf_of_kernel_and_nsm_bytes() -> None:
    nsm = CountingNsm()
    rand = mixed_random(nsm, os_random=lambda n: KERNEL[:n])
    assert INFO == b"shardkeep/enclave-random/v1"
    assert rand(32) == rfc5869(KERNEL + DEVICE, INFO, 32)
    assert rand(64) == rfc5869(KERNEL + DEVICE, INFO, 64)
    assert nsm.calls == 2  # one NSM draw per call


def test_either_source_changes_the_output() -> None:
    fixed_kernel = mixed_random(CountingNsm(), os_random=lambda n: KERNEL[:n])
    other_nsm = mixed_random(CountingNsm(bytes(32)), os_random=lambda n: KERNEL[:n])
    other_kernel = mixed_random(CountingNsm(), os_random=lambda n: bytes(n))
    assert len({fixed_kernel(32), other_nsm(32), other_kernel(32)}) == 3


def test_a_failing_nsm_fails_the_draw() -> None:
    class BrokenNsm(CountingNsm):
        def get_random(self, n: int) -> bytes:
            raise NsmError("InternalError", "ioctl on the NSM failed")

    with pytest.raises(NsmError):
        mixed_random(BrokenNsm())(32)


def test_a_short_source_fails_the_draw() -> None:
    with pytest.raises(ValueError, match="wrong number of bytes"):
        mixed_random(CountingNsm(b"short"))(32)
    with pytest.raises(ValueError, match="can draw"):
        mixed_random(CountingNsm())(8161)


def test_nitro_mode_outside_an_enclave_exits_naming_the_device(tmp_path: Path) -> None:
    config = EnclaveConfig.load(devsetup.write(tmp_path, listen="unix:/tmp/unused.sock"))
    with pytest.raises(SystemExit, match="/dev/nsm"):
        open_nsm(replace(config, nsm_mode="nitro"))


def test_enclave_draws_its_randomness_through_the_nsm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = devsetup.write(tmp_path, listen="unix:/tmp/unused.sock")
    deps = build_deps(EnclaveConfig.load(path))
    assert isinstance(deps.nsm, SimulatedNsm)
    assert len(deps.rand(32)) == 32

    def refuse(self: SimulatedNsm, n: int) -> bytes:
        raise NsmError("InternalError", "NSM down")

    monkeypatch.setattr(SimulatedNsm, "get_random", refuse)
    with pytest.raises(NsmError, match="NSM down"):
        deps.rand(32)
    assert json.loads(path.read_text())["nsm"]["mode"] == "simulated"
