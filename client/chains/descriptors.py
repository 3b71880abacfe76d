"""Output script descriptors of a bip340 wallet, for watch-only wallets (BIP-380, BIP-386).

A watch-only wallet (Bitcoin Core's ``importdescriptors``, Sparrow, ...)
imports ``tr(KEY/0/*)`` for receiving and ``tr(KEY/1/*)`` for change, with
``KEY`` the wallet's extended public key behind its key origin
(``[fingerprint]xpub``, BIP-380 "Key Expressions"). Each index ``i`` then
gives the key-path-only Taproot output of the child ``0/i`` or ``1/i``
(BIP-386 ``tr(KEY)``), which is what ``wallet address --path 0/i`` prints
and what the wallet signs for; a PSBT such a wallet makes names the child
under the wallet's fingerprint, as ``wallet sign-psbt`` expects.

BIP-380 "Checksum": eight characters over the descriptor, computed with a
BCH code over GF(32) after mapping each character to its position in
``INPUT_CHARSET`` (low 5 bits as one symbol, the high bits of each group of
three characters as another).
"""

from __future__ import annotations

from typing import Final

from client.chains.xpub import Network, fingerprint, wallet_xpub
from client.errors import sdk_boundary
from client.sdk.wallet import Wallet
from tss.errors import InputError

__all__ = [
    # Functions
    "descriptor_checksum",
    "with_checksum",
    "wallet_descriptors",
]

INPUT_CHARSET: Final = (
    "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyz"
    'ABCDEFGH`#"\\ '
)
CHECKSUM_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR: Final = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)


def _polymod(symbols: list[int]) -> int:
    chk = 1
    for value in symbols:
        top = chk >> 35
        chk = (chk & 0x7FFFFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= _GENERATOR[i] if (top >> i) & 1 else 0
    return chk


def _expand(descriptor: str) -> list[int]:
    symbols: list[int] = []
    groups: list[int] = []
    for c in descriptor:
        position = INPUT_CHARSET.find(c)
        if position < 0:
            raise InputError(f"{c!r} is not a descriptor character")
        symbols.append(position & 31)
        groups.append(position >> 5)
        if len(groups) == 3:
            symbols.append(groups[0] * 9 + groups[1] * 3 + groups[2])
            groups = []
    if len(groups) == 1:
        symbols.append(groups[0])
    elif len(groups) == 2:
        symbols.append(groups[0] * 3 + groups[1])
    return symbols


@sdk_boundary
def descriptor_checksum(descriptor: str) -> str:
    """The eight-character BIP-380 checksum of a descriptor (without its ``#``).

    Raises:
        InputError: a character outside BIP-380's input character set.
    """
    value = _polymod([*_expand(descriptor), 0, 0, 0, 0, 0, 0, 0, 0]) ^ 1
    return "".join(CHECKSUM_CHARSET[(value >> (5 * (7 - i))) & 31] for i in range(8))


@sdk_boundary
def with_checksum(descriptor: str) -> str:
    """``descriptor#checksum``."""
    return f"{descriptor}#{descriptor_checksum(descriptor)}"


@sdk_boundary
def wallet_descriptors(wallet: Wallet, network: Network) -> tuple[str, str]:
    """The receive and change descriptors of a bip340 wallet, checksummed.

    Returns:
        ``tr([fp]xpub/0/*)#...`` and ``tr([fp]xpub/1/*)#...``.

    Raises:
        InputError: not a bip340 wallet, or no share to read the chain code from.
    """
    if wallet.scheme != "bip340":
        raise InputError("Taproot descriptors need a bip340 wallet")
    key = f"[{fingerprint(wallet.public_key).hex()}]{wallet_xpub(wallet, network)}"
    receive, change = (with_checksum(f"tr({key}/{branch}/*)") for branch in (0, 1))
    return receive, change
