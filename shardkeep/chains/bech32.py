"""Segwit addresses: Bech32 (BIP-173) for version 0, Bech32m (BIP-350) for versions 1-16.

BIP-173 "Bech32": ``hrp "1" data checksum`` over the 32-character alphabet,
the checksum a BCH code over ``hrp_expand(hrp) || data`` whose polymod must
equal 1 (Bech32) or 0x2bc830a3 (Bech32m, BIP-350 "Bech32m"). A segwit
address carries the witness version as its first data character, then the
witness program regrouped from 5-bit to 8-bit groups without padding left
over (BIP-173 "Segwit address format"). BIP-350 "Addresses for segregated
witness outputs": version 0 must use Bech32, versions 1-16 Bech32m; programs
are 2-40 bytes, version 0 only 20 or 32.

Decoding refuses mixed case, characters outside 33-126, strings over 90
characters, a wrong checksum or encoding, a wrong human-readable part, and
bad padding, each with a :class:`AddressError`.
"""

from __future__ import annotations

from typing import Final, Literal

from tss.errors import InputError

__all__ = [
    # Functions
    "bech32_encode",
    "bech32_decode",
    "segwit_address",
    "decode_segwit_address",
    "segwit_script",
    "script_address",
    # Exceptions
    "AddressError",
    # Constants
    "NETWORK_HRPS",
]

Encoding = Literal["bech32", "bech32m"]

CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CONSTANTS: Final[dict[Encoding, int]] = {"bech32": 1, "bech32m": 0x2BC830A3}
_GENERATOR: Final = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
NETWORK_HRPS: Final = {"mainnet": "bc", "testnet": "tb", "signet": "tb", "regtest": "bcrt"}
"""The human-readable part of each network's segwit addresses."""


class AddressError(InputError):
    """A string that is not a valid address of the kind asked for (the fault is named)."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= _GENERATOR[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _checksum(hrp: str, data: list[int], encoding: Encoding) -> list[int]:
    polymod = _polymod(_hrp_expand(hrp) + data + [0] * 6) ^ _CONSTANTS[encoding]
    return [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]


def bech32_encode(hrp: str, data: list[int], encoding: Encoding) -> str:
    """``hrp "1" data checksum`` in lowercase (``data``: 5-bit values)."""
    combined = data + _checksum(hrp, data, encoding)
    return hrp + "1" + "".join(CHARSET[d] for d in combined)


def bech32_decode(text: str) -> tuple[str, list[int], Encoding]:
    """Split and check a Bech32 or Bech32m string.

    Returns:
        The lowercase human-readable part, the 5-bit data values (checksum
        removed) and which checksum constant matched.

    Raises:
        AddressError: mixed case, a character outside 33-126 or the alphabet,
            longer than 90 characters, no separator, an empty hrp, a data part
            shorter than the checksum, or a checksum matching neither encoding.
    """
    if any(not 33 <= ord(c) <= 126 for c in text):
        raise AddressError("a character outside the printable ASCII range")
    if text.lower() != text and text.upper() != text:
        raise AddressError("mixed upper and lower case")
    if len(text) > 90:
        raise AddressError("longer than 90 characters")
    text = text.lower()
    separator = text.rfind("1")
    if separator < 1:
        raise AddressError("no human-readable part before the separator '1'")
    if separator + 7 > len(text):
        raise AddressError("too short for a checksum")
    hrp, rest = text[:separator], text[separator + 1 :]
    if any(c not in CHARSET for c in rest):
        raise AddressError("a character outside the Bech32 alphabet")
    data = [CHARSET.index(c) for c in rest]
    check = _polymod(_hrp_expand(hrp) + data)
    for encoding, constant in _CONSTANTS.items():
        if check == constant:
            return hrp, data[:-6], encoding
    raise AddressError("the checksum is wrong")


def _regroup(data: list[int], from_bits: int, to_bits: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    out = []
    max_value = (1 << to_bits) - 1
    for value in data:
        if value >> from_bits:
            return None
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_value)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & max_value)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & max_value):
        return None
    return out


def _check_program(version: int, program: bytes) -> None:
    if not 0 <= version <= 16:
        raise AddressError("the witness version is over 16")
    if not 2 <= len(program) <= 40:
        raise AddressError("a witness program is 2 to 40 bytes")
    if version == 0 and len(program) not in (20, 32):
        raise AddressError("a version 0 witness program is 20 or 32 bytes")


def segwit_address(hrp: str, version: int, program: bytes) -> str:
    """The address of a witness program: Bech32 for version 0, Bech32m above.

    Raises:
        AddressError: a version over 16 or a program length BIP-141 does not allow.
    """
    _check_program(version, program)
    five_bit = _regroup(list(program), 8, 5, pad=True)
    assert five_bit is not None  # 8-bit input always regroups
    return bech32_encode(hrp, [version, *five_bit], "bech32" if version == 0 else "bech32m")


def decode_segwit_address(hrp: str, address: str) -> tuple[int, bytes]:
    """The witness version and program of a segwit address for the network of ``hrp``.

    Raises:
        AddressError: not Bech32/Bech32m, another network's hrp, the wrong
            checksum for the version, bad padding, or a bad program length.
    """
    found_hrp, data, encoding = bech32_decode(address)
    if found_hrp != hrp:
        raise AddressError(f"the address is for {found_hrp!r}, not {hrp!r}")
    if not data:
        raise AddressError("no witness version")
    version = data[0]
    program = _regroup(data[1:], 5, 8, pad=False)
    if program is None:
        raise AddressError("the witness program's padding is invalid")
    _check_program(version, bytes(program))
    if encoding != ("bech32" if version == 0 else "bech32m"):
        raise AddressError(f"witness version {version} does not take a {encoding} checksum")
    return version, bytes(program)


def segwit_script(version: int, program: bytes) -> bytes:
    """The scriptPubKey of a witness program: ``OP_n <program>`` (BIP-141)."""
    _check_program(version, program)
    return bytes([version + 0x50 if version else 0, len(program)]) + program


def script_address(script_pubkey: bytes, hrp: str) -> str | None:
    """The segwit address of a scriptPubKey (``OP_n <2-40 bytes>``), or None for any other script.

    Arguments:
        script_pubkey: the output's script.
        hrp: the network's human-readable part (``NETWORK_HRPS``).
    """
    if len(script_pubkey) < 4 or script_pubkey[1] != len(script_pubkey) - 2:
        return None
    opcode = script_pubkey[0]
    if opcode != 0 and not 0x51 <= opcode <= 0x60:
        return None
    version = opcode - 0x50 if opcode else 0
    try:
        return segwit_address(hrp, version, script_pubkey[2:])
    except AddressError:
        return None  # a program length no address can carry
