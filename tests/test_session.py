"""tss.session: ceremonies over sealed channels, with an honest and a tampering relay."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence

import pytest

from tss.channel import Roster, StaticKey
from tss.curve import ecdsa_verify, schnorr_verify
from tss.dkg.chilldkg import hostpubkey_gen
from tss.keygen import Keygen
from tss.keyshare import KeyShare
from tss.session import Outbound, SecureSession
from tss.signing import NO_OPTIONS, signing_ceremony, throwaway_host_keys

Tamper = Callable[[int, Outbound], Outbound | None]


def relay(sessions: Sequence[SecureSession[object]], tamper: Tamper | None = None) -> None:
    """Deliver envelopes in order per sender but interleaving senders at random."""
    by_index = {s.ceremony.me: s for s in sessions}
    queues: dict[int, list[Outbound]] = {i: [] for i in by_index}
    for s in sessions:
        queues[s.ceremony.me] += s.start()
    rng = random.Random(7)

    def saved(session: SecureSession[object]) -> list[Outbound]:
        # A pending share counts as saved at once (test memory).
        return session.confirm_saved() if session.ceremony.awaiting_save else []

    while any(queues.values()):
        sender = rng.choice([i for i, q in queues.items() if q])
        out = queues[sender].pop(0)
        if tamper is not None:
            tampered = tamper(sender, out)
            if tampered is None:
                continue
            out = tampered
        queues[out.recipient] += by_index[out.recipient].receive(out.envelope)
        queues[out.recipient] += saved(by_index[out.recipient])


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
            Keygen(scheme, sk, hostpubkeys, t, secrets.token_bytes, session_id=b"k1"),  # type: ignore[arg-type]
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
    host_keys = throwaway_host_keys(3, secrets.token_bytes)
    sessions = [
        SecureSession(
            signing_ceremony(
                shares[i], signers, digest, b"sign-1", secrets.token_bytes, NO_OPTIONS, host_keys[i]
            ),
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


def keygen_sessions(n: int) -> list[SecureSession[KeyShare]]:
    keys, roster = parties(n)
    hostseckeys = [secrets.token_bytes(32) for _ in range(n)]
    hostpubkeys = [hostpubkey_gen(sk) for sk in hostseckeys]
    return [
        SecureSession(
            Keygen("bip340", sk, hostpubkeys, 2, secrets.token_bytes, session_id=b"k1"),
            keys[i],
            roster,
            "room-1",
            "keygen-1",
            secrets.token_bytes,
        )
        for i, sk in enumerate(hostseckeys)
    ]


def test_corrupted_envelopes_are_dropped_and_the_genuine_ones_still_count() -> None:
    """A relay that injects a corrupted copy of party 1's envelope before the genuine one."""
    sessions = keygen_sessions(3)
    extra: list[Outbound] = []

    def inject(sender: int, out: Outbound) -> Outbound:
        if sender == 1 and out.round == 1:
            sessions[out.recipient].receive(flip_last_byte(sender, out).envelope)
            extra.append(out)
        return out

    relay(sessions, inject)  # type: ignore[arg-type]
    assert extra and all(s.done for s in sessions)
    assert sum(s.dropped["authentication"] for s in sessions) == len(extra)


def test_a_relay_that_corrupts_or_drops_stalls_the_ceremony_without_blame() -> None:
    """Replaced or dropped: the ceremony waits (its deadline reports non-delivery)."""
    for tamper in (
        lambda s, o: flip_last_byte(s, o) if s == 1 and o.round == 1 else o,
        lambda s, o: None if s == 2 and o.recipient == 0 else o,
    ):
        sessions = keygen_sessions(3)
        relay(sessions, tamper)  # type: ignore[arg-type]
        assert not sessions[0].done and sessions[0].ceremony.current_round == 1


def test_replayed_envelopes_are_dropped() -> None:
    sessions = keygen_sessions(3)
    seen: list[Outbound] = []

    def replay_round1(sender: int, out: Outbound) -> Outbound:
        if out.round == 1:
            seen.append(out)
        else:
            for old in seen:  # every round-1 envelope again, before each round-2 one
                sessions[old.recipient].receive(old.envelope)
        return out

    relay(sessions, replay_round1)  # type: ignore[arg-type]
    assert all(s.done for s in sessions)
    assert all(s.dropped["replay"] > 0 and set(s.dropped) == {"replay"} for s in sessions)
