"""tss.session: ceremonies over sealed channels, with an honest and a tampering relay."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence

import pytest

from tss.channel import ChannelStreamError, Roster, StaticKey
from tss.curve import ecdsa_verify, schnorr_verify
from tss.dkg.chilldkg import hostpubkey_gen
from tss.keygen import Keygen
from tss.keyshare import KeyShare
from tss.session import Outbound, SecureSession
from tss.signing import Bip340Signing, EcdsaSigning

Tamper = Callable[[int, Outbound], Outbound | None]


def relay(sessions: Sequence[SecureSession[object]], tamper: Tamper | None = None) -> None:
    """Deliver envelopes in order per sender but interleaving senders at random."""
    by_index = {s.ceremony.me: s for s in sessions}
    queues: dict[int, list[Outbound]] = {i: [] for i in by_index}
    for s in sessions:
        queues[s.ceremony.me] += s.start()
    rng = random.Random(7)
    while any(queues.values()):
        sender = rng.choice([i for i, q in queues.items() if q])
        out = queues[sender].pop(0)
        if tamper is not None:
            tampered = tamper(sender, out)
            if tampered is None:
                continue
            out = tampered
        queues[out.recipient] += by_index[out.recipient].receive(out.envelope)


def parties(n: int) -> tuple[list[StaticKey], Roster]:
    keys = [StaticKey.generate(secrets.token_bytes(32)) for _ in range(n)]
    return keys, Roster.from_parties([(k.party_id, k.public_key) for k in keys])


def keygen(
    scheme: str, t: int, n: int, tamper: Tamper | None = None
) -> tuple[list[KeyShare], list[StaticKey], Roster]:
    keys, roster = parties(n)
    hostseckeys = [secrets.token_bytes(32) for _ in range(n)]
    hostpubkeys = [hostpubkey_gen(sk) for sk in hostseckeys]
    sessions = [
        SecureSession(
            Keygen(scheme, sk, hostpubkeys, t, secrets.token_bytes),  # type: ignore[arg-type]
            keys[i],
            roster,
            "room-1",
            "keygen-1",
            secrets.token_bytes,
        )
        for i, sk in enumerate(hostseckeys)
    ]
    relay(sessions, tamper)  # type: ignore[arg-type]
    return [s.result for s in sessions], keys, roster


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_keygen_and_sign_over_sealed_channels(scheme: str) -> None:
    shares, keys, _ = keygen(scheme, 2, 3)
    assert len({s.public_key for s in shares}) == 1
    signers = [0, 2]
    sub_roster = Roster.from_parties(
        [(keys[i].party_id, keys[i].public_key) for i in signers], signers
    )
    digest = bytes(range(32))
    kind = Bip340Signing if scheme == "bip340" else EcdsaSigning
    sessions = [
        SecureSession(
            kind(shares[i], signers, digest, b"sign-1", secrets.token_bytes),
            keys[i],
            sub_roster,
            "room-1",
            "sign-1",
            secrets.token_bytes,
        )
        for i in signers
    ]
    relay(sessions)  # type: ignore[arg-type]
    result = sessions[0].result
    if scheme == "bip340":
        assert isinstance(result, bytes)
        assert schnorr_verify(digest, shares[0].public_key[1:], result)
    else:
        assert ecdsa_verify(digest, shares[0].public_key, result.signature)  # type: ignore[attr-defined]


def flip_last_byte(sender: int, out: Outbound) -> Outbound:
    env = bytearray(out.envelope)
    env[-1] ^= 1
    return Outbound(out.round, out.recipient, out.recipient_id, bytes(env))


def test_tampering_relay_is_detected_and_blames_the_stream() -> None:
    with pytest.raises(ChannelStreamError) as info:
        keygen("bip340", 2, 3, lambda s, o: flip_last_byte(s, o) if s == 1 and o.round == 1 else o)
    assert info.value.culprits == (1,)
    assert info.value.reason == "authentication"


def test_dropping_relay_is_detected_as_a_gap() -> None:
    dropped: list[int] = []

    def drop_first_of_party_2(sender: int, out: Outbound) -> Outbound | None:
        if sender == 2 and out.recipient == 0 and not dropped:
            dropped.append(1)
            return None
        return out

    with pytest.raises(ChannelStreamError) as info:
        keygen("bip340", 2, 3, drop_first_of_party_2)
    assert info.value.reason == "gap" and info.value.culprits == (2,)


def test_replaying_relay_is_detected() -> None:
    seen: dict[tuple[int, int], Outbound] = {}

    def replay_round1(sender: int, out: Outbound) -> Outbound:
        key = (sender, out.recipient)
        if out.round == 2 and key in seen:
            return seen[key]  # deliver the round-1 envelope again instead
        seen.setdefault(key, out)
        return out

    with pytest.raises(ChannelStreamError) as info:
        keygen("bip340", 2, 3, replay_round1)
    assert info.value.reason == "replay"
