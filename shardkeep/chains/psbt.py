"""Partially signed Bitcoin transactions: BIP-174 version 0, with BIP-371's Taproot fields.

Format (BIP-174 "Specification")::

    psbt   = "psbt" 0xff  global-map  input-map * n_inputs  output-map * n_outputs
    map    = (compact(len(key)) key compact(len(value)) value)* 0x00
    key    = compact(key type) key data

The global map must hold the unsigned transaction (``PSBT_GLOBAL_UNSIGNED_TX``,
legacy serialisation, empty scriptSigs and witnesses); there is one input map
per input and one output map per output. Every pair is kept in the order read,
so ``serialize()`` gives the parsed bytes back and unknown pairs survive.

Checked on parse, each refused with a :class:`PsbtError` naming the map
(BIP-174 "Test Vectors", BIP-371 "Test Vectors"): the magic, truncation and
trailing bytes, duplicate keys, key data where a type takes none, public keys
of the wrong length, BIP-32 paths not 4-byte aligned, sighash types not 4
bytes, an unsigned transaction with a scriptSig or witness, a non-witness
UTXO whose txid is not the one spent; and BIP-371's lengths: x-only keys of
32 bytes, Schnorr signatures of 64 or 65 bytes, control blocks of 33 + 32k
bytes (k <= 128). Refused as unsupported (:class:`UnsupportedPsbtError`):
PSBT version 2 (BIP-370) and the fields only it defines.

What a key-path signer reads (BIP-371 "Specification"): ``PSBT_IN_TAP_INTERNAL_KEY``
(0x17), ``PSBT_IN_TAP_MERKLE_ROOT`` (0x18), ``PSBT_IN_TAP_BIP32_DERIVATION``
(0x16), ``PSBT_IN_SIGHASH_TYPE`` (0x03), the spent outputs (every input's,
BIP-341 commits to all their amounts and scripts), and what it writes:
``PSBT_IN_TAP_KEY_SIG`` (0x13). The finaliser (BIP-174 "Input Finalizer")
turns a key signature into ``PSBT_IN_FINAL_SCRIPTWITNESS`` and clears the
input's other fields except its UTXOs and unknown pairs.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Final

from shardkeep.chains.bip341 import (
    HASH_TYPES,
    SIGHASH_DEFAULT,
    SighashPrecomputed,
    key_path_sighash,
    precompute,
)
from shardkeep.chains.bitcoin_tx import Transaction, TxIn, TxOut, compact_size
from shardkeep.chains.errors import TransactionParseError
from tss.errors import InputError

__all__ = [
    # Functions
    "parse_psbt",
    # Exceptions
    "PsbtError",
    "UnsupportedPsbtError",
    # Types
    "Psbt",
    "PsbtMap",
    "TapDerivation",
    "TaprootInput",
    # Constants
    "MAGIC",
    "MAX_PSBT_BYTES",
    "MAX_UNSIGNED_TX_BYTES",
]

MAGIC: Final = b"psbt\xff"
MAX_PSBT_BYTES: Final = 16 << 20
# Bitcoin Core's standardness limit (MAX_STANDARD_TX_WEIGHT = 400,000 weight units,
# four per non-witness byte): a larger unsigned transaction would not be relayed. With
# 41 bytes or more per input, it also bounds the inputs (2,439), hence the work per PSBT.
MAX_UNSIGNED_TX_BYTES: Final = 100_000

# BIP-174 / BIP-371 / BIP-370 key types.
GLOBAL_UNSIGNED_TX: Final = 0x00
GLOBAL_XPUB: Final = 0x01
GLOBAL_VERSION: Final = 0xFB
_GLOBAL_V2_ONLY: Final = frozenset({0x02, 0x03, 0x04, 0x05, 0x06})
IN_NON_WITNESS_UTXO: Final = 0x00
IN_WITNESS_UTXO: Final = 0x01
IN_PARTIAL_SIG: Final = 0x02
IN_SIGHASH_TYPE: Final = 0x03
IN_REDEEM_SCRIPT: Final = 0x04
IN_WITNESS_SCRIPT: Final = 0x05
IN_BIP32_DERIVATION: Final = 0x06
IN_FINAL_SCRIPTSIG: Final = 0x07
IN_FINAL_SCRIPTWITNESS: Final = 0x08
_IN_V2_ONLY: Final = frozenset({0x0E, 0x0F, 0x10, 0x11, 0x12})
IN_TAP_KEY_SIG: Final = 0x13
IN_TAP_SCRIPT_SIG: Final = 0x14
IN_TAP_LEAF_SCRIPT: Final = 0x15
IN_TAP_BIP32_DERIVATION: Final = 0x16
IN_TAP_INTERNAL_KEY: Final = 0x17
IN_TAP_MERKLE_ROOT: Final = 0x18
OUT_REDEEM_SCRIPT: Final = 0x00
OUT_WITNESS_SCRIPT: Final = 0x01
OUT_BIP32_DERIVATION: Final = 0x02
_OUT_V2_ONLY: Final = frozenset({0x03, 0x04})
OUT_TAP_INTERNAL_KEY: Final = 0x05
OUT_TAP_TREE: Final = 0x06
OUT_TAP_BIP32_DERIVATION: Final = 0x07

# Key types that take no key data, per map (BIP-174 / BIP-371 tables).
_NO_KEY_DATA: Final = {
    "global": {GLOBAL_UNSIGNED_TX, GLOBAL_VERSION},
    "input": {
        IN_NON_WITNESS_UTXO, IN_WITNESS_UTXO, IN_SIGHASH_TYPE, IN_REDEEM_SCRIPT,
        IN_WITNESS_SCRIPT, IN_FINAL_SCRIPTSIG, IN_FINAL_SCRIPTWITNESS, IN_TAP_KEY_SIG,
        IN_TAP_INTERNAL_KEY, IN_TAP_MERKLE_ROOT,
    },
    "output": {OUT_REDEEM_SCRIPT, OUT_WITNESS_SCRIPT, OUT_TAP_INTERNAL_KEY, OUT_TAP_TREE},
}  # fmt: skip
# What an input finaliser keeps (BIP-174 "Input Finalizer": UTXOs, finals, unknowns).
_KNOWN_INPUT_TYPES: Final = frozenset(range(0x00, 0x19))
_KEPT_ON_FINALIZE: Final = frozenset({IN_NON_WITNESS_UTXO, IN_WITNESS_UTXO})


class PsbtError(TransactionParseError):
    """Bytes that are not a well-formed PSBT, or an input that cannot be signed (named)."""

    def __init__(self, message: str) -> None:
        super().__init__("psbt", message)


class UnsupportedPsbtError(PsbtError):
    """A well-formed PSBT this implementation does not handle (e.g. version 2)."""


### Reading


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise PsbtError(f"truncated in {what}")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def compact(self, what: str) -> int:
        first = self.take(1, what)[0]
        if first < 0xFD:
            return first
        width, minimum = {0xFD: (2, 0xFD), 0xFE: (4, 0x10000), 0xFF: (8, 0x100000000)}[first]
        value = int.from_bytes(self.take(width, what), "little")
        if value < minimum:
            raise PsbtError(f"non-canonical CompactSize in {what}")
        return value


def _key_type(key: bytes, where: str) -> tuple[int, bytes]:
    reader = _Reader(key)
    key_type = reader.compact(f"{where} key type")
    return key_type, key[len(key) - reader.remaining :]


@dataclass(frozen=True)
class PsbtMap:
    """One key-value map, its pairs in the order read (keys include their type).

    Attributes:
        kind: "global", "input" or "output".
        pairs: ``(key, value)`` pairs, keys unique.
    """

    kind: str
    pairs: tuple[tuple[bytes, bytes], ...]

    def get(self, key_type: int, key_data: bytes = b"") -> bytes | None:
        """The value under ``key_type || key_data``, or None."""
        key = compact_size(key_type) + key_data
        return next((v for k, v in self.pairs if k == key), None)

    def of_type(self, key_type: int) -> list[tuple[bytes, bytes]]:
        """``(key data, value)`` of every pair of ``key_type``."""
        found = []
        for key, value in self.pairs:
            found_type, data = _key_type(key, self.kind)
            if found_type == key_type:
                found.append((data, value))
        return found

    def with_value(self, key_type: int, value: bytes) -> PsbtMap:
        """This map with ``key_type`` (no key data) set to ``value``, in place or appended."""
        key = compact_size(key_type)
        if any(k == key for k, _ in self.pairs):
            pairs = tuple((k, value if k == key else v) for k, v in self.pairs)
        else:
            pairs = (*self.pairs, (key, value))
        return replace(self, pairs=pairs)

    def serialize(self) -> bytes:
        parts = [compact_size(len(k)) + k + compact_size(len(v)) + v for k, v in self.pairs]
        return b"".join(parts) + b"\x00"


def _read_map(reader: _Reader, kind: str, where: str) -> PsbtMap:
    pairs: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    while True:
        key_length = reader.compact(f"{where} key length")
        if key_length == 0:
            return PsbtMap(kind, tuple(pairs))
        key = reader.take(key_length, f"{where} key")
        value = reader.take(reader.compact(f"{where} value length"), f"{where} value")
        if key in seen:
            raise PsbtError(f"{where}: duplicate key {key.hex()}")
        seen.add(key)
        _check_pair(kind, where, key, value)
        pairs.append((key, value))


def _check_pubkey(key: bytes, where: str) -> None:
    if not ((len(key) == 33 and key[0] in (2, 3)) or (len(key) == 65 and key[0] in (4, 6, 7))):
        raise PsbtError(f"{where}: not a 33- or 65-byte public key")


def _check_path(value: bytes, where: str) -> None:
    if len(value) < 4 or len(value) % 4:
        raise PsbtError(f"{where}: a key origin is a 4-byte fingerprint and 4-byte indices")


def _check_tap_derivation(value: bytes, where: str) -> None:
    reader = _Reader(value)
    count = reader.compact(f"{where} leaf hash count")
    reader.take(32 * count, f"{where} leaf hashes")
    _check_path(value[len(value) - reader.remaining :], where)


def _check_schnorr_signature(value: bytes, where: str) -> None:
    if len(value) not in (64, 65):
        raise PsbtError(f"{where}: a Schnorr signature is 64 or 65 bytes")
    if len(value) == 65 and value[64] == SIGHASH_DEFAULT:
        raise PsbtError(f"{where}: an explicit SIGHASH_DEFAULT byte is invalid (BIP-341)")


def _check_pair(kind: str, where: str, key: bytes, value: bytes) -> None:
    key_type, data = _key_type(key, where)
    field = f"{where} field 0x{key_type:02x}"
    if key_type in _NO_KEY_DATA[kind] and data:
        raise PsbtError(f"{field}: this type takes no key data")
    if kind == "global":
        if key_type in _GLOBAL_V2_ONLY:
            raise UnsupportedPsbtError(f"{field} belongs to PSBT version 2 (BIP-370)")
        if key_type == GLOBAL_XPUB:
            if len(data) != 78:
                raise PsbtError(f"{field}: an extended key is 78 bytes")
            _check_path(value, field)
        elif key_type == GLOBAL_VERSION and len(value) != 4:
            raise PsbtError(f"{field}: the version is 4 bytes")
    elif kind == "input":
        if key_type in _IN_V2_ONLY:
            raise UnsupportedPsbtError(f"{field} belongs to PSBT version 2 (BIP-370)")
        if key_type in (IN_PARTIAL_SIG, IN_BIP32_DERIVATION):
            _check_pubkey(data, field)
            if key_type == IN_BIP32_DERIVATION:
                _check_path(value, field)
        elif key_type == IN_SIGHASH_TYPE and len(value) != 4:
            raise PsbtError(f"{field}: a sighash type is 4 bytes")
        elif key_type == IN_TAP_KEY_SIG:
            _check_schnorr_signature(value, field)
        elif key_type == IN_TAP_SCRIPT_SIG:
            if len(data) != 64:
                raise PsbtError(f"{field}: the key is an x-only key and a leaf hash (64 bytes)")
            _check_schnorr_signature(value, field)
        elif key_type == IN_TAP_LEAF_SCRIPT:
            if len(data) < 33 or (len(data) - 33) % 32 or len(data) > 33 + 32 * 128:
                raise PsbtError(f"{field}: a control block is 33 + 32k bytes, k <= 128")
            if not value:
                raise PsbtError(f"{field}: a leaf script ends with its leaf version")
        elif key_type == IN_TAP_BIP32_DERIVATION:
            if len(data) != 32:
                raise PsbtError(f"{field}: the key is a 32-byte x-only key")
            _check_tap_derivation(value, field)
        elif key_type in (IN_TAP_INTERNAL_KEY, IN_TAP_MERKLE_ROOT) and len(value) != 32:
            raise PsbtError(f"{field}: the value is 32 bytes")
    else:
        if key_type in _OUT_V2_ONLY:
            raise UnsupportedPsbtError(f"{field} belongs to PSBT version 2 (BIP-370)")
        if key_type == OUT_BIP32_DERIVATION:
            _check_pubkey(data, field)
            _check_path(value, field)
        elif key_type == OUT_TAP_INTERNAL_KEY and len(value) != 32:
            raise PsbtError(f"{field}: the value is a 32-byte x-only key")
        elif key_type == OUT_TAP_BIP32_DERIVATION:
            if len(data) != 32:
                raise PsbtError(f"{field}: the key is a 32-byte x-only key")
            _check_tap_derivation(value, field)


@dataclass(frozen=True)
class TapDerivation:
    """A ``PSBT_IN_TAP_BIP32_DERIVATION`` entry: where an x-only key comes from.

    Attributes:
        leaf_hashes: the script leaves the key appears in (empty: the internal key).
        fingerprint: the master key's fingerprint (4 bytes).
        path: the BIP-32 indices (hardened ones >= 2^31).
    """

    leaf_hashes: tuple[bytes, ...]
    fingerprint: bytes
    path: tuple[int, ...]


@dataclass(frozen=True)
class TaprootInput:
    """What BIP-371 says of an input, for a key-path signer.

    Attributes:
        internal_key: the 32-byte x-only internal key, or None.
        merkle_root: the 32-byte script tree root, or None (key path only).
        derivations: the origin of each x-only key named in the input.
        sighash_type: ``PSBT_IN_SIGHASH_TYPE``, or SIGHASH_DEFAULT when absent.
        key_signature: ``PSBT_IN_TAP_KEY_SIG``, or None.
        finalized: the input carries a final scriptSig or witness already.
    """

    internal_key: bytes | None
    merkle_root: bytes | None
    derivations: dict[bytes, TapDerivation]
    sighash_type: int
    key_signature: bytes | None
    finalized: bool


def _tap_derivation(value: bytes) -> TapDerivation:
    reader = _Reader(value)
    count = reader.compact("leaf hash count")
    hashes = tuple(reader.take(32, "leaf hash") for _ in range(count))
    origin = value[len(value) - reader.remaining :]
    path = tuple(struct.unpack(f"<{len(origin) // 4 - 1}I", origin[4:]))
    return TapDerivation(hashes, origin[:4], path)


@dataclass(frozen=True)
class Psbt:
    """A parsed version-0 PSBT.

    Attributes:
        global_map: the global pairs (the unsigned transaction among them).
        tx: the unsigned transaction.
        inputs: one map per transaction input.
        outputs: one map per transaction output.
    """

    global_map: PsbtMap
    tx: Transaction
    inputs: tuple[PsbtMap, ...]
    outputs: tuple[PsbtMap, ...]

    def serialize(self) -> bytes:
        """The PSBT's bytes (the parsed bytes, plus whatever was added since)."""
        parts = [MAGIC, self.global_map.serialize()]
        parts += [m.serialize() for m in (*self.inputs, *self.outputs)]
        return b"".join(parts)

    def to_base64(self) -> str:
        """The PSBT in Base64, as wallets and ``bitcoin-cli`` exchange it."""
        return base64.b64encode(self.serialize()).decode("ascii")

    def spent_output(self, index: int) -> TxOut:
        """The output input ``index`` spends, from its witness or non-witness UTXO.

        Raises:
            UnsupportedPsbtError: the input carries neither.
            PsbtError: a non-witness UTXO without the spent output, or a
                witness UTXO that is not one output.
        """
        where = f"input {index}"
        txin = self.tx.inputs[index]
        witness_utxo = self.inputs[index].get(IN_WITNESS_UTXO)
        if witness_utxo is not None:
            try:
                # A one-output transaction around it reuses the codec's checks.
                wrapped = b"\x01\x00\x00\x00\x00\x01" + witness_utxo + b"\x00\x00\x00\x00"
                (output,) = Transaction.parse(wrapped, allow_witness=False).outputs
            except InputError as e:
                raise PsbtError(f"{where}: the witness UTXO is not one output") from e
            return output
        full = self.inputs[index].get(IN_NON_WITNESS_UTXO)
        if full is None:
            raise UnsupportedPsbtError(f"{where}: no witness or non-witness UTXO (amount unknown)")
        previous = Transaction.parse(full)  # checked on parse
        if txin.prevout.vout >= len(previous.outputs):
            raise PsbtError(f"{where}: the non-witness UTXO has no output {txin.prevout.vout}")
        return previous.outputs[txin.prevout.vout]

    def spent_outputs(self) -> list[TxOut]:
        """Every input's spent output, in input order (BIP-341 signs them all)."""
        return list(self._spent)

    # Read once per PSBT, not once per input signed: signing all n inputs stays O(n).
    @cached_property
    def _spent(self) -> tuple[TxOut, ...]:
        return tuple(self.spent_output(i) for i in range(len(self.inputs)))

    @cached_property
    def _sighash_precomputed(self) -> SighashPrecomputed:
        # BIP-341's sha_prevouts, sha_amounts, sha_scriptpubkeys, sha_sequences and
        # sha_outputs are per transaction ("precomputed"), shared by every input.
        return precompute(self.tx, self._spent)

    def fee(self) -> int:
        """What the inputs spend minus what the outputs pay, in satoshis.

        Raises:
            UnsupportedPsbtError / PsbtError: a spent output is unknown, or the
                outputs pay more than the inputs spend.
        """
        fee = sum(o.value for o in self.spent_outputs()) - sum(o.value for o in self.tx.outputs)
        if fee < 0:
            raise PsbtError("the outputs pay more than the inputs spend")
        return fee

    def taproot_input(self, index: int) -> TaprootInput:
        """BIP-371's view of input ``index``.

        Raises:
            PsbtError: a sighash type BIP-341 does not define.
        """
        fields = self.inputs[index]
        raw_type = fields.get(IN_SIGHASH_TYPE)
        sighash_type = SIGHASH_DEFAULT if raw_type is None else int.from_bytes(raw_type, "little")
        if sighash_type not in HASH_TYPES:
            raise PsbtError(f"input {index}: sighash type 0x{sighash_type:x} is no BIP-341 type")
        return TaprootInput(
            internal_key=fields.get(IN_TAP_INTERNAL_KEY),
            merkle_root=fields.get(IN_TAP_MERKLE_ROOT),
            derivations={
                key: _tap_derivation(value)
                for key, value in fields.of_type(IN_TAP_BIP32_DERIVATION)
            },
            sighash_type=sighash_type,
            key_signature=fields.get(IN_TAP_KEY_SIG),
            finalized=fields.get(IN_FINAL_SCRIPTSIG) is not None
            or fields.get(IN_FINAL_SCRIPTWITNESS) is not None,
        )

    def key_path_sighash(self, index: int) -> bytes:
        """The BIP-341 key-path sighash of input ``index`` (no annex: PSBTs carry none).

        The per-transaction hashes are computed on the first call and reused
        by every later one (and by the PSBT ``with_key_signature`` returns).

        Raises:
            UnsupportedPsbtError / PsbtError: a spent output is unknown or
                malformed, or the sighash type is undefined or has no output to
                commit to (SIGHASH_SINGLE).
        """
        info = self.taproot_input(index)
        spent = self._spent
        try:
            return key_path_sighash(
                self.tx, spent, index, info.sighash_type, precomputed=self._sighash_precomputed
            )
        except InputError as e:
            raise PsbtError(f"input {index}: {e}") from e

    def with_key_signature(self, index: int, signature: bytes) -> Psbt:
        """This PSBT with ``PSBT_IN_TAP_KEY_SIG`` of input ``index`` set.

        Arguments:
            signature: 64 bytes for SIGHASH_DEFAULT, else 64 bytes plus the type byte.
        """
        _check_schnorr_signature(signature, f"input {index} key signature")
        inputs = list(self.inputs)
        inputs[index] = inputs[index].with_value(IN_TAP_KEY_SIG, signature)
        signed = replace(self, inputs=tuple(inputs))
        # A key signature changes no spent output and no sighash: keep what was computed.
        for name in ("_spent", "_sighash_precomputed"):
            if name in self.__dict__:
                signed.__dict__[name] = self.__dict__[name]
        return signed

    def finalized(self) -> Psbt:
        """Each input with a key signature finalised (BIP-174 "Input Finalizer").

        The key signature becomes the final script witness; the input's other
        known fields go, its UTXOs and unknown pairs stay.
        """
        inputs = list(self.inputs)
        for i, fields in enumerate(inputs):
            signature = fields.get(IN_TAP_KEY_SIG)
            if signature is None or self.taproot_input(i).finalized:
                continue
            witness = compact_size(1) + compact_size(len(signature)) + signature
            kept = tuple(
                (k, v)
                for k, v in fields.pairs
                if _key_type(k, "input")[0] in _KEPT_ON_FINALIZE
                or _key_type(k, "input")[0] not in _KNOWN_INPUT_TYPES
            )
            inputs[i] = replace(fields, pairs=kept).with_value(IN_FINAL_SCRIPTWITNESS, witness)
        return replace(self, inputs=tuple(inputs))

    def extract(self) -> Transaction:
        """The signed transaction, once every input is final (BIP-174 "Transaction Extractor").

        Raises:
            PsbtError: an input is not finalised.
        """
        txins = []
        for i, (txin, fields) in enumerate(zip(self.tx.inputs, self.inputs, strict=True)):
            script_sig = fields.get(IN_FINAL_SCRIPTSIG)
            witness = fields.get(IN_FINAL_SCRIPTWITNESS)
            if script_sig is None and witness is None:
                raise PsbtError(f"input {i} is not finalised")
            txins.append(
                TxIn(
                    txin.prevout, script_sig or b"", txin.sequence,
                    _witness_items(witness, i) if witness is not None else (),
                )
            )  # fmt: skip
        return replace(self.tx, inputs=tuple(txins))


