"""Bitcoin transactions: the data model and its consensus serialisation.

Just enough of the format for computing BIP-341 signature hashes and attaching
witnesses: parse a transaction (legacy or BIP-144 segwit serialisation),
serialise it back byte for byte, and compute its txid and wtxid.

Wire format (BIP-144 "Transaction ID" / "Serialization"; integers little-endian)::

    tx      = i32 version [marker=0x00 flag=0x01] compact(n_in) txin* compact(n_out) txout*
              [witness * n_in] u32 locktime
    txin    = 32 prev txid || u32 prev vout || bytes(script_sig) || u32 sequence
    txout   = i64 value || bytes(script_pubkey)
    witness = compact(n_items) bytes(item)*
    bytes(x)= compact(len(x)) || x

CompactSize is Bitcoin Core's ``WriteCompactSize``: one byte below 0xfd, else
0xfd/0xfe/0xff followed by a 2-, 4- or 8-byte integer; a non-minimal encoding
is refused, as Core's ``ReadCompactSize`` does.

A parsed transaction is untrusted input: counts are bounded by the bytes left
before anything is allocated, and trailing bytes, an empty witness section
after the segwit marker, and non-canonical sizes raise ``InvalidEncodingError``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Final

from tss.errors import InputError, InvalidEncodingError

__all__ = [
    # Functions
    "compact_size",
    "sha256d",
    # Types
    "OutPoint",
    "TxIn",
    "TxOut",
    "Transaction",
    # Constants
    "MAX_MONEY",
]

MAX_MONEY: Final = 21_000_000 * 100_000_000
"""Bitcoin Core's ``MAX_MONEY`` in satoshis (amount.h): no valid output holds more."""

_MAX_U32: Final = (1 << 32) - 1
_MIN_TXIN_BYTES: Final = 41  # 36-byte outpoint + empty script_sig + sequence
_MIN_TXOUT_BYTES: Final = 9  # value + empty script


def sha256d(data: bytes) -> bytes:
    """SHA256(SHA256(data)): Bitcoin's txid hash."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def compact_size(n: int) -> bytes:
    """Bitcoin's CompactSize encoding of ``n`` (0 <= n < 2**64), minimal as Core writes it.

    Raises:
        InputError: ``n`` is negative or does not fit 64 bits.
    """
    if not 0 <= n < 1 << 64:
        raise InputError("CompactSize value out of range")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= _MAX_U32:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def _var_bytes(data: bytes) -> bytes:
    return compact_size(len(data)) + data


class _Reader:
    """A bounds-checked cursor over untrusted bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise InvalidEncodingError(f"transaction truncated in {what}")
        chunk = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return chunk

    def peek(self, n: int) -> bytes:
        return bytes(self._data[self._pos : self._pos + n])

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value

    def compact(self, what: str) -> int:
        """A CompactSize, refusing non-minimal encodings (Core's ``ReadCompactSize``)."""
        first = self.take(1, what)[0]
        if first < 0xFD:
            return first
        width, minimum = {0xFD: (2, 0xFD), 0xFE: (4, 0x10000), 0xFF: (8, 0x100000000)}[first]
        value = int.from_bytes(self.take(width, what), "little")
        if value < minimum:
            raise InvalidEncodingError(f"non-canonical CompactSize in {what}")
        return value

    def var_bytes(self, what: str) -> bytes:
        return self.take(self.compact(what), what)

    def count(self, what: str, min_item_bytes: int) -> int:
        """A CompactSize count no larger than the items the remaining bytes can hold."""
        n = self.compact(what)
        if n * min_item_bytes > self.remaining:
            raise InvalidEncodingError(f"{what} count exceeds the transaction's size")
        return n


@dataclass(frozen=True)
class OutPoint:
    """The output an input spends.

    Attributes:
        txid: the 32-byte txid in internal byte order (as serialised; the
            hex shown by explorers is this reversed).
        vout: the output's index in that transaction.
    """

    txid: bytes
    vout: int

    def __post_init__(self) -> None:
        if len(self.txid) != 32:
            raise InputError("an outpoint's txid is 32 bytes")
        if not 0 <= self.vout <= _MAX_U32:
            raise InputError("an outpoint's index is a 32-bit unsigned integer")

    def serialize(self) -> bytes:
        """The 36-byte outpoint: txid || u32 vout (BIP-341's ``outpoint``)."""
        return self.txid + struct.pack("<I", self.vout)


@dataclass(frozen=True)
class TxOut:
    """A transaction output, or an output being spent (BIP-341 ``amounts``, ``scriptPubKeys``).

    Attributes:
        value: the amount in satoshis, 0 to ``MAX_MONEY``.
        script_pubkey: the locking script.
    """

    value: int
    script_pubkey: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.value <= MAX_MONEY:
            raise InputError("an output's value must be 0 to MAX_MONEY satoshis")

    def serialize(self) -> bytes:
        """i64 value || bytes(script_pubkey): CTxOut as Core serialises it."""
        return struct.pack("<q", self.value) + _var_bytes(self.script_pubkey)


