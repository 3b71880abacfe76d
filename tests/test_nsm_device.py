"""enclave.nsm_device: the /dev/nsm backend, byte for byte, through a fake driver.

Expected request bytes are written out by hand from the serde/CBOR rules
(RFC 8949 §3.1: major type 3 text = 0x60 + length, 5 map = 0xa0 + entries,
2 bytes = 0x40 + length or 0x58 LEN8 / 0x59 LEN16, 0 uint = value or 0x18 U8 /
0x19 U16, 0xf5 true, 0xf6 null), not produced by the code under test.
"""

from __future__ import annotations

import ctypes
import errno
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest

from client.sdk.attestation import verify
from enclave.nsm import NsmError, SimulatedNitroPki, SimulatedNsm, image_pcrs
from enclave.nsm_device import (
    NSM_IOCTL_RAW,
    REQUEST_MAX_SIZE,
    RESPONSE_MAX_SIZE,
    DeviceNsm,
    NsmMessage,
    NsmUnavailable,
    attestation_request,
    describe_nsm_request,
    describe_pcr_request,
    extend_pcr_request,
    get_random_request,
    lock_pcr_request,
    lock_pcrs_request,
)
from tests.nsm_fake_device import FakeNsmDevice, failing, fixed, simulated_responder

VECTORS = Path(__file__).parent / "vectors" / "attestation"
REAL = VECTORS / "evervault_beta_valid-attestation-doc-bytes.cbor"
REAL_TIME = datetime(2022, 10, 13, 8, 58, 2, 136000, tzinfo=UTC)
REAL_PCR0 = bytes.fromhex(
    "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b"
)
FD = 7  # any descriptor: the fake driver never touches it

# CBOR text strings used below: 0x60 + length, then the UTF-8 bytes.
T_ATTESTATION = "6b" + b"Attestation".hex()
T_DESCRIBE_PCR = "6b" + b"DescribePCR".hex()
T_INDEX = "65" + b"index".hex()
T_DATA = "64" + b"data".hex()
T_USER_DATA = "69" + b"user_data".hex()
T_NONCE = "65" + b"nonce".hex()
T_PUBLIC_KEY = "6a" + b"public_key".hex()


def hexcat(*parts: str) -> bytes:
    """Bytes from hex pieces, one CBOR item each."""
    return bytes.fromhex("".join(parts))


def device(responder: object) -> tuple[DeviceNsm, FakeNsmDevice]:
    fake = FakeNsmDevice(responder)  # type: ignore[arg-type]
    return DeviceNsm(FD, ioctl=fake), fake


### Requests, byte for byte


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        # unit variant -> bare text "GetRandom" (9 bytes: 0x69)
        (get_random_request(), ("69", "47657452616e646f6d")),
        # unit variant -> bare text "DescribeNSM" (11 bytes: 0x6b)
        (describe_nsm_request(), ("6b", "44657363726962654e534d")),
        # {"DescribePCR": {"index": 16}}: map(1), text(11), map(1), text(5), uint 16 (0x10)
        (describe_pcr_request(16), ("a1", T_DESCRIBE_PCR, "a1", T_INDEX, "10")),
        # index 300 is a u16: 0x19 0x012c
        (describe_pcr_request(300), ("a1", T_DESCRIBE_PCR, "a1", T_INDEX, "19012c")),
        # {"ExtendPCR": {"index": 16, "data": h'616263'}}: fields in declaration order
        (
            extend_pcr_request(16, b"abc"),
            ("a1", "69", "457874656e64504352", "a2", T_INDEX, "10", T_DATA, "43", "616263"),
        ),
        # {"LockPCR": {"index": 31}}: 31 > 23 needs 0x18 0x1f
        (lock_pcr_request(31), ("a1", "67", "4c6f636b504352", "a1", T_INDEX, "181f")),
        # {"LockPCRs": {"range": 16}}
        (lock_pcrs_request(16), ("a1", "68", "4c6f636b50435273", "a1", "65", "72616e6765", "10")),
        # {"Attestation": {"user_data": null, "nonce": h'0102', "public_key": null}}
        (
            attestation_request(nonce=b"\x01\x02"),
            (
                "a1",
                T_ATTESTATION,
                "a3",
                T_USER_DATA,
                "f6",
                T_NONCE,
                "42",
                "0102",
                T_PUBLIC_KEY,
                "f6",
            ),
        ),
        # all three present; a 24-byte public key needs 0x58 0x18
        (
            attestation_request(b"u", b"n", bytes(24)),
            (
                "a1",
                T_ATTESTATION,
                "a3",
                T_USER_DATA,
                "41",
                "75",
                T_NONCE,
                "41",
                "6e",
                T_PUBLIC_KEY,
                "5818",
                "00" * 24,
            ),
        ),
    ],
    ids=[
        "GetRandom",
        "DescribeNSM",
        "DescribePCR",
        "DescribePCR-u16",
        "ExtendPCR",
        "LockPCR",
        "LockPCRs",
        "Attestation-nonce",
        "Attestation-all",
    ],
)
def test_request_encoding_is_byte_exact(encoded: bytes, expected: tuple[str, ...]) -> None:
    assert encoded.hex() == "".join(expected)


