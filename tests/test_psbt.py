"""PSBTs (shardkeep.chains.psbt) against the BIP-174 and BIP-371 test vectors.

The vectors are read from the BIPs' text, vendored verbatim (tests/vectors/bips):
every invalid PSBT is refused with a ``PsbtError``, every valid one parses and
serialises back byte for byte, the BIP-174 extractor's transaction comes out of
its finalised PSBT, and BIP-371's key-path signature verifies under the output
key for the sighash this module computes.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from coincurve import PrivateKey

from shardkeep.chains import psbt as psbt_module
from shardkeep.chains.bip341 import SIGHASH_ALL, SIGHASH_DEFAULT, p2tr_script
from shardkeep.chains.bitcoin_tx import OutPoint, Transaction, TxIn, TxOut
from shardkeep.chains.psbt import (
    IN_SIGHASH_TYPE,
    IN_TAP_INTERNAL_KEY,
    IN_WITNESS_UTXO,
    MAGIC,
    MAX_UNSIGNED_TX_BYTES,
    Psbt,
    PsbtError,
    PsbtMap,
    UnsupportedPsbtError,
    parse_psbt,
)
from tests.vectors import load_json, load_text
from tss.curve import N, schnorr_sign, schnorr_verify
from tss.taproot import taproot_output_key

BIP174 = load_text("bips/bip-0174.mediawiki").split("==Test Vectors==", 1)[1]
BIP371 = load_text("bips/bip-0371.mediawiki").split("==Test Vectors==", 1)[1]
CASE = re.compile(r"\* Case: (.*?)\n.*?Base64 String: <pre>([A-Za-z0-9+/=\s]+?)</pre>", re.S)


def cases(text: str) -> list[tuple[str, bytes]]:
    return [(name, base64.b64decode(b64)) for name, b64 in CASE.findall(text)]


def between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


INVALID = cases(between(BIP174, "are invalid PSBTs:", "are valid PSBTs:")) + cases(
    between(BIP371, "are invalid PSBTs:", "are valid PSBTs:")
)
VALID = cases(between(BIP174, "are valid PSBTs:", "The private keys")) + cases(
    between(BIP371, "are valid PSBTs:", "==Rationale==")
)
# The role examples (creator, updater, signer, combiner, finalizer): PSBTs without "Case:".
ROLES = [
    base64.b64decode(b64)
    for b64 in re.findall(
        r"Base64 String: <pre>([A-Za-z0-9+/=\s]+?)</pre>",
        between(BIP174, "The private keys", "==Rationale=="),
    )
]


def ids(found: list[tuple[str, bytes]]) -> list[str]:
    return [
        re.sub(r"\W+", "-", name.replace("<tt>", "").replace("</tt>", ""))[:70] for name, _ in found
    ]


def test_the_bip_lists_were_read() -> None:
    assert len(INVALID) == 20 + 11
    assert len(VALID) == 14 + 6
    assert len(ROLES) == 10


@pytest.mark.parametrize(("name", "data"), INVALID, ids=ids(INVALID))
def test_invalid_psbts_are_refused(name: str, data: bytes) -> None:
    with pytest.raises(PsbtError):
        parse_psbt(data)


@pytest.mark.parametrize(("name", "data"), VALID, ids=ids(VALID))
def test_valid_psbts_parse_and_serialise_back(name: str, data: bytes) -> None:
    psbt = parse_psbt(data)
    assert psbt.serialize() == data
    assert parse_psbt(psbt.to_base64()).serialize() == data


def test_role_examples_parse_and_the_extractor_gives_the_bips_transaction() -> None:
    for data in ROLES:
        assert parse_psbt(data).serialize() == data
    extracted = re.search(
        r"transaction extractor must create this Bitcoin transaction:\s*\* Bytes in Hex: <pre>"
        r"([0-9a-f]+)</pre>",
        BIP174,
    )
    assert extracted is not None
    finalized = ROLES[6]  # creator, 2 updaters, 2 signers, combiner, then the finalizer
    assert parse_psbt(finalized).extract().serialize().hex() == extracted.group(1)


def test_the_bip371_key_path_signature_verifies_for_our_sighash() -> None:
    ((_, data),) = [
        case for case in VALID if "internal key, its derivation path, and signature" in case[0]
    ]
    psbt = parse_psbt(data)
    info = psbt.taproot_input(0)
    assert info.internal_key is not None and info.key_signature is not None
    assert info.merkle_root is None and info.sighash_type == SIGHASH_DEFAULT
    # The spent output is the internal key's key-path-only output.
    output_key = taproot_output_key(info.internal_key).output_key
    assert psbt.spent_output(0).script_pubkey == p2tr_script(output_key)
    (derivation,) = info.derivations.values()
    assert derivation.leaf_hashes == () and derivation.path[-1] == 0
    assert schnorr_verify(psbt.key_path_sighash(0), output_key, info.key_signature)


def one_input_psbt(fields: tuple[tuple[bytes, bytes], ...], version: bytes | None = None) -> bytes:
    tx = Transaction(
        2, (TxIn(OutPoint(b"\x11" * 32, 0)),), (TxOut(1000, b"\x51\x20" + b"\x22" * 32),)
    )
    global_pairs: tuple[tuple[bytes, bytes], ...] = ((b"\x00", tx.serialize()),)
    if version is not None:
        global_pairs += ((b"\xfb", version),)
    psbt = Psbt(
        PsbtMap("global", global_pairs), tx, (PsbtMap("input", fields),), (PsbtMap("output", ()),)
    )
    return psbt.serialize()


def test_psbt_version_2_and_inputs_without_a_utxo_are_unsupported() -> None:
    with pytest.raises(UnsupportedPsbtError, match="version 2"):
        parse_psbt(one_input_psbt((), version=(2).to_bytes(4, "little")))
    psbt = parse_psbt(one_input_psbt(()))
    with pytest.raises(UnsupportedPsbtError, match="input 0: no witness or non-witness UTXO"):
        psbt.key_path_sighash(0)


@pytest.mark.parametrize(
    ("fields", "fault"),
    [
        (((b"\x03", (0x04).to_bytes(4, "little")),), "sighash type 0x4"),
        (((b"\x01", b"\x00" * 3),), "witness UTXO"),
    ],
    ids=["undefined-sighash-type", "short-witness-utxo"],
)
def test_inputs_a_signer_cannot_use_are_named(
    fields: tuple[tuple[bytes, bytes], ...], fault: str
) -> None:
    psbt = parse_psbt(one_input_psbt(fields))
    with pytest.raises(PsbtError, match=f"input 0: .*{fault}|input 0: {fault}"):
        psbt.key_path_sighash(0)


def test_a_key_signature_is_added_finalised_and_extracted() -> None:
    secret = bytes(range(1, 33))
    internal = PrivateKey(secret).public_key.format()[1:]
    output = taproot_output_key(internal)
    spent = TxOut(50_000, p2tr_script(output.output_key))
    witness_utxo = spent.serialize()
    data = one_input_psbt(
        ((b"\x01", witness_utxo), (b"\x17", internal), (b"\x03", SIGHASH_ALL.to_bytes(4, "little")))
    )
    psbt = parse_psbt(data)
    assert psbt.fee() == 50_000 - 1000
    sighash = psbt.key_path_sighash(0)
    # The BIP-341 tweaked secret key signs for the output key.
    d = int.from_bytes(secret, "big")
    if PrivateKey(secret).public_key.format()[0] == 3:
        d = N - d
    tweaked = ((d + int.from_bytes(output.tweak, "big")) % N).to_bytes(32, "big")
    signature = schnorr_sign(sighash, tweaked, b"\x00" * 32) + bytes([SIGHASH_ALL])
    signed = psbt.with_key_signature(0, signature)
    assert parse_psbt(signed.serialize()).taproot_input(0).key_signature == signature
    final = parse_psbt(signed.finalized().serialize())
    # The finaliser keeps the UTXO and drops the signer's fields.
    assert final.inputs[0].get(IN_WITNESS_UTXO) == witness_utxo
    assert final.inputs[0].get(IN_TAP_INTERNAL_KEY) is None
    assert final.inputs[0].get(IN_SIGHASH_TYPE) is None
    tx = final.extract()
    assert tx.inputs[0].witness == (signature,)
    assert schnorr_verify(sighash, output.output_key, signature[:64])


def test_not_a_psbt_is_refused() -> None:
    for data in (b"", b"psbt", b"psbu\xff\x00", "not base64!"):
        with pytest.raises(PsbtError):
            parse_psbt(data)
    assert MAGIC == b"psbt\xff"


def psbt_of(tx: Transaction, spent: list[TxOut], hash_types: dict[int, int]) -> Psbt:
    """A PSBT of ``tx`` with witness UTXOs, and ``PSBT_IN_SIGHASH_TYPE`` where given."""
    inputs = []
    for index, output in enumerate(spent):
        fields = [(b"\x01", output.serialize())]
        if index in hash_types:
            fields.append((b"\x03", hash_types[index].to_bytes(4, "little")))
        inputs.append(PsbtMap("input", tuple(fields)))
    outputs = tuple(PsbtMap("output", ()) for _ in tx.outputs)
    global_map = PsbtMap("global", ((b"\x00", tx.serialize()),))
    return parse_psbt(Psbt(global_map, tx, tuple(inputs), outputs).serialize())


def test_every_input_of_the_bip341_vector_transaction_has_the_vector_sighash() -> None:
    # BIP-341 wallet vectors, keyPathSpending: the same answers through a PSBT,
    # whose per-transaction hashes are computed once and shared by its inputs.
    (vector,) = load_json("bip-0341-wallet-test-vectors.json")["keyPathSpending"]
    tx = Transaction.parse(bytes.fromhex(vector["given"]["rawUnsignedTx"]))
    spent = [
        TxOut(u["amountSats"], bytes.fromhex(u["scriptPubKey"]))
        for u in vector["given"]["utxosSpent"]
    ]
    cases: list[dict[str, Any]] = vector["inputSpending"]
    psbt = psbt_of(tx, spent, {c["given"]["txinIndex"]: c["given"]["hashType"] for c in cases})
    for case in cases:
        index = case["given"]["txinIndex"]
        assert psbt.key_path_sighash(index).hex() == case["intermediary"]["sigHash"]
        # The vector's signature added to one input changes no sighash.
        psbt = psbt.with_key_signature(index, bytes.fromhex(case["expected"]["witness"][0]))
    for case in cases:
        assert (
            psbt.key_path_sighash(case["given"]["txinIndex"]).hex()
            == (case["intermediary"]["sigHash"])
        )


def test_signing_every_input_reads_each_utxo_and_hashes_the_transaction_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Signing n inputs is O(n): BIP-341's sha_prevouts, sha_amounts,
    # sha_scriptpubkeys, sha_sequences and sha_outputs are per transaction.
    calls = {"precompute": 0, "spent_output": 0}
    precompute, spent_output = psbt_module.precompute, Psbt.spent_output

    def counted_precompute(*args: Any) -> Any:
        calls["precompute"] += 1
        return precompute(*args)

    def counted_spent_output(self: Psbt, index: int) -> TxOut:
        calls["spent_output"] += 1
        return spent_output(self, index)

    monkeypatch.setattr(psbt_module, "precompute", counted_precompute)
    monkeypatch.setattr(Psbt, "spent_output", counted_spent_output)
    n = 30
    script = b"\x51\x20" + b"\x22" * 32
    tx = Transaction(
        2, tuple(TxIn(OutPoint(bytes([i + 1]) * 32, 0)) for i in range(n)), (TxOut(1, script),)
    )
    psbt = psbt_of(tx, [TxOut(1000, script)] * n, {})
    sighashes = set()
    for index in range(n):
        sighashes.add(psbt.key_path_sighash(index))
        psbt = psbt.with_key_signature(index, bytes(64))
    assert len(sighashes) == n
    assert psbt.fee() == 1000 * n - 1
    assert calls == {"precompute": 1, "spent_output": n}


def test_an_unsigned_transaction_above_the_standard_size_is_refused_before_it_is_parsed() -> None:
    n = MAX_UNSIGNED_TX_BYTES // 41 + 1  # an input is 41 bytes at least
    script = b"\x51\x20" + b"\x22" * 32
    tx = Transaction(
        2, tuple(TxIn(OutPoint(i.to_bytes(32, "big"), 0)) for i in range(n)), (TxOut(1, script),)
    )
    assert len(tx.serialize()) > MAX_UNSIGNED_TX_BYTES
    inputs = tuple(PsbtMap("input", ()) for _ in range(n))
    data = Psbt(
        PsbtMap("global", ((b"\x00", tx.serialize()),)), tx, inputs, (PsbtMap("output", ()),)
    )
    with pytest.raises(PsbtError, match="unsigned transaction is larger than 100000 bytes"):
        parse_psbt(data.serialize())
