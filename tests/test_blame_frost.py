"""Blame in FROST signing: a signer that equivocates on its nonces is named, honest signers never.

The attack (identifiable abort without a coordinator): malicious signer M shows
each honest signer a different round-1 nonce and sends each a partial
signature valid in that signer's view. Judged on partial signatures alone,
each honest signer finds the other honest signer's invalid (it was made for
another aggregate nonce) and names it; M is named by no one. With signed
nonces echoed in round 2, every honest signer sees two nonces signed by M for
one signing and names M only.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.nsm import SimulatedNitroPki
from enclave.service import CULPRITS_METADATA
from tests.enclave_harness import (
    ClientParty,
    EquivocatingSession,
    Stack,
    Tolerant,
    client_keygen,
    client_sign,
    devkms,
    host_loop,
    keygen_request,
    run,
    sign_request,
    signed,
    with_enclave,
)
from tss import local
from tss.ceremony import Ceremony, Message
from tss.equivocation import EquivocationError
from tss.errors import ProtocolError, ShardkeepError
from tss.keyshare import KeyShare
from tss.signing import NONCES, Bip340Signing, HostKeys, throwaway_host_keys

DIGEST = bytes(range(32))


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


def test_frost_nonce_equivocation_blames_equivocator_not_honest_signers(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: signer M (a client) shows the enclave one signed nonce and honest
    client B another, with a partial signature valid in each one's view. The
    enclave and B each name M, and only M; neither names the other."""
    coordinator = Ed25519PrivateKey.generate()
    b, m = ClientParty(), ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request("bip340", [b.party, m.party, stack.party], 2)
        keygen = {p.party.party_id: client_keygen("bip340", p, request) for p in (b, m)}
        await host_loop(stack, signed(request, coordinator), keygen)
        share_b, share_m = (s.result for s in keygen.values())
        sign = sign_request(request, [0, 1, 2])
        honest_b = Tolerant(client_sign(share_b, b, sign))
        malicious = EquivocatingSession(lambda: client_sign(share_m, m, sign), stack.party.party_id)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await host_loop(
                stack,
                signed(sign, coordinator),
                {b.party.party_id: honest_b, m.party.party_id: malicious},
                list(stack.stored),
            )
        assert info.value.code() == grpc.StatusCode.ABORTED, info.value.details()
        enclave_blames = dict(info.value.trailing_metadata() or ()).get(CULPRITS_METADATA)
        assert enclave_blames == m.party.party_id
        assert isinstance(honest_b.error, EquivocationError)
        assert honest_b.error.culprits == (1,)
        # The evidence holds on its own: two nonces, both signed by M's host key.
        first, second = honest_b.error.equivocators[1]
        assert first.value != second.value
        context = honest_b.session.ceremony.context  # type: ignore[attr-defined]
        for nonce in (first, second):
            assert NONCES.valid(bytes(m.party.host_pubkey), context, 1, nonce)

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


### The same rules in one process (sans-IO), for the other ways to lie about nonces


def _signers(
    shares: list[KeyShare], keys: list[HostKeys], session_id: bytes = b"sid"
) -> list[Bip340Signing]:
    return [
        Bip340Signing(s, [0, 1, 2], DIGEST, session_id, secrets.token_bytes, host_keys=keys[i])
        for i, s in enumerate(shares)
    ]


def _run(signers: Sequence[Ceremony[Any]], tamper: Any) -> dict[int, BaseException | None]:
    """Route every message; ``tamper(message, recipient)`` may rewrite what signer 2 sends."""
    queue = [(m, r) for c in signers for m in c.start() for r in (0, 1, 2) if r != c.me]
    verdicts: dict[int, BaseException | None] = {0: None, 1: None, 2: None}
    while queue:
        message, recipient = queue.pop(0)
        if message.sender == 2:
            message = tamper(message, recipient)
        if verdicts[recipient] is not None:
            continue  # an aborted signer takes no more messages
        try:
            out = signers[recipient].receive(message)
        except ProtocolError as e:
            verdicts[recipient] = e
            continue
        queue += [(m, r) for m in out for r in (0, 1, 2) if r != recipient]
    del verdicts[2]  # the malicious signer's verdict does not matter
    return verdicts


@pytest.fixture(scope="module")
def keyring() -> tuple[list[KeyShare], list[HostKeys]]:
    return local.keygen("bip340", threshold=2, parties=3), throwaway_host_keys(
        3, secrets.token_bytes
    )


def test_an_unsigned_nonce_is_blamed_on_its_sender(
    keyring: tuple[list[KeyShare], list[HostKeys]],
) -> None:
    """Signer 2 sends signer 0 a nonce whose host-key signature does not verify."""
    shares, keys = keyring

    def unsign(message: Message, recipient: int) -> Message:
        if message.round == 1 and recipient == 0:
            return Message(1, 2, None, message.payload[:-1] + bytes([message.payload[-1] ^ 1]))
        return message

    verdicts = _run(_signers(shares, keys), unsign)
    assert isinstance(verdicts[0], ProtocolError) and verdicts[0].culprits == (2,)
    # Signer 1 got a good nonce; it then sees signer 0 stop (non-delivery), blaming no one.
    assert verdicts[1] is None


def test_an_echo_with_a_made_up_nonce_is_blamed_on_the_echoer(
    keyring: tuple[list[KeyShare], list[HostKeys]],
) -> None:
    """Signer 2 echoes to signer 0 a view in which signer 1's nonce is replaced by one
    signer 1 never signed: signer 0 names signer 2, not signer 1."""
    shares, keys = keyring

    def forge_view(message: Message, recipient: int) -> Message:
        if message.round == 2 and recipient == 0:
            payload = bytearray(message.payload)
            offset = 32 + 130 * 1 + 5  # inside signer 1's pubnonce in the view
            payload[offset] ^= 1
            return Message(2, 2, None, bytes(payload))
        return message

    verdicts = _run(_signers(shares, keys), forge_view)
    error = verdicts[0]
    assert isinstance(error, EquivocationError)
    assert error.culprits == (2,) and error.forgers == (2,) and not error.equivocators
    assert verdicts[1] is None  # signer 1 saw consistent views and finished


def test_a_bad_partial_signature_with_a_consistent_view_is_blamed(
    keyring: tuple[list[KeyShare], list[HostKeys]],
) -> None:
    shares, keys = keyring

    def bad_psig(message: Message, recipient: int) -> Message:
        if message.round == 2:
            return Message(2, 2, None, (1).to_bytes(32, "big") + message.payload[32:])
        return message

    verdicts = _run(_signers(shares, keys), bad_psig)
    assert all(isinstance(v, ProtocolError) and v.culprits == (2,) for v in verdicts.values())


def test_a_malformed_round_message_is_blamed_on_its_sender(
    keyring: tuple[list[KeyShare], list[HostKeys]],
) -> None:
    shares, keys = keyring
    for round_ in (1, 2):

        def truncate(message: Message, recipient: int, round_: int = round_) -> Message:
            if message.round == round_:
                return Message(round_, 2, None, message.payload[:-1])
            return message

        verdicts = _run(_signers(shares, keys), truncate)
        assert all(isinstance(v, ProtocolError) and v.culprits == (2,) for v in verdicts.values())


def test_signing_needs_this_partys_host_key(
    keyring: tuple[list[KeyShare], list[HostKeys]],
) -> None:
    shares, keys = keyring
    with pytest.raises(ShardkeepError):
        Bip340Signing(shares[0], [0, 1], DIGEST, b"sid", secrets.token_bytes, host_keys=keys[1])