def test_the_request_behind_the_real_document() -> None:
    """The real document's 256-byte nonce, as the request that asked for it."""
    nonce = cbor2.loads(cbor2.loads(REAL.read_bytes())[2])["nonce"]
    assert len(nonce) == 256
    # the nonce is a 256-byte bstr: 0x59 0x0100
    head = hexcat("a1", T_ATTESTATION, "a3", T_USER_DATA, "f6", T_NONCE, "590100")
    expected = head + nonce + hexcat(T_PUBLIC_KEY, "f6")
    assert attestation_request(nonce=nonce) == expected


@pytest.mark.parametrize("index", [-1, 65536, True, 1.0])
def test_request_refuses_a_non_u16_index(index: object) -> None:
    with pytest.raises(NsmError) as info:
        describe_pcr_request(index)  # type: ignore[arg-type]
    assert info.value.code == "InvalidArgument"


### The ioctl


def test_ioctl_gets_the_raw_struct_with_both_iovecs() -> None:
    nsm, fake = device(fixed(hexcat("67", "4c6f636b504352")))  # "LockPCR"
    nsm.lock_pcr(20)
    (call,) = fake.calls
    # _IOWR(0x0A, 0, 32): dir 3 << 30 | size 32 << 16 | magic 0x0A << 8 | nr 0
    assert call.code == NSM_IOCTL_RAW == 0xC0200A00
    assert ctypes.sizeof(NsmMessage) == 32
    assert call.fd == FD
    assert call.request == lock_pcr_request(20)
    assert call.request_len == len(lock_pcr_request(20))
    assert call.response_capacity == RESPONSE_MAX_SIZE == 0x3000


def test_a_request_over_0x1000_bytes_never_reaches_the_driver() -> None:
    nsm, fake = device(fixed(b""))
    with pytest.raises(NsmError) as info:
        nsm.extend_pcr(16, bytes(REQUEST_MAX_SIZE))
    assert info.value.code == "InputTooLarge"
    assert fake.calls == []


def test_the_real_ioctl_reaches_the_kernel(tmp_path: Path) -> None:
    """fcntl.ioctl with the ctypes struct on a device that is not the NSM: ENOTTY, typed."""
    nsm = DeviceNsm.open("/dev/null")
    try:
        with pytest.raises(NsmError) as info:
            nsm.get_random(32)
        assert info.value.code == "InternalError"
        assert "ioctl on the NSM failed" in str(info.value)
    finally:
        nsm.close()


def test_missing_device_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(NsmUnavailable, match="only inside an enclave"):
        DeviceNsm.open(str(tmp_path / "nsm"))


### Decoding responses


def test_decodes_a_real_attestation_response() -> None:
    real = REAL.read_bytes()
    # {"Attestation": {"document": bstr(4654)}}: 4654 = 0x122e needs 0x59 + 2 bytes
    response = hexcat("a1", T_ATTESTATION, "a1", "68", "646f63756d656e74", "59122e") + real
    nsm, fake = device(fixed(response))
    nonce = cbor2.loads(cbor2.loads(real)[2])["nonce"]
    document = nsm.attestation(nonce=nonce)
    assert document == real
    assert fake.calls[0].request == attestation_request(nonce=nonce)
    assert verify(document, at=REAL_TIME, nonce=nonce).pcrs[0] == REAL_PCR0


def test_decodes_describe_pcr_with_the_real_pcr0() -> None:
    # {"DescribePCR": {"lock": true, "data": bstr(48)}}: 48 = 0x30 needs 0x58 0x30
    head = hexcat("a1", T_DESCRIBE_PCR, "a2", "64", "6c6f636b", "f5", T_DATA, "5830")
    response = head + REAL_PCR0
    nsm, _ = device(fixed(response))
    described = nsm.describe_pcr(0)
    assert (described.locked, described.data) == (True, REAL_PCR0)


def test_get_random_gathers_several_responses() -> None:
    chunks = iter([bytes(range(32)), bytes(range(32, 64))])
    # {"GetRandom": {"random": bstr(32)}}
    prefix = hexcat("a1", "69", "47657452616e646f6d", "a1", "66", "72616e646f6d", "5820")
    nsm, fake = device(lambda _request: prefix + next(chunks))
    assert nsm.get_random(40) == bytes(range(40))
    assert [c.request for c in fake.calls] == [get_random_request()] * 2


