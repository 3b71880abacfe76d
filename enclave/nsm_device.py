"""The Nitro Secure Module on real hardware: CBOR messages through one ``ioctl`` on ``/dev/nsm``.

Wire format (aws-nitro-enclaves-nsm-api ``src/api/mod.rs``): requests and
responses are serde enums encoded by ``serde_cbor``, i.e. externally tagged:

- a variant without fields is a bare text string (``"GetRandom"``,
  ``"DescribeNSM"``; responses ``"LockPCR"``, ``"LockPCRs"``);
- a variant with fields is a one-entry map from the variant name to a map of
  its fields, keys as text in declaration order (``{"DescribePCR": {"index": 16}}``),
  integers in their shortest form, byte fields as byte strings and ``None``
  as CBOR null;
- a failure is the newtype variant ``{"Error": "<ErrorCode>"}``.

Transport (nsm-api ``src/driver/mod.rs``; Linux ``include/uapi/linux/nsm.h``):
``ioctl(fd, _IOWR(0x0A, 0, struct nsm_raw), &raw)`` where ``struct nsm_raw``
is two ``{u64 addr; u64 len}`` iovecs, the request (at most 0x1000 bytes) and
a response buffer (0x3000 bytes). The kernel writes the response into the
buffer and the response's length back into the struct. The ``ioctl``
function is injectable so the encoding and the struct layout are tested off
Nitro (tests/test_nsm_device.py).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast, get_args

import cbor2

from enclave.nsm import (
    MAX_USER_DATA_SIZE,
    PCR_COUNT,
    NsmError,
    NsmErrorCode,
    PcrDescription,
)
from tss.errors import ShardkeepError

__all__ = [
    "DEVICE",
    "NSM_IOCTL_RAW",
    "REQUEST_MAX_SIZE",
    "RESPONSE_MAX_SIZE",
    "DeviceNsm",
    "Ioctl",
    "NsmDescription",
    "NsmMessage",
    "NsmUnavailable",
    "attestation_request",
    "decode_response",
    "describe_nsm_request",
    "describe_pcr_request",
    "extend_pcr_request",
    "get_random_request",
    "lock_pcr_request",
    "lock_pcrs_request",
]

DEVICE: Final = "/dev/nsm"
REQUEST_MAX_SIZE: Final = 0x1000
RESPONSE_MAX_SIZE: Final = 0x3000
_NSM_IOCTL_MAGIC: Final = 0x0A
_U16_MAX: Final = 0xFFFF


class _Iovec(ctypes.Structure):
    """``struct nsm_iovec``: a user-space buffer's address and length."""

    _fields_ = (("addr", ctypes.c_uint64), ("len", ctypes.c_uint64))


class NsmMessage(ctypes.Structure):
    """``struct nsm_raw``: the request and response iovecs passed to the ioctl."""

    _fields_ = (("request", _Iovec), ("response", _Iovec))


def _iowr(magic: int, number: int, size: int) -> int:
    # asm-generic/ioctl.h (x86-64 and arm64, the Nitro platforms): direction
    # read|write (3) in bits 30-31, size in 16-29, type in 8-15, number in 0-7.
    return (3 << 30) | (size << 16) | (magic << 8) | number


NSM_IOCTL_RAW: Final = _iowr(_NSM_IOCTL_MAGIC, 0, ctypes.sizeof(NsmMessage))
"""``_IOWR(0x0A, 0, struct nsm_raw)`` = 0xC0200A00."""

Ioctl = Callable[[int, int, NsmMessage], object]
"""``fcntl.ioctl``'s shape: (fd, request code, mutable argument)."""


class NsmUnavailable(ShardkeepError):
    """``/dev/nsm`` cannot be opened: not inside a Nitro enclave, or no permission."""


@dataclass(frozen=True)
class NsmDescription:
    """Answer to ``DescribeNSM``."""

    version: tuple[int, int, int]
    module_id: str
    max_pcrs: int
    locked_pcrs: frozenset[int]
    digest: str


### Requests (nsm-api ``Request``)


def _u16(name: str, value: int) -> int:
    if type(value) is not int or not 0 <= value <= _U16_MAX:
        raise NsmError("InvalidArgument", f"{name} {value!r} is not a u16")
    return value


def _optional_bytes(name: str, value: bytes | None) -> bytes | None:
    if value is not None and not isinstance(value, bytes):
        raise NsmError("InvalidArgument", f"{name} must be bytes or None")
    return value


