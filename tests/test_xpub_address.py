"""Extended public keys (client.chains.xpub) and key-path Taproot addresses
(client.chains.bitcoin.key_path_address) against the BIP-32 and BIP-86 vectors.

The vectors are read from the BIPs' text, vendored verbatim (tests/vectors/bips).
"""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest

from client.chains.bitcoin import key_path_address
from client.chains.descriptors import descriptor_checksum
from client.chains.solana import b58decode
from client.chains.xpub import extended_public_key, fingerprint, serialize_xpub
from tests.vectors import load_text
from tss.bip32 import HARDENED, derive_public
from tss.errors import InputError
from tss.taproot import taproot_output_key

BIP32 = load_text("bips/bip-0032.mediawiki")
BIP86 = load_text("bips/bip-0086.mediawiki").split("==Test vectors==", 1)[1]
BIP380 = load_text("bips/bip-0380.mediawiki").split("==Test Vectors==", 1)[1]


def decode_xpub(text: str, version: str = "0488b21e") -> tuple[int, bytes, int, bytes, bytes]:
    """(depth, parent fingerprint, child number, chain code, key), checksum and version checked."""
    raw = b58decode(text)
    payload, checksum = raw[:-4], raw[-4:]
    assert hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == checksum
    assert payload[:4] == bytes.fromhex(version)
    return (
        payload[4],
        payload[5:9],
        int.from_bytes(payload[9:13], "big"),
        payload[13:45],
        payload[45:78],
    )


def chains() -> list[tuple[tuple[int, ...], str]]:
    """Every (path, ext pub) of BIP-32 test vectors 1-4 (hardened indices >= 2^31)."""
    found = []
    for match in re.finditer(r"\* Chain (m[^\n]*)\n\*\* ext pub: (\w+)", BIP32):
        steps = re.findall(r"/(\d+)(<sub>H</sub>)?", match.group(1))
        path = tuple(int(index) + (HARDENED if hard else 0) for index, hard in steps)
        found.append((path, match.group(2)))
    return found


CHAINS = chains()
# Each vector's chain whose last step is public: the child of the chain just before it.
PUBLIC_STEPS = [
    (parent, child)
    for (parent_path, parent), (child_path, child) in itertools.pairwise(CHAINS)
    if child_path[:-1] == parent_path and child_path[-1] < HARDENED
]


def test_the_bip_lists_were_read() -> None:
    assert (len(CHAINS), len(PUBLIC_STEPS)) == (17, 6)


@pytest.mark.parametrize(("_path", "xpub"), CHAINS)
def test_every_bip32_xpub_serialises_back(_path: tuple[int, ...], xpub: str) -> None:
    depth, parent, child_number, chain_code, key = decode_xpub(xpub)
    assert serialize_xpub("mainnet", depth, parent, child_number, chain_code, key) == xpub


@pytest.mark.parametrize(("parent", "child"), PUBLIC_STEPS)
def test_public_children_match_bip32(parent: str, child: str) -> None:
    depth, _, _, chain_code, key = decode_xpub(parent)
    index = decode_xpub(child)[2]
    assert extended_public_key(key, chain_code, "mainnet", (index,), depth=depth) == child
    assert decode_xpub(child)[1] == fingerprint(key)


def test_a_master_key_serialises_with_depth_zero() -> None:
    (path, master), *_ = CHAINS
    assert path == ()
    _, _, _, chain_code, key = decode_xpub(master)
    assert extended_public_key(key, chain_code, "mainnet") == master
    with pytest.raises(InputError):
        extended_public_key(key, chain_code, "mainnet", depth=1)


def bip86_addresses() -> list[tuple[tuple[int, ...], str, str, str]]:
    account = re.search(r"// Account 0, root = m/86'/0'/0'\nxprv = \w+\nxpub = (\w+)", BIP86)
    assert account is not None
    found = []
    for match in re.finditer(
        r"= m/86'/0'/0'/(\d+)/(\d+)\n.*?internal_key = (\w+)\noutput_key\s+= (\w+)\n"
        r"scriptPubKey = \w+\naddress\s+= (\w+)",
        BIP86,
        re.S,
    ):
        path = (int(match.group(1)), int(match.group(2)))
        found.append((path, match.group(3), match.group(4), match.group(5)))
    assert len(found) == 3
    return [(path, account.group(1), *rest) for path, *rest in found]  # type: ignore[misc]


@pytest.mark.parametrize(("path", "account", "internal", "output", "address"), bip86_addresses())
def test_bip86_addresses_from_the_account_xpub(
    path: tuple[int, ...], account: str, internal: str, output: str, address: str
) -> None:
    _, _, _, chain_code, key = decode_xpub(account)
    child = derive_public(key, chain_code, path).public_key
    assert child[1:].hex() == internal
    assert taproot_output_key(child[1:]).output_key.hex() == output
    assert key_path_address(child[1:], "mainnet") == address
    assert key_path_address(child[1:], "testnet").startswith("tb1p")


def checksum_case(name: str) -> str:
    match = re.search(rf"\* {re.escape(name)}: <tt>([^<]*)</tt>", BIP380)
    assert match is not None, name
    return match.group(1)


def test_bip380_descriptor_checksums() -> None:
    descriptor, checksum = checksum_case("Valid checksum").split("#")
    assert descriptor_checksum(descriptor) == checksum
    for name in ("Error in payload", "Error in checksum"):
        body, given = checksum_case(name).split("#", 1)
        assert descriptor_checksum(body) != given
    with pytest.raises(InputError):
        descriptor_checksum(checksum_case("Invalid characters in payload").split("#")[0])