def _witness_items(data: bytes, index: int) -> tuple[bytes, ...]:
    reader = _Reader(data)
    items = tuple(
        reader.take(reader.compact("witness item"), "witness item")
        for _ in range(reader.compact("witness"))
    )
    if reader.remaining:
        raise PsbtError(f"input {index}: trailing bytes after the final script witness")
    return items


def parse_psbt(data: bytes | str) -> Psbt:
    """Parse and check a version-0 PSBT, binary or Base64.

    Arguments:
        data: the PSBT's bytes, or its Base64 text (at most 16 MiB, an
            unsigned transaction of at most 100,000 bytes: both checked
            before they are parsed).

    Returns:
        The PSBT; ``serialize()`` gives back the bytes.

    Raises:
        PsbtError: malformed (the fault and its map are named).
        UnsupportedPsbtError: PSBT version 2, or a version this code does not know.
    """
    if isinstance(data, str):
        try:
            data = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError) as e:
            raise PsbtError("not Base64") from e
    if len(data) > MAX_PSBT_BYTES:
        raise PsbtError(f"larger than {MAX_PSBT_BYTES} bytes")
    reader = _Reader(bytes(data))
    if reader.take(len(MAGIC), "magic") != MAGIC:
        raise PsbtError("no PSBT magic (psbt 0xff)")
    global_map = _read_map(reader, "global", "global map")
    version = global_map.get(GLOBAL_VERSION)
    if version is not None and int.from_bytes(version, "little") != 0:
        raise UnsupportedPsbtError(f"PSBT version {int.from_bytes(version, 'little')}")
    raw_tx = global_map.get(GLOBAL_UNSIGNED_TX)
    if raw_tx is None:
        raise PsbtError("global map: no unsigned transaction")
    if len(raw_tx) > MAX_UNSIGNED_TX_BYTES:
        raise PsbtError(
            f"global map: the unsigned transaction is larger than {MAX_UNSIGNED_TX_BYTES} bytes"
        )
    try:
        tx = Transaction.parse(raw_tx, allow_witness=False)
    except InputError as e:
        raise PsbtError(f"global map: the unsigned transaction is malformed ({e})") from e
    if any(txin.script_sig for txin in tx.inputs):
        raise PsbtError("global map: the unsigned transaction has a scriptSig")
    inputs = tuple(_read_map(reader, "input", f"input {i}") for i in range(len(tx.inputs)))
    outputs = tuple(_read_map(reader, "output", f"output {i}") for i in range(len(tx.outputs)))
    if reader.remaining:
        raise PsbtError("trailing bytes after the last output map")
    for i, (txin, fields) in enumerate(zip(tx.inputs, inputs, strict=True)):
        full = fields.get(IN_NON_WITNESS_UTXO)
        if full is not None:
            try:
                previous = Transaction.parse(full)
            except InputError as e:
                raise PsbtError(f"input {i}: the non-witness UTXO is malformed ({e})") from e
            if previous.txid() != txin.prevout.txid:
                raise PsbtError(f"input {i}: the non-witness UTXO is not the spent transaction")
    return Psbt(global_map, tx, inputs, outputs)