def test_decodes_extend_and_describe_nsm() -> None:
    new_value = bytes(range(48))
    nsm, _ = device(fixed(cbor2.dumps({"ExtendPCR": {"data": new_value}})))
    assert nsm.extend_pcr(16, b"x") == new_value
    description = {
        "version_major": 1,
        "version_minor": 0,
        "version_patch": 0,
        "module_id": "i-0123-enc4567",
        "max_pcrs": 32,
        "locked_pcrs": [0, 1, 2, 3, 4],
        "digest": "SHA384",
    }
    nsm, _ = device(fixed(cbor2.dumps({"DescribeNSM": description})))
    described = nsm.describe_nsm()
    assert described.version == (1, 0, 0)
    assert (described.module_id, described.max_pcrs, described.digest) == (
        "i-0123-enc4567",
        32,
        "SHA384",
    )
    assert described.locked_pcrs == frozenset(range(5))


### Errors


@pytest.mark.parametrize(
    "code",
    [
        "InvalidArgument",
        "InvalidIndex",
        "InvalidResponse",
        "ReadOnlyIndex",
        "InvalidOperation",
        "BufferTooSmall",
        "InputTooLarge",
        "InternalError",
    ],
)
def test_nsm_error_variant_maps_to_its_code(code: str) -> None:
    # {"Error": "<code>"}: a newtype variant, the code a bare text string
    response = hexcat("a1", "65", "4572726f72", f"{0x60 + len(code):02x}") + code.encode()
    nsm, _ = device(fixed(response))
    with pytest.raises(NsmError) as info:
        nsm.attestation(nonce=b"n")
    assert info.value.code == code
    assert str(info.value).startswith(f"{code}: ")


@pytest.mark.parametrize(
    ("driver_errno", "code"), [(errno.EMSGSIZE, "InputTooLarge"), (errno.EIO, "InternalError")]
)
def test_driver_errno_maps_like_nsm_api(driver_errno: int, code: str) -> None:
    nsm, _ = device(failing(driver_errno))
    with pytest.raises(NsmError) as info:
        nsm.describe_pcr(0)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("response", "code", "fault"),
    [
        (b"\xff\x00", "InternalError", "not CBOR"),
        (b"", "InvalidResponse", "answered 0 bytes"),
        (cbor2.dumps([1, 2]), "InvalidResponse", "not a tagged variant"),
        (cbor2.dumps({"Error": "Success"}), "InvalidResponse", "unknown error"),
        (cbor2.dumps("LockPCR"), "InvalidResponse", "expected Attestation, the NSM answered"),
        (cbor2.dumps({"Attestation": {"doc": b""}}), "InvalidResponse", "lacks bytes document"),
        (cbor2.dumps({"Attestation": {"document": "x"}}), "InvalidResponse", "lacks bytes"),
    ],
    ids=["garbage", "empty", "array", "success-as-error", "wrong-variant", "field", "type"],
)
def test_malformed_response_is_a_typed_error(response: bytes, code: str, fault: str) -> None:
    nsm, _ = device(fixed(response))
    with pytest.raises(NsmError) as info:
        nsm.attestation()
    assert info.value.code == code
    assert fault in str(info.value)


def test_attestation_field_over_1024_bytes_is_refused_before_the_driver() -> None:
    nsm, fake = device(fixed(b""))
    with pytest.raises(NsmError) as info:
        nsm.attestation(user_data=bytes(1025))
    assert info.value.code == "InputTooLarge"
    assert fake.calls == []


### Against NSM firmware (the simulator behind the fake driver)


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


def test_device_nsm_round_trip_against_simulated_firmware(pki: SimulatedNitroPki) -> None:
    firmware = SimulatedNsm("shardkeep-enclave:device", pki=pki)
    nsm, _ = device(simulated_responder(firmware))
    nonce = bytes(range(32))
    document = nsm.attestation(public_key=b"pk", nonce=nonce)
    doc = verify(document, root_certificate=pki.root_certificate_pem, nonce=nonce)
    assert doc.public_key == b"pk"
    for index, value in image_pcrs("shardkeep-enclave:device").items():
        assert doc.pcrs[index] == value == nsm.describe_pcr(index).data

    extended = nsm.extend_pcr(16, b"config")
    assert nsm.describe_pcr(16).data == extended and not nsm.describe_pcr(16).locked
    nsm.lock_pcr(16)
    with pytest.raises(NsmError) as info:
        nsm.extend_pcr(16, b"more")
    assert info.value.code == "ReadOnlyIndex"
    with pytest.raises(NsmError) as info:
        nsm.describe_pcr(32)
    assert info.value.code == "InvalidIndex"
    assert len(nsm.get_random(600)) == 600