def describe_pcr_request(index: int) -> bytes:
    """``DescribePCR {index}``."""
    return cbor2.dumps({"DescribePCR": {"index": _u16("index", index)}})


def extend_pcr_request(index: int, data: bytes) -> bytes:
    """``ExtendPCR {index, data}``."""
    if not isinstance(data, bytes):
        raise NsmError("InvalidArgument", "data must be bytes")
    return cbor2.dumps({"ExtendPCR": {"index": _u16("index", index), "data": data}})


def lock_pcr_request(index: int) -> bytes:
    """``LockPCR {index}``."""
    return cbor2.dumps({"LockPCR": {"index": _u16("index", index)}})


def lock_pcrs_request(count: int) -> bytes:
    """``LockPCRs {range}``: lock PCRs ``0 .. count-1``."""
    return cbor2.dumps({"LockPCRs": {"range": _u16("range", count)}})


def describe_nsm_request() -> bytes:
    """``DescribeNSM`` (a unit variant: a bare string)."""
    return cbor2.dumps("DescribeNSM")


def attestation_request(
    user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
) -> bytes:
    """``Attestation {user_data, nonce, public_key}``; absent fields are CBOR null."""
    fields = {
        "user_data": _optional_bytes("user_data", user_data),
        "nonce": _optional_bytes("nonce", nonce),
        "public_key": _optional_bytes("public_key", public_key),
    }
    return cbor2.dumps({"Attestation": fields})


def get_random_request() -> bytes:
    """``GetRandom`` (a unit variant: a bare string)."""
    return cbor2.dumps("GetRandom")


### Responses (nsm-api ``Response``)

_ERROR_CODES: Final = frozenset(get_args(NsmErrorCode))


def decode_response(data: bytes) -> tuple[str, Any]:
    """Split a CBOR response into its variant name and fields.

    Arguments:
        data: the response bytes the NSM wrote.

    Returns:
        ``(name, fields)``; ``fields`` is None for a unit variant.

    Raises:
        NsmError: the NSM's own ``Error`` variant (its code), ``InternalError``
            for bytes that are not CBOR (as the nsm-api driver maps them),
            ``InvalidResponse`` for CBOR that is no response variant.
    """
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError) as e:
        raise NsmError("InternalError", f"the NSM's response is not CBOR ({e})") from e
    if isinstance(value, str):
        return value, None
    if not (isinstance(value, dict) and len(value) == 1):
        raise NsmError("InvalidResponse", "the NSM's response is not a tagged variant")
    ((name, fields),) = value.items()
    if name == "Error":
        if fields not in _ERROR_CODES:
            raise NsmError("InvalidResponse", f"the NSM reported an unknown error {fields!r}")
        raise NsmError(cast(NsmErrorCode, fields), "refused by the NSM")
    if not isinstance(name, str):
        raise NsmError("InvalidResponse", "the NSM's response variant is not named")
    return name, fields


def _expect(
    response: tuple[str, Any], variant: str, fields: Mapping[str, type] | None
) -> dict[str, Any]:
    name, value = response
    if name != variant:
        raise NsmError("InvalidResponse", f"expected {variant}, the NSM answered {name!r}")
    if fields is None:
        if value is not None:
            raise NsmError("InvalidResponse", f"{variant} response carries fields")
        return {}
    if not isinstance(value, dict):
        raise NsmError("InvalidResponse", f"{variant} response has no fields")
    for field, kind in fields.items():
        if not isinstance(value.get(field), kind):
            raise NsmError("InvalidResponse", f"{variant} response lacks {kind.__name__} {field}")
    return value


### The device


