"""``shardkeep demo`` (``make run``): the whole system on embedded defaults, as a new user sees it.

Starts devkms, the relay, the enclave and the host as real processes (SQLite,
in-memory relay, simulated NSM and KMS), verifies the enclave's attestation,
creates a 2-of-2 ECDSA, a 2-of-2 BIP-340 and a 2-of-2 Ed25519 (Solana) wallet
with the server share, signs with each (a Solana SOL transfer for the last)
and verifies the signatures independently, and reports where the data lives;
an ECDSA wallet with a policy set shows the enclave signing a transfer the
owner's passkey approved and refusing one to an address the policy does not
allow (``client.cli.demo_policy``);
then backs the ECDSA wallet up to 2-of-3 by reshare, refreshes, signs with the
new set and exports the key to the device. In between, a phone that holds no
coordinator key creates a wallet, signs and refreshes through a coordinator
service (``coordinator.demo``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TextIO, TypeVar

from coincurve import PrivateKey, PublicKey, PublicKeyXOnly
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from client.chains import solana
from client.cli.demo_policy import policy_story
from client.cli.devstack import running_stack
from client.cli.workdir import ForeignDirectoryError, prepare_marked_directory
from client.errors import WalletError
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet, WalletClient
from shardkeep import eventloop
from tss.signing import RecoverableSignature, SigningOptions
from tss.taproot import taproot_output_key

T = TypeVar("T")
DIGEST = bytes.fromhex("5bd3bd4c6bd5ff8d1e6e1b5e9a3c7a0f8e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b")


class _Story:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def step(self, title: str, work: Awaitable[T]) -> T:
        start = time.perf_counter()
        print(f"- {title} ...", end="", file=self.out, flush=True)
        result = await work
        print(f" done in {(time.perf_counter() - start) * 1000:.0f} ms", file=self.out, flush=True)
        return result


# Left in every directory the demo makes: the only mark that lets a later run delete it.
MARKER = ".shardkeep-demo"


class DemoDirectoryError(ForeignDirectoryError):
    """The demo's directory holds files the demo did not make; it is left untouched."""


def prepare_directory(directory: Path) -> None:
    """Make ``directory`` an empty directory marked as the demo's (``client.cli.workdir``).

    Raises:
        DemoDirectoryError: ``directory`` is a file, or a non-empty directory
            without the marker.
    """
    prepare_marked_directory(directory, MARKER, "shardkeep demo", DemoDirectoryError)


