"""A client party (user device or customer server): its identity and its ceremonies over the relay.

The party runs the same ``tss`` ceremony objects as the enclave, wrapped in
``tss.session.SecureSession`` so every message is sealed end to end; the relay
only routes the sealed envelopes.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from relay.client import RoomParty
from shardkeep import lifecycle
from shardkeep.v1 import ceremony_pb2
from tss.ceremony import Ceremony
from tss.certificate import Pending
from tss.channel import Roster, StaticKey
from tss.dkg.chilldkg import hostpubkey_gen
from tss.keygen import Keygen
from tss.keyshare import KeyShare
from tss.session import Outbound, SecureSession
from tss.signing import (
    Bip340Signing,
    EcdsaSigning,
    Ed25519Signing,
    HostKeys,
    SigningOptions,
    signing_ceremony,
)

ResultT = TypeVar("ResultT")
Progress = Callable[[str], None]
SavePending = Callable[[Pending], Awaitable[None]]
"""Stores a key change's or keygen's new share durably before the party releases its agreement."""

# Ceremonies whose steps run on the event loop. A FROST signing round is a few
# point operations and two HPKE seals (~0.3 ms); a thread hop costs about as
# much again in CPU and wake-ups, three times per signature (measured with
# bench.bench_service). DKG, reshare and DKLs23 rounds take tens of ms or more,
# so they stay in a worker thread and the loop keeps serving other sessions.
_INLINE_CEREMONIES: tuple[type[Ceremony[Any]], ...] = (Bip340Signing,)


@dataclass(frozen=True)
class PartyIdentity:
    """A party's long-lived keys: X25519 for channels, secp256k1 for ChillDKG (never printed)."""

    static_key: StaticKey = field(repr=False)
    hostseckey: bytes = field(repr=False)

    @staticmethod
    def generate() -> PartyIdentity:
        return PartyIdentity(StaticKey.generate(secrets.token_bytes(32)), secrets.token_bytes(32))

    @property
    def party_id(self) -> str:
        return self.static_key.party_id

    @property
    def party(self) -> ceremony_pb2.Party:
        """This party as a ceremony request lists it."""
        return ceremony_pb2.Party(
            party_id=self.party_id,
            static_key=bytes(self.static_key.public_key),
            host_pubkey=hostpubkey_gen(self.hostseckey),
        )


def keygen_ceremony(request: ceremony_pb2.CeremonyRequest, identity: PartyIdentity) -> Keygen:
    """This party's keygen for ``request`` (its room id set), built from the request alone.

    The same inputs the enclave takes from the signed request: the parties'
    host keys, the threshold and the lifecycle session id.
    """
    return Keygen(
        lifecycle.request_scheme(request),
        identity.hostseckey,
        [bytes(p.host_pubkey) for p in request.parties],
        request.threshold,
        secrets.token_bytes,
        session_id=lifecycle.lifecycle_session_id(request),
    )


def sign_ceremony(
    request: ceremony_pb2.CeremonyRequest, identity: PartyIdentity, share: KeyShare
) -> Bip340Signing | Ed25519Signing | EcdsaSigning:
    """This party's signing for ``request`` (its room id set), built from the request alone."""
    options = SigningOptions(
        derivation_path=tuple(request.derivation_path),
        taproot=request.taproot,
        taproot_merkle_root=bytes(request.taproot_merkle_root) or None,
    )
    # ed25519 signs the message itself (RFC 8032), the other schemes a digest.
    signed = bytes(request.message) if share.scheme == "ed25519" else bytes(request.digest)
    return signing_ceremony(
        share,
        sorted(request.signers),
        signed,
        lifecycle.lifecycle_session_id(request),  # as the enclave derives it
        secrets.token_bytes,
        options,
        HostKeys(identity.hostseckey, tuple(bytes(p.host_pubkey) for p in request.parties)),
    )


def roster_of(parties: list[ceremony_pb2.Party], indices: list[int] | None = None) -> Roster:
    """The channel roster for ``parties`` (all of them, or those at ``indices``)."""
    chosen = list(range(len(parties))) if indices is None else indices
    return Roster.from_parties(
        [(parties[i].party_id, bytes(parties[i].static_key)) for i in chosen], chosen
    )


class RoundProgress:
    """Reports a ceremony's rounds as they complete: "round k of n done" once for each k
    from 1 to n in order, whatever the messages' arrival order (a round that needs no
    message from a peer completes with the one before it)."""

    def __init__(self, ceremony: Ceremony[Any], progress: Progress | None) -> None:
        self._ceremony = ceremony
        self._progress = progress
        self._reported = 0

    def update(self) -> None:
        """Report every round completed since the last call."""
        total = self._ceremony.rounds
        completed = min(self._ceremony.current_round - 1, total)
        while self._progress is not None and self._reported < completed:
            self._reported += 1
            self._progress(f"round {self._reported} of {total} done")


async def run_over_relay(
    ceremony: Ceremony[ResultT],
    identity: PartyIdentity,
    roster: Roster,
    request: ceremony_pb2.CeremonyRequest,
    relay: RoomParty,
    progress: Progress | None = None,
    save_pending: SavePending | None = None,
) -> ResultT:
    """Run this party's side of ``request``'s ceremony over an open relay session.

    A key change pauses before this party's certificate signature:
    ``save_pending`` stores the pending share first (None: the caller keeps the
    result in memory only).

    Raises:
        ProtocolError, SessionStateError: the ceremony failed (culprits named);
            RelayError: the relay failed. Envelopes that do not authenticate or
            are replays are dropped (``SecureSession.dropped``), never blamed.
    """
    session = SecureSession(
        ceremony,
        identity.static_key,
        roster,
        request.room_id,
        request.ceremony_id,
        secrets.token_bytes,
        context=lifecycle.channel_context(request),
    )

    inline = isinstance(ceremony, _INLINE_CEREMONIES)

    async def step(work: Callable[[], list[Outbound]]) -> list[Outbound]:
        return work() if inline else await asyncio.to_thread(work)

    async def send(outbound: list[Outbound]) -> None:
        # Pipelined: a step's envelopes (one per peer for a sealed broadcast)
        # are queued together, numbered in this order and coalesced into one
        # write, then their acks awaited, not one relay round trip each.
        await asyncio.gather(
            *(
                relay.send(
                    o.envelope,
                    ceremony_id=request.ceremony_id,
                    round_=o.round,
                    recipient=o.recipient_id,
                )
                for o in outbound
            )
        )

    async def step_and_send(work: Callable[[], list[Outbound]]) -> None:
        await send(await step(work))
        if session.ceremony.awaiting_save:
            pending = session.ceremony.pending
            if save_pending is not None and pending is not None:
                await save_pending(pending)
            await send(await step(session.confirm_saved))
        rounds.update()

    rounds = RoundProgress(ceremony, progress)
    await step_and_send(session.start)
    if session.done:  # e.g. an export contributor, which expects no message
        return session.result
    async for delivery in relay:
        envelope = delivery.envelope
        if envelope.ceremony_id != request.ceremony_id or envelope.recipient not in (
            "",
            identity.party_id,
        ):
            continue  # another ceremony of the same room, or not ours
        await step_and_send(functools.partial(session.receive, bytes(envelope.payload)))
        if session.done:
            return session.result
    raise ConnectionError("the relay ended the room before the ceremony finished")