class DeviceNsm:
    """The NSM behind ``/dev/nsm`` (implements :class:`enclave.nsm.Nsm`).

    One file descriptor serves every thread: the kernel driver serialises
    requests, and each call uses its own buffers.
    """

    def __init__(self, fd: int, *, ioctl: Ioctl = fcntl.ioctl) -> None:
        """Use an open NSM device.

        Arguments:
            fd: a descriptor of ``/dev/nsm`` opened read-write.
            ioctl: the ioctl function (``fcntl.ioctl``; tests pass a fake device).
        """
        self._fd = fd
        self._ioctl = ioctl

    @classmethod
    def open(cls, path: str = DEVICE, *, ioctl: Ioctl = fcntl.ioctl) -> DeviceNsm:
        """Open the NSM device.

        Raises:
            NsmUnavailable: the device is missing or may not be opened.
        """
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise NsmUnavailable(
                f"cannot open {path} ({e.strerror}): the Nitro NSM exists only inside an enclave"
            ) from e
        return cls(fd, ioctl=ioctl)

    def close(self) -> None:
        """Close the device."""
        os.close(self._fd)

    def call(self, request: bytes) -> tuple[str, Any]:
        """Send one CBOR request and decode the response (see :func:`decode_response`).

        Raises:
            NsmError: ``InputTooLarge`` for a request over 0x1000 bytes or the
                driver's EMSGSIZE, ``InternalError`` for another ioctl failure,
                or the NSM's own error.
        """
        if len(request) > REQUEST_MAX_SIZE:
            raise NsmError(
                "InputTooLarge", f"request is {len(request)} bytes, at most {REQUEST_MAX_SIZE}"
            )
        request_buffer = ctypes.create_string_buffer(request, len(request))
        response_buffer = ctypes.create_string_buffer(RESPONSE_MAX_SIZE)
        message = NsmMessage(
            _Iovec(ctypes.addressof(request_buffer), len(request)),
            _Iovec(ctypes.addressof(response_buffer), RESPONSE_MAX_SIZE),
        )
        try:
            self._ioctl(self._fd, NSM_IOCTL_RAW, message)
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                raise NsmError("InputTooLarge", "the NSM driver refused the request size") from e
            raise NsmError("InternalError", f"ioctl on the NSM failed ({e.strerror})") from e
        length = message.response.len
        if not 0 < length <= RESPONSE_MAX_SIZE:
            raise NsmError("InvalidResponse", f"the NSM answered {length} bytes")
        return decode_response(response_buffer.raw[:length])

    def describe_pcr(self, index: int) -> PcrDescription:
        """Read a PCR: whether it is locked, and its value."""
        fields = _expect(
            self.call(describe_pcr_request(index)), "DescribePCR", {"lock": bool, "data": bytes}
        )
        return PcrDescription(fields["lock"], fields["data"])

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """Extend a PCR with ``data``; returns its new value."""
        fields = _expect(self.call(extend_pcr_request(index, data)), "ExtendPCR", {"data": bytes})
        return bytes(fields["data"])

    def lock_pcr(self, index: int) -> None:
        """Make a PCR read-only."""
        _expect(self.call(lock_pcr_request(index)), "LockPCR", None)

    def lock_pcrs(self, count: int) -> None:
        """Make PCRs ``0 .. count-1`` read-only."""
        _expect(self.call(lock_pcrs_request(count)), "LockPCRs", None)

    def describe_nsm(self) -> NsmDescription:
        """The NSM's version, module id, PCR count, locked PCRs and digest."""
        fields = _expect(
            self.call(describe_nsm_request()),
            "DescribeNSM",
            {
                "version_major": int,
                "version_minor": int,
                "version_patch": int,
                "module_id": str,
                "max_pcrs": int,
                "locked_pcrs": list,
                "digest": str,
            },
        )
        locked = fields["locked_pcrs"]
        if not all(type(i) is int and 0 <= i < PCR_COUNT for i in locked):
            raise NsmError("InvalidResponse", "DescribeNSM lists an invalid locked PCR")
        return NsmDescription(
            (fields["version_major"], fields["version_minor"], fields["version_patch"]),
            fields["module_id"],
            fields["max_pcrs"],
            frozenset(locked),
            fields["digest"],
        )

    def attestation(
        self,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """A signed attestation document (untagged COSE_Sign1, ES384).

        Raises:
            NsmError: the NSM refused (e.g. ``InputTooLarge`` for a field over
                1024 bytes) or answered something else.
        """
        for name, value in (("user_data", user_data), ("nonce", nonce), ("public_key", public_key)):
            if value is not None and len(value) > MAX_USER_DATA_SIZE:
                raise NsmError(
                    "InputTooLarge", f"{name} is {len(value)} bytes, at most {MAX_USER_DATA_SIZE}"
                )
        request = attestation_request(user_data, nonce, public_key)
        fields = _expect(self.call(request), "Attestation", {"document": bytes})
        return bytes(fields["document"])

    def get_random(self, n: int) -> bytes:
        """``n`` bytes from the NSM's random source (one ``GetRandom`` returns what it chooses)."""
        if type(n) is not int or n < 0:
            raise NsmError("InvalidArgument", "n must be a non-negative int")
        out = bytearray()
        while len(out) < n:
            fields = _expect(self.call(get_random_request()), "GetRandom", {"random": bytes})
            if not fields["random"]:
                raise NsmError("InvalidResponse", "GetRandom returned no bytes")
            out += fields["random"]
        return bytes(out[:n])
