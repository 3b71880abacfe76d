"""The demo's device story: a phone with no coordinator key creates a wallet, signs, refreshes.

``shardkeep demo`` (``make run``) runs it on its development stack: the
coordinator service starts in process on a Unix socket, a device enrolls
with a one-time code, asks for a BIP-340 wallet, a signature and a refresh of
its share (then acknowledges the new epoch and signs with it), and checks the
enclave's attestation itself before joining each room.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.cli.devstack import DevStack
from client.sdk.device import Device
from client.sdk.party import PartyIdentity
from coordinator.coordinator import Coordinator
from coordinator.service import create_server
from tss.curve import schnorr_verify

__all__ = ["run_device_story"]

T = TypeVar("T")
Step = Callable[[str, Awaitable[Any]], Awaitable[Any]]


async def run_device_story(stack: DevStack, step: Step, say: Callable[[str], None]) -> None:
    """Start a coordinator on ``stack`` and run a device against it.

    Raises:
        RuntimeError: the device's signature does not verify.
    """
    code = secrets.token_urlsafe(12)
    coordinator = Coordinator(
        stack.host_address,
        stack.relay_address,
        stack.coordinator_key,
        transport=stack.transport,
        root_certificate=stack.root_certificate,
        enrollment_codes=[code],
    )
    address = f"unix:{stack.directory / 'coordinator.sock'}"
    server, _ = await create_server(address, coordinator)
    await server.start()
    say(f"  coordinator {address}: holds the coordinator key; the phone does not")
    try:
        async with Device(
            address,
            stack.relay_address,
            identity=PartyIdentity.generate(),
            device_key=Ed25519PrivateKey.generate(),
            owner_key=Ed25519PrivateKey.generate(),
            root_certificate=stack.root_certificate,
        ) as phone:
            await step("the phone enrolls with a one-time code", phone.enroll(code))
            wallet = await step(
                "the phone asks the coordinator for a BIP-340 wallet (keeps its share; its"
                " default policy: the phone's owner key approves, raw digests too)",
                phone.create_wallet("bip340", allow_raw_digest=True),
            )
            say(f"  wallet {wallet.wallet_id}: public key {wallet.public_key.hex()}")
            digest = bytes(32)
            signature = await step(
                "the phone signs through the coordinator", phone.sign(wallet, digest)
            )
            if not schnorr_verify(digest, wallet.public_key[1:], signature):
                raise RuntimeError("the phone's signature does not verify")
            say("  signature verified; the phone checked the enclave's document itself")
            refreshed = await step(
                "the phone refreshes its share with the server share's (same key, epoch 1)",
                phone.refresh(wallet),
            )
            pruned = await step(
                "the phone acknowledges the new epoch; the host retires the old one",
                phone.acknowledge_epoch(refreshed),
            )
            say(f"  epochs pruned: {pruned}")
            signature = await step(
                "the phone signs with its new share", phone.sign(refreshed, digest)
            )
            if not schnorr_verify(digest, refreshed.public_key[1:], signature):
                raise RuntimeError("the phone's signature after the refresh does not verify")
    finally:
        await server.stop(None)
        await coordinator.aclose()
