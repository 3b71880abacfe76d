"""BIP-341 key-path signature hashes and witnesses (what a Taproot key-path spend signs).

The signature message follows BIP-341 "Common signature message" exactly, for
a key-path spend (``ext_flag = 0``, no BIP-342 extension)::

    SigMsg(hash_type, 0) =
        hash_type (1) || nVersion (4) || nLockTime (4)
        || [unless ANYONECANPAY: sha_prevouts || sha_amounts || sha_scriptpubkeys || sha_sequences]
        || [unless NONE or SINGLE: sha_outputs]
        || spend_type (1) = ext_flag * 2 + annex_present
        || [ANYONECANPAY: outpoint (36) || amount (8) || scriptPubKey (compact-prefixed)
                          || nSequence (4)
            else: input_index (4)]
        || [annex present: sha_annex = SHA256(compact_size(len(annex)) || annex)]
        || [SINGLE: sha_single_output = SHA256(the output at input_index)]
    sighash = hash_TapSighash(0x00 || SigMsg)      (0x00: the sighash epoch)

where each ``sha_*`` is a single SHA256 over the concatenated serialisations.
Failure cases are the BIP's: an undefined ``hash_type``, and SIGHASH_SINGLE
for an input without a matching output. A key-path witness is the 64-byte
signature for SIGHASH_DEFAULT, else the signature followed by the hash type
byte (BIP-341 "Taproot key path spending signature validation"), and the
annex, when present, is the witness's last element and starts with 0x50.

The BIP-341 wallet vectors' ``sigMsg`` include the epoch byte: they are
``0x00 || key_path_sigmsg(...)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from shardkeep.chains.bitcoin_tx import Transaction, TxOut, compact_size
from tss.curve import tagged_hash
from tss.errors import InputError
from tss.tags import BIP341_TAG_TAPSIGHASH

__all__ = [
    # Functions
    "key_path_sigmsg",
    "key_path_sighash",
    "key_path_witness",
    "annex_of",
    "p2tr_script",
    "precompute",
    # Types
    "SighashPrecomputed",
    # Constants
    "SIGHASH_DEFAULT",
    "SIGHASH_ALL",
    "SIGHASH_NONE",
    "SIGHASH_SINGLE",
    "SIGHASH_ANYONECANPAY",
    "HASH_TYPES",
    "ANNEX_TAG",
]

SIGHASH_DEFAULT: Final = 0x00
SIGHASH_ALL: Final = 0x01
SIGHASH_NONE: Final = 0x02
SIGHASH_SINGLE: Final = 0x03
SIGHASH_ANYONECANPAY: Final = 0x80
HASH_TYPES: Final = frozenset({0x00, 0x01, 0x02, 0x03, 0x81, 0x82, 0x83})
"""The hash types BIP-341 defines; any other makes the signature invalid."""
ANNEX_TAG: Final = 0x50
"""First byte of an annex (BIP-341 "Script validation rules")."""

_SIGHASH_EPOCH: Final = b"\x00"


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class SighashPrecomputed:
    """The per-transaction hashes of BIP-341's SigMsg, shared by every input.

    Attributes:
        sha_prevouts: SHA256 of every input's outpoint.
        sha_amounts: SHA256 of every spent output's 8-byte amount.
        sha_scriptpubkeys: SHA256 of every spent output's compact-prefixed scriptPubKey.
        sha_sequences: SHA256 of every input's nSequence.
        sha_outputs: SHA256 of every output (CTxOut serialisation).
    """

    sha_prevouts: bytes
    sha_amounts: bytes
    sha_scriptpubkeys: bytes
    sha_sequences: bytes
    sha_outputs: bytes


def precompute(tx: Transaction, spent_outputs: Sequence[TxOut]) -> SighashPrecomputed:
    """The BIP-341 per-transaction hashes (its "precomputed" values).

    Arguments:
        tx: the spending transaction.
        spent_outputs: the output each input spends, in input order.

    Raises:
        InputError: not exactly one spent output per input.
    """
    if len(spent_outputs) != len(tx.inputs):
        raise InputError("need exactly one spent output per input")
    return SighashPrecomputed(
        sha_prevouts=_sha256(b"".join(i.prevout.serialize() for i in tx.inputs)),
        sha_amounts=_sha256(b"".join(o.value.to_bytes(8, "little") for o in spent_outputs)),
        sha_scriptpubkeys=_sha256(
            b"".join(compact_size(len(o.script_pubkey)) + o.script_pubkey for o in spent_outputs)
        ),
        sha_sequences=_sha256(b"".join(i.sequence.to_bytes(4, "little") for i in tx.inputs)),
        sha_outputs=_sha256(b"".join(o.serialize() for o in tx.outputs)),
    )


def key_path_sigmsg(
    tx: Transaction,
    spent_outputs: Sequence[TxOut],
    input_index: int,
    hash_type: int = SIGHASH_DEFAULT,
    *,
    annex: bytes | None = None,
    precomputed: SighashPrecomputed | None = None,
) -> bytes:
    """BIP-341's ``SigMsg(hash_type, ext_flag=0)`` for a key-path spend of one input.

    Arguments:
        tx: the spending transaction (its witnesses are ignored).
        spent_outputs: the output each input spends, in input order (amounts
            and scriptPubKeys of every input are committed to).
        input_index: the input being signed.
        hash_type: one of ``HASH_TYPES``.
        annex: the input's annex (starting with 0x50), or None.
        precomputed: ``precompute(tx, spent_outputs)``, to reuse across inputs.

    Returns:
        SigMsg, without the 0x00 epoch byte.

    Raises:
        InputError: an undefined hash type, an input index out of range, an
            annex not starting with 0x50, SIGHASH_SINGLE without a matching
            output, or not one spent output per input.
    """
    if hash_type not in HASH_TYPES:
        raise InputError(f"undefined hash type 0x{hash_type:02x}")
    if not 0 <= input_index < len(tx.inputs):
        raise InputError("input index out of range")
    if annex is not None and (not annex or annex[0] != ANNEX_TAG):
        raise InputError("an annex starts with 0x50")
    pre = precomputed if precomputed is not None else precompute(tx, spent_outputs)
    if len(spent_outputs) != len(tx.inputs):
        raise InputError("need exactly one spent output per input")
    # SIGHASH_DEFAULT commits to the outputs as SIGHASH_ALL does.
    output_type = SIGHASH_ALL if hash_type == SIGHASH_DEFAULT else hash_type & 0x03
    anyone_can_pay = bool(hash_type & SIGHASH_ANYONECANPAY)
    if output_type == SIGHASH_SINGLE and input_index >= len(tx.outputs):
        raise InputError("SIGHASH_SINGLE needs an output at the input's index")

    msg = [
        bytes([hash_type]),
        tx.version.to_bytes(4, "little", signed=True),
        tx.locktime.to_bytes(4, "little"),
    ]
    if not anyone_can_pay:
        msg += [pre.sha_prevouts, pre.sha_amounts, pre.sha_scriptpubkeys, pre.sha_sequences]
    if output_type not in (SIGHASH_NONE, SIGHASH_SINGLE):
        msg.append(pre.sha_outputs)
    ext_flag = 0  # key path: no BIP-342 extension
    msg.append(bytes([ext_flag * 2 + (annex is not None)]))
    if anyone_can_pay:
        txin, spent = tx.inputs[input_index], spent_outputs[input_index]
        msg += [
            txin.prevout.serialize(),
            spent.value.to_bytes(8, "little"),
            compact_size(len(spent.script_pubkey)) + spent.script_pubkey,
            txin.sequence.to_bytes(4, "little"),
        ]
    else:
        msg.append(input_index.to_bytes(4, "little"))
    if annex is not None:
        msg.append(_sha256(compact_size(len(annex)) + annex))
    if output_type == SIGHASH_SINGLE:
        msg.append(_sha256(tx.outputs[input_index].serialize()))
    return b"".join(msg)


def key_path_sighash(
    tx: Transaction,
    spent_outputs: Sequence[TxOut],
    input_index: int,
    hash_type: int = SIGHASH_DEFAULT,
    *,
    annex: bytes | None = None,
    precomputed: SighashPrecomputed | None = None,
) -> bytes:
    """The 32-byte BIP-341 key-path sighash: ``hash_TapSighash(0x00 || SigMsg)``.

    The BIP-340 signature of a key-path spend signs exactly these 32 bytes.
    Arguments and errors as in :func:`key_path_sigmsg`.
    """
    sigmsg = key_path_sigmsg(
        tx, spent_outputs, input_index, hash_type, annex=annex, precomputed=precomputed
    )
    return tagged_hash(BIP341_TAG_TAPSIGHASH, _SIGHASH_EPOCH + sigmsg)


def key_path_witness(
    signature: bytes, hash_type: int = SIGHASH_DEFAULT, annex: bytes | None = None
) -> tuple[bytes, ...]:
    """The witness stack of a key-path spend.

    Arguments:
        signature: the 64-byte BIP-340 signature.
        hash_type: the hash type it signed; SIGHASH_DEFAULT adds no byte (BIP-341
            forbids an explicit 0x00).
        annex: the annex it committed to, or None.

    Returns:
        ``(sig,)``, ``(sig || hash_type,)``, plus the annex last when given.

    Raises:
        InputError: a signature not 64 bytes, an undefined hash type, a bad annex.
    """
    if len(signature) != 64:
        raise InputError("a BIP-340 signature is 64 bytes")
    if hash_type not in HASH_TYPES:
        raise InputError(f"undefined hash type 0x{hash_type:02x}")
    if annex is not None and (not annex or annex[0] != ANNEX_TAG):
        raise InputError("an annex starts with 0x50")
    sig = signature if hash_type == SIGHASH_DEFAULT else signature + bytes([hash_type])
    return (sig,) if annex is None else (sig, annex)


def annex_of(witness: Sequence[bytes]) -> bytes | None:
    """The annex of a witness stack: its last element, if there are two or more and it
    starts with 0x50 (BIP-341 "Script validation rules"), else None."""
    if len(witness) >= 2 and witness[-1][:1] == bytes([ANNEX_TAG]):
        return witness[-1]
    return None


def p2tr_script(output_key: bytes) -> bytes:
    """The scriptPubKey of a Taproot output: OP_1 OP_PUSHBYTES_32 <32-byte x-only key>.

    Raises:
        InputError: the key is not 32 bytes.
    """
    if len(output_key) != 32:
        raise InputError("a Taproot output key is 32 bytes")
    return b"\x51\x20" + output_key
