"""EVM transactions to sign: legacy (EIP-155) and EIP-1559, parsed strictly, digest computed here.

Accepted encodings of an *unsigned* transaction, and what is signed:

- EIP-1559 (type 2; EIP-1559 "Specification", EIP-2718 envelope, EIP-2930
  access list)::

      0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas, max_fee_per_gas,
                   gas_limit, destination, amount, data, access_list])
      digest = keccak256(those bytes)

- legacy with replay protection (EIP-155 "Specification")::

      rlp([nonce, gas_price, gas_limit, destination, amount, data, chain_id, 0, 0])
      digest = keccak256(those bytes)

A legacy transaction without a chain id (six fields, pre-EIP-155) is refused:
it is valid on every chain, so no policy on ``chain_id`` could hold. Other
EIP-2718 types (1, 3, 4) are refused too. ``destination`` is 20 bytes, or
empty for a contract creation. Integers are canonical RLP integers; nonces and
gas limits are below 2^64 (EIP-2681), chain ids in [1, 2^63).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from Crypto.Hash import keccak

from shardkeep.chains.errors import TransactionParseError
from shardkeep.chains.rlp import RlpItem, decode, decode_uint

__all__ = [
    # Functions
    "keccak256",
    "parse_transaction",
    # Types
    "EvmTransaction",
]

EIP1559_TYPE: Final = 0x02
_MAX_CHAIN_ID: Final = (1 << 63) - 1  # fits a CEL int; EIP-2294 bounds real ids far lower


def keccak256(data: bytes) -> bytes:
    """Keccak-256 (the original Keccak padding, as Ethereum uses it; not NIST SHA3-256)."""
    return keccak.new(digest_bits=256, data=data).digest()


@dataclass(frozen=True)
class EvmTransaction:
    """A parsed unsigned EVM transaction.

    Attributes:
        tx_type: 0 (legacy, EIP-155) or 2 (EIP-1559).
        chain_id: the EIP-155 chain id.
        nonce: the sender's nonce.
        gas: the gas limit.
        max_fee_per_gas: the fee cap in wei (legacy: the gas price).
        max_priority_fee_per_gas: the tip cap in wei (legacy: the gas price).
        to: the 20-byte destination, or None for a contract creation.
        value: the amount in wei.
        data: the call data.
        access_list: (address, storage keys) pairs (legacy: empty).
        digest: the 32-byte digest an ECDSA signature of this transaction signs.
    """

    tx_type: Literal[0, 2]
    chain_id: int
    nonce: int
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    to: bytes | None
    value: int
    data: bytes
    access_list: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    digest: bytes

    @property
    def selector(self) -> bytes:
        """The first four bytes of the call data (the ABI function selector), or b"" if shorter."""
        return self.data[:4] if len(self.data) >= 4 else b""


def _fail(message: str) -> TransactionParseError:
    return TransactionParseError("evm", message)


def _bytes(item: RlpItem, what: str) -> bytes:
    if not isinstance(item, bytes):
        raise _fail(f"{what} is a list, not a byte string")
    return item


def _destination(item: RlpItem) -> bytes | None:
    to = _bytes(item, "the destination")
    if to == b"":
        return None
    if len(to) != 20:
        raise _fail(f"the destination is {len(to)} bytes, not 20")
    return to


def _chain_id(item: RlpItem) -> int:
    chain_id = decode_uint(item, "chain_id")
    if not 1 <= chain_id <= _MAX_CHAIN_ID:
        raise _fail("chain_id must be in [1, 2^63)")
    return chain_id


def _access_list(item: RlpItem) -> tuple[tuple[bytes, tuple[bytes, ...]], ...]:
    if not isinstance(item, list):
        raise _fail("the access list is not a list")
    entries = []
    for entry in item:
        if not isinstance(entry, list) or len(entry) != 2:
            raise _fail("an access list entry is not [address, storage keys]")
        address = _bytes(entry[0], "an access list address")
        keys = entry[1]
        if len(address) != 20 or not isinstance(keys, list):
            raise _fail("an access list entry needs a 20-byte address and a list of keys")
        storage = tuple(_bytes(k, "a storage key") for k in keys)
        if any(len(k) != 32 for k in storage):
            raise _fail("an access list storage key is not 32 bytes")
        entries.append((address, storage))
    return tuple(entries)


def _nine_fields(fields: RlpItem) -> list[RlpItem]:
    if not isinstance(fields, list) or len(fields) != 9:
        raise _fail("the payload is not a list of 9 fields")
    return fields


def _eip1559(raw: bytes) -> EvmTransaction:
    (chain, nonce, tip, cap, gas, to, value, data, access) = _nine_fields(decode(raw[1:]))
    tx = EvmTransaction(
        tx_type=2,
        chain_id=_chain_id(chain),
        nonce=decode_uint(nonce, "nonce", 64),
        max_priority_fee_per_gas=decode_uint(tip, "max_priority_fee_per_gas"),
        max_fee_per_gas=decode_uint(cap, "max_fee_per_gas"),
        gas=decode_uint(gas, "gas_limit", 64),
        to=_destination(to),
        value=decode_uint(value, "amount"),
        data=_bytes(data, "data"),
        access_list=_access_list(access),
        digest=keccak256(raw),
    )
    if tx.max_priority_fee_per_gas > tx.max_fee_per_gas:
        raise _fail("max_priority_fee_per_gas exceeds max_fee_per_gas (EIP-1559)")
    return tx


def _legacy(raw: bytes) -> EvmTransaction:
    fields = decode(raw)
    if isinstance(fields, list) and len(fields) == 6:
        raise _fail("a legacy transaction without a chain id (pre-EIP-155) is refused")
    (nonce, price, gas, to, value, data, chain, zero_r, zero_s) = _nine_fields(fields)
    if zero_r != b"" or zero_s != b"":
        raise _fail("the last two EIP-155 signing fields must be empty (0, 0)")
    gas_price = decode_uint(price, "gas_price")
    return EvmTransaction(
        tx_type=0,
        chain_id=_chain_id(chain),
        nonce=decode_uint(nonce, "nonce", 64),
        max_priority_fee_per_gas=gas_price,
        max_fee_per_gas=gas_price,
        gas=decode_uint(gas, "gas_limit", 64),
        to=_destination(to),
        value=decode_uint(value, "amount"),
        data=_bytes(data, "data"),
        access_list=(),
        digest=keccak256(raw),
    )


def parse_transaction(raw: bytes) -> EvmTransaction:
    """Parse an unsigned EIP-1559 or EIP-155 legacy transaction and compute its signing digest.

    Arguments:
        raw: the unsigned transaction's signing payload (see the module docstring).

    Returns:
        The parsed transaction; ``digest`` is keccak256(raw).

    Raises:
        TransactionParseError: any other type, a pre-EIP-155 legacy
            transaction, a non-canonical encoding, or a field out of range.
    """
    if not raw:
        raise _fail("empty transaction")
    first = raw[0]
    if first == EIP1559_TYPE:
        return _eip1559(raw)
    if first >= 0xC0:  # an RLP list: a legacy transaction (EIP-2718: types are 0x00-0x7f)
        return _legacy(raw)
    raise _fail(f"transaction type 0x{first:02x} is not supported (only 2 and legacy)")
