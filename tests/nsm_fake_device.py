"""A fake ``/dev/nsm`` for tests: an ``ioctl`` function that plays the kernel driver.

It reads ``struct nsm_raw`` from the argument's raw bytes (two native-endian
``{u64 addr; u64 len}`` iovecs), so a wrong layout in ``enclave.nsm_device``
shows up here; copies the request out of the caller's memory, asks a
responder for the answer bytes and writes them into the response buffer and
their length into the struct (offset 24), as Linux's ``nsm`` driver does.

:func:`simulated_responder` answers like NSM firmware would, backed by a
:class:`enclave.nsm.SimulatedNsm`, encoding its answers by the serde rules.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2

from enclave.nsm import NsmError, SimulatedNsm
from enclave.nsm_device import NSM_IOCTL_RAW, NsmMessage

RAW_LAYOUT = struct.Struct("=QQQQ")  # request.addr, request.len, response.addr, response.len
RESPONSE_LEN_OFFSET = 24

Responder = Callable[[bytes], bytes]


@dataclass(frozen=True)
class IoctlCall:
    fd: int
    code: int
    request: bytes
    request_len: int
    response_capacity: int


@dataclass
class FakeNsmDevice:
    """``ioctl(fd, code, message)`` for :class:`enclave.nsm_device.DeviceNsm`."""

    responder: Responder
    calls: list[IoctlCall] = field(default_factory=list)

    def __call__(self, fd: int, code: int, message: NsmMessage) -> int:
        assert ctypes.sizeof(message) == RAW_LAYOUT.size
        raw = ctypes.string_at(ctypes.addressof(message), RAW_LAYOUT.size)
        request_addr, request_len, response_addr, response_capacity = RAW_LAYOUT.unpack(raw)
        request = ctypes.string_at(request_addr, request_len)
        self.calls.append(IoctlCall(fd, code, request, request_len, response_capacity))
        if code != NSM_IOCTL_RAW:
            raise OSError(25, "Inappropriate ioctl for device")  # ENOTTY, as the driver
        answer = self.responder(request)
        written = min(len(answer), response_capacity)  # the driver truncates
        ctypes.memmove(response_addr, answer, written)
        ctypes.memmove(
            ctypes.addressof(message) + RESPONSE_LEN_OFFSET, struct.pack("=Q", written), 8
        )
        return 0


def fixed(answer: bytes) -> Responder:
    """A responder that always answers ``answer``."""
    return lambda _request: answer


def failing(errno: int) -> Responder:
    """A responder whose ioctl fails with ``errno``."""

    def respond(_request: bytes) -> bytes:
        raise OSError(errno, "fake driver failure")

    return respond


def simulated_responder(nsm: SimulatedNsm) -> Responder:
    """NSM firmware backed by a simulated NSM: CBOR request in, CBOR response out."""

    def respond(request: bytes) -> bytes:
        value = cbor2.loads(request)
        name, fields = (value, {}) if isinstance(value, str) else next(iter(value.items()))
        try:
            answer: Any = _run(nsm, name, fields)
        except NsmError as e:
            answer = {"Error": e.code}
        return cbor2.dumps(answer)

    return respond


def _run(nsm: SimulatedNsm, name: str, fields: dict[str, Any]) -> Any:
    if name == "GetRandom":
        return {"GetRandom": {"random": nsm.get_random(256)}}
    if name == "Attestation":
        document = nsm.attestation(fields["user_data"], fields["nonce"], fields["public_key"])
        return {"Attestation": {"document": document}}
    if name == "DescribePCR":
        described = nsm.describe_pcr(fields["index"])
        return {"DescribePCR": {"lock": described.locked, "data": described.data}}
    if name == "ExtendPCR":
        return {"ExtendPCR": {"data": nsm.extend_pcr(fields["index"], fields["data"])}}
    if name == "LockPCR":
        nsm.lock_pcr(fields["index"])
        return "LockPCR"
    return {"Error": "InvalidOperation"}