async def _demo(directory: Path, out: TextIO) -> int:
    story = _Story(out)
    story.say(f"shardkeep demo: starting devkms, relay, enclave and host under {directory}")
    async with running_stack(directory) as stack:
        story.say(f"  relay {stack.relay_address}\n  enclave {stack.enclave_address}")
        story.say(f"  host {stack.host_address} (store {stack.store_url})")
        async with WalletClient(
            stack.host_address,
            stack.relay_address,
            stack.coordinator_key,
            root_certificate=stack.root_certificate,
        ) as wallets:
            server = await story.step("verify the enclave's attestation document", wallets.attest())
            doc = server.document
            story.say(f"  module {doc.module_id}, PCR0 {doc.pcrs[0].hex()[:24]}...")
            story.say(f"  server party {server.party.party_id} (static key bound in the document)")
            device = PartyIdentity.generate()
            story.say(f"  this device is party {device.party_id}")

            ecdsa = await story.step(
                "create a 2-of-2 ECDSA wallet with the server share (default policy: the"
                " owner approves everything, raw digests too)",
                wallets.create_wallet(
                    "ecdsa-secp256k1", [device], threshold=2, allow_raw_digest=True
                ),
            )
            story.say(f"  wallet {ecdsa.wallet_id}: public key {ecdsa.public_key.hex()}")
            result = await story.step(
                "sign a digest with the device and the server share",
                wallets.sign(ecdsa, DIGEST, {0: device}),
            )
            _check_ecdsa(ecdsa, result)
            story.say("  signature verified by libsecp256k1; the recovery id recovers the key")
            await policy_story(wallets, device, story.step, story.say)

            schnorr = await story.step(
                "create a 2-of-2 BIP-340 (Taproot) wallet (raw digests allowed)",
                wallets.create_wallet("bip340", [device], threshold=2, allow_raw_digest=True),
            )
            output = taproot_output_key(schnorr.public_key[1:])
            story.say(f"  wallet {schnorr.wallet_id}: taproot output key {output.output_key.hex()}")
            signature = await story.step(
                "sign a key-path spend (BIP-341 tweak)",
                wallets.sign(schnorr, DIGEST, {0: device}, options=SigningOptions(taproot=True)),
            )
            if not isinstance(signature, bytes) or not PublicKeyXOnly(output.output_key).verify(
                signature, DIGEST
            ):
                raise RuntimeError("the BIP-340 signature does not verify")
            story.say("  BIP-340 signature verified under the taproot output key")

            sol = await story.step(
                "create a 2-of-2 Ed25519 (Solana) wallet (ChillDKG over edwards25519)",
                wallets.create_wallet("ed25519", [device], threshold=2),
            )
            story.say(f"  wallet {sol.wallet_id}: Solana address {solana.address(sol.public_key)}")
            await story.step(
                "sign a Solana SOL transfer (v0 message; Ed25519 signs the message itself)",
                _solana_transfer(wallets, sol, device),
            )
            story.say("  transaction signature verified by libsodium under the wallet's key")
            try:
                await story.step(
                    "try a raw message on it: its default policy names no raw activity",
                    wallets.sign(sol, DIGEST, {0: device}),
                )
            except WalletError as e:
                story.say(f"\n  refused by the enclave ({e.reason}): {e}")
            else:
                raise RuntimeError("the enclave signed a raw message its policy does not allow")

            # Dev tooling only: the device SDK itself never imports the coordinator.
            from coordinator.demo import run_device_story

            await run_device_story(stack, story.step, story.say)

            backup = PartyIdentity.generate()
            trio = await story.step(
                "back up: reshare the ECDSA wallet to 2-of-3 with a backup device",
                wallets.reshare(ecdsa, {0: device}, [device, backup], threshold=2),
            )
            story.say(
                f"  same public key: {trio.public_key == ecdsa.public_key}; epoch {trio.epoch}"
            )
            refreshed = await story.step(
                "refresh: new shares for all three parties",
                wallets.refresh(trio, {0: device, 1: backup}),
            )
            result = await story.step(
                "sign with the backup device and the server share",
                wallets.sign(refreshed, DIGEST, {1: backup}),
            )
            _check_ecdsa(refreshed, result)
            result = await story.step(
                "sign with the two devices alone (server offline)",
                wallets.sign(refreshed, DIGEST, {0: device, 1: backup}, with_server=False),
            )
            _check_ecdsa(refreshed, result)
            story.say("  both signatures verified")
            # The old epoch stays signable until every party holds the new one, so a
            # lost message cannot strand a device; the acknowledgments retire it.
            pruned = await story.step(
                "both devices acknowledge the new epoch; the host retires the old one",
                wallets.acknowledge_epoch(refreshed, {0: device, 1: backup}),
            )
            story.say(f"  epochs pruned: {pruned}")
            try:
                await wallets.sign(trio, DIGEST, {1: backup})
            except WalletError as e:
                story.say(f"  a share of the old epoch is refused: {e}")
            else:
                raise RuntimeError("a share of the old epoch still signs after the refresh")
            key = await story.step(
                "export the private key to this device only (owner-signed)",
                wallets.export(refreshed, {1: backup}, device),
            )
            if PrivateKey(key).public_key.format() != ecdsa.public_key:
                raise RuntimeError("the exported key does not match the wallet")
            story.say("  the exported key matches the wallet's public key")

        story.say(f"data: sealed server shares in {stack.store_url} (ciphertext only)")
        story.say(f"logs: {directory}/*.log; keys and PKI of this dev deployment: {directory}")
    story.say("demo finished: all checks passed")
    return 0


async def _solana_transfer(wallets: WalletClient, wallet: Wallet, device: PartyIdentity) -> None:
    """Sign a SOL transfer to a demo address and check the signature with libsodium."""
    payer = wallet.public_key
    recipient = solana.public_key_from_address("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")
    message = solana.compile_message(
        payer, [solana.sol_transfer(payer, recipient, 1_000_000)], bytes(range(32)), version=0
    )
    raw = await solana.sign_transaction(wallets, wallet, message, {0: device})
    try:  # wire format: one signature (compact-u16 count 1), then the message
        VerifyKey(payer).verify(message, raw[1:65])
    except BadSignatureError as e:
        raise RuntimeError("the Solana transaction signature does not verify") from e


def _check_ecdsa(wallet: Wallet, result: bytes | RecoverableSignature) -> None:
    if not isinstance(result, RecoverableSignature):
        raise RuntimeError("an ECDSA wallet returned no recovery id")
    recovered = PublicKey.from_signature_and_message(result.to_bytes65(), DIGEST, hasher=None)
    if recovered.format() != wallet.public_key:
        raise RuntimeError("the ECDSA signature does not recover the wallet's key")


def run_demo(directory: Path, out: TextIO) -> int:
    """Run the demo with its state under ``directory``; return the exit status.

    Raises:
        DemoDirectoryError: ``directory`` holds files the demo did not make.
    """
    prepare_directory(directory)
    return eventloop.run(_demo(directory, out))