@dataclass(frozen=True)
class TxIn:
    """A transaction input.

    Attributes:
        prevout: the output it spends.
        script_sig: the input script (empty for segwit and Taproot spends).
        sequence: nSequence.
        witness: the witness stack (empty when there is none).
    """

    prevout: OutPoint
    script_sig: bytes = b""
    sequence: int = 0xFFFFFFFF
    witness: tuple[bytes, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0 <= self.sequence <= _MAX_U32:
            raise InputError("nSequence is a 32-bit unsigned integer")

    def serialize(self) -> bytes:
        """outpoint || bytes(script_sig) || u32 sequence (the witness goes separately)."""
        return self.prevout.serialize() + _var_bytes(self.script_sig) + _u32(self.sequence)


@dataclass(frozen=True)
class Transaction:
    """A Bitcoin transaction.

    Attributes:
        version: nVersion, a signed 32-bit integer.
        inputs: the inputs, in order.
        outputs: the outputs, in order.
        locktime: nLockTime.
    """

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int = 0

    def __post_init__(self) -> None:
        if not -(1 << 31) <= self.version < 1 << 31:
            raise InputError("nVersion is a signed 32-bit integer")
        if not 0 <= self.locktime <= _MAX_U32:
            raise InputError("nLockTime is a 32-bit unsigned integer")

    @property
    def has_witness(self) -> bool:
        """True when some input carries a witness (serialised with BIP-144's marker)."""
        return any(txin.witness for txin in self.inputs)

    def serialize(self, *, with_witness: bool = True) -> bytes:
        """The consensus serialisation; BIP-144's when ``with_witness`` and a witness exists."""
        segwit = with_witness and self.has_witness
        parts = [struct.pack("<i", self.version)]
        if segwit:
            parts.append(b"\x00\x01")
        parts.append(compact_size(len(self.inputs)))
        parts += [txin.serialize() for txin in self.inputs]
        parts.append(compact_size(len(self.outputs)))
        parts += [txout.serialize() for txout in self.outputs]
        if segwit:
            for txin in self.inputs:
                parts.append(compact_size(len(txin.witness)))
                parts += [_var_bytes(item) for item in txin.witness]
        parts.append(_u32(self.locktime))
        return b"".join(parts)

    def txid(self) -> bytes:
        """The txid in internal byte order: SHA256d of the serialisation without witnesses."""
        return sha256d(self.serialize(with_witness=False))

    def wtxid(self) -> bytes:
        """The wtxid in internal byte order (BIP-141): SHA256d of the full serialisation."""
        return sha256d(self.serialize())

    @staticmethod
    def parse(data: bytes, *, allow_witness: bool = True) -> Transaction:
        """Parse a serialised transaction (legacy or BIP-144 segwit).

        Arguments:
            data: the transaction's bytes (untrusted).
            allow_witness: False reads the legacy serialisation only (a zero
                byte after the version is an input count), as a PSBT's
                unsigned transaction is written (BIP-174).

        Returns:
            The transaction; ``serialize()`` gives ``data`` back.

        Raises:
            InvalidEncodingError: truncated, trailing bytes, a non-canonical
                CompactSize, a bad segwit flag or an all-empty witness section,
                or an out-of-range value.
        """
        reader = _Reader(bytes(data))
        version: int = struct.unpack("<i", reader.take(4, "version"))[0]
        # BIP-144: a zero where the input count would be is the marker, then a
        # nonzero flag. Like Core, a zero-input transaction is read as segwit.
        segwit = allow_witness and reader.peek(1) == b"\x00"
        if segwit:
            marker_flag = reader.take(2, "segwit marker")
            if marker_flag[1] != 0x01:
                raise InvalidEncodingError("unknown segwit flag")
        try:
            inputs = [_parse_txin(reader) for _ in range(reader.count("input", _MIN_TXIN_BYTES))]
            outputs = [
                _parse_txout(reader) for _ in range(reader.count("output", _MIN_TXOUT_BYTES))
            ]
        except InputError as e:
            if isinstance(e, InvalidEncodingError):
                raise
            raise InvalidEncodingError(str(e)) from e
        if segwit:
            for i, txin in enumerate(inputs):
                items = tuple(
                    reader.var_bytes("witness item") for _ in range(reader.count("witness", 1))
                )
                inputs[i] = TxIn(txin.prevout, txin.script_sig, txin.sequence, items)
            if not any(txin.witness for txin in inputs):
                # Core: "Superfluous witness record"; the marker promised a witness.
                raise InvalidEncodingError("segwit marker without any witness")
        locktime = reader.u32("locktime")
        if reader.remaining:
            raise InvalidEncodingError("trailing bytes after the transaction")
        return Transaction(version, tuple(inputs), tuple(outputs), locktime)


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _parse_txin(reader: _Reader) -> TxIn:
    prevout = OutPoint(reader.take(32, "outpoint"), reader.u32("outpoint"))
    script_sig = reader.var_bytes("script_sig")
    return TxIn(prevout, script_sig, reader.u32("sequence"))


def _parse_txout(reader: _Reader) -> TxOut:
    value: int = struct.unpack("<q", reader.take(8, "output value"))[0]
    if not 0 <= value <= MAX_MONEY:
        raise InvalidEncodingError("output value out of range")
    return TxOut(value, reader.var_bytes("script_pubkey"))
