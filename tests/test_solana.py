"""Solana transactions from a threshold Ed25519 wallet, checked by ``solders``.

The message bytes ``client.chains.solana`` compiles are compared with solders' own
compiler (legacy ``Message`` and ``MessageV0``), the signatures made by a 2-of-3
FROST(Ed25519) keyring are verified by solders, and a SOL transfer is executed
on solders' in-process Solana VM (LiteSVM).
"""

from __future__ import annotations

import secrets

import pytest
from solders.hash import Hash
from solders.instruction import AccountMeta as SAccountMeta
from solders.instruction import Instruction as SInstruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from client.chains import solana
from tss import local
from tss.keyshare import KeyShare

TOKEN = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")


@pytest.fixture(scope="module")
def wallet() -> list[KeyShare]:
    return local.import_key("ed25519", secrets.token_bytes(32), threshold=2, parties=3)


def _signer(shares: list[KeyShare]):  # type: ignore[no-untyped-def]
    return lambda message: local.sign(shares, message)


def _spl(owner: bytes) -> tuple[solana.Instruction, SInstruction]:
    source, mint, dest = (secrets.token_bytes(32) for _ in range(3))
    ours = solana.spl_transfer_checked(source, mint, dest, owner, 1_500_000, 6)
    data = bytes([12]) + (1_500_000).to_bytes(8, "little") + bytes([6])
    metas = [
        SAccountMeta(Pubkey(source), False, True),
        SAccountMeta(Pubkey(mint), False, False),
        SAccountMeta(Pubkey(dest), False, True),
        SAccountMeta(Pubkey(owner), True, False),
    ]
    return ours, SInstruction(TOKEN, data, metas)


@pytest.mark.parametrize("kind", ["sol", "spl", "both"])
@pytest.mark.parametrize("version", ["legacy", 0])
def test_threshold_wallet_signs_transactions_solders_verifies(
    wallet: list[KeyShare], kind: str, version: str | int
) -> None:
    payer = wallet[0].public_key
    dest = secrets.token_bytes(32)
    blockhash = secrets.token_bytes(32)
    ours: list[solana.Instruction] = []
    theirs: list[SInstruction] = []
    if kind in ("sol", "both"):
        ours.append(solana.sol_transfer(payer, dest, 1_000_000))
        theirs.append(
            transfer(
                TransferParams(
                    from_pubkey=Pubkey(payer), to_pubkey=Pubkey(dest), lamports=1_000_000
                )
            )
        )
    if kind in ("spl", "both"):
        ix, six = _spl(payer)
        ours.append(ix)
        theirs.append(six)
    message = solana.compile_message(payer, ours, blockhash, version)  # type: ignore[arg-type]
    expected = (
        bytes(Message.new_with_blockhash(theirs, Pubkey(payer), Hash(blockhash)))
        if version == "legacy"
        else b"\x80" + bytes(MessageV0.try_compile(Pubkey(payer), theirs, [], Hash(blockhash)))
    )
    assert message == expected
    tx = solana.signed_transaction(message, payer, _signer(wallet[1:]))
    parsed = VersionedTransaction.from_bytes(tx)
    assert parsed.verify_with_results() == [True]
    assert str(parsed.message.account_keys[0]) == solana.address(payer)


def test_sol_transfer_executes_on_litesvm(wallet: list[KeyShare]) -> None:
    from solders.litesvm import LiteSVM

    svm = LiteSVM()
    payer = wallet[0].public_key
    dest = Keypair().pubkey()
    svm.airdrop(Pubkey(payer), 10_000_000_000)
    message = solana.compile_message(
        payer,
        [solana.sol_transfer(payer, bytes(dest), 1_234_567)],
        bytes(svm.latest_blockhash()),
        0,
    )
    tx = VersionedTransaction.from_bytes(
        solana.signed_transaction(message, payer, _signer(wallet[:2]))
    )
    result = svm.send_transaction(tx)
    assert svm.get_balance(dest) == 1_234_567, result


def test_base58_addresses_match_solders() -> None:
    for key in (bytes(32), b"\0\0" + secrets.token_bytes(30), secrets.token_bytes(32)):
        text = solana.address(key)
        assert text == str(Pubkey(key))
        assert solana.public_key_from_address(text) == key
    with pytest.raises(solana.SolanaError):
        solana.public_key_from_address("0OIl")  # not in the alphabet
    with pytest.raises(solana.SolanaError):
        solana.public_key_from_address("abc")  # not 32 bytes


def test_a_wrong_signature_or_signer_is_refused(wallet: list[KeyShare]) -> None:
    payer = wallet[0].public_key
    message = solana.compile_message(payer, [solana.sol_transfer(payer, bytes(32), 1)], bytes(32))
    with pytest.raises(solana.SolanaError, match="does not verify"):
        solana.signed_transaction(message, payer, lambda m: bytes(64))
    other = secrets.token_bytes(32)
    with pytest.raises(solana.SolanaError, match="fee payer"):
        solana.signed_transaction(message, other, _signer(wallet[:2]))
    with pytest.raises(solana.SolanaError):
        solana.sol_transfer(payer, other, -1)
