"""Bech32 / Bech32m and segwit addresses (shardkeep.chains.bech32) against BIP-350's vectors.

The vectors are read from the BIP's text, vendored verbatim (tests/vectors/bips).
"""

from __future__ import annotations

import re

import pytest

from shardkeep.chains.bech32 import (
    AddressError,
    bech32_decode,
    bech32_encode,
    decode_segwit_address,
    script_address,
    segwit_address,
    segwit_script,
)
from tests.vectors import load_text

BIP350 = load_text("bips/bip-0350.mediawiki")


def section(start: str, end: str) -> str:
    return BIP350.split(start, 1)[1].split(end, 1)[0]


def items(text: str) -> list[str]:
    """The <tt>...</tt> strings of a bullet list, each with a byte prefix (``0x20 + ``) applied."""
    found = []
    for line in text.splitlines():
        match = re.match(r"\* (?:(0x[0-9A-F]{2}) \+ )?<tt>([^<]*)</tt>", line)
        if match:
            prefix = chr(int(match.group(1), 16)) if match.group(1) else ""
            found.append(prefix + match.group(2))
    return found


VALID_BECH32M = items(section("The following strings are valid Bech32m:", "No string can"))
INVALID_BECH32M = items(section("are not valid Bech32m", "===Test vectors for v0-v16"))
VALID_ADDRESSES = [
    tuple(re.findall(r"<tt>([^<]*)</tt>", line))
    for line in section("translate to in hex.", "The following list gives invalid").splitlines()
    if line.startswith("* ")
]
INVALID_ADDRESSES = items(section("their invalidity.", "==Appendix"))


def test_the_bip_lists_were_read() -> None:
    assert (len(VALID_BECH32M), len(INVALID_BECH32M)) == (7, 14)
    assert (len(VALID_ADDRESSES), len(INVALID_ADDRESSES)) == (8, 15)


@pytest.mark.parametrize("text", VALID_BECH32M)
def test_valid_bech32m_strings_decode_and_encode_back(text: str) -> None:
    hrp, data, encoding = bech32_decode(text)
    assert encoding == "bech32m"
    assert bech32_encode(hrp, data, "bech32m") == text.lower()


@pytest.mark.parametrize("text", INVALID_BECH32M)
def test_invalid_bech32m_strings_are_refused(text: str) -> None:
    try:
        _, _, encoding = bech32_decode(text)
    except AddressError:
        return
    assert encoding != "bech32m", f"{text!r} accepted as Bech32m"


@pytest.mark.parametrize(("address", "script"), VALID_ADDRESSES)
def test_valid_segwit_addresses_give_their_script_and_back(address: str, script: str) -> None:
    hrp = address.lower().split("1", 1)[0]
    version, program = decode_segwit_address(hrp, address)
    assert segwit_script(version, program).hex() == script
    assert segwit_address(hrp, version, program) == address.lower()
    assert script_address(bytes.fromhex(script), hrp) == address.lower()


def test_scripts_without_an_address_have_none() -> None:
    p2pkh = bytes.fromhex("76a914") + b"\x11" * 20 + bytes.fromhex("88ac")
    for script in (p2pkh, b"\x6a\x01\x00", b"\x51\x01\x00", b"\x00\x15" + b"\x00" * 21, b""):
        assert script_address(script, "bc") is None


@pytest.mark.parametrize("address", INVALID_ADDRESSES)
def test_invalid_segwit_addresses_are_refused(address: str) -> None:
    for hrp in ("bc", "tb"):
        with pytest.raises(AddressError):
            decode_segwit_address(hrp, address)
