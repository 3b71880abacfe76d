"""Tests of tss.channel: RFC 9180 Auth-mode KAT, party ids, roster, wire format,
and the receiver's routing, replay and authentication checks (none of which blames a party)."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from tss import channel
from tss.channel import (
    ChannelEnvelope,
    ChannelHeader,
    ChannelReceiver,
    ChannelSender,
    ChannelStreamError,
    MisroutedEnvelopeError,
    PartyId,
    Roster,
    StaticKey,
    party_id,
    validate_public_key,
)
from tss.curve import tagged_hash
from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    InputError,
    InvalidEncodingError,
    SessionStateError,
    culprits,
)

ROOM = "room-7f3a"
CEREMONY = "keygen:0001"
MAX_ROUND = 3


def rand(label: str, i: int = 0) -> bytes:
    """Deterministic test randomness."""
    return hashlib.sha256(f"{label}/{i}".encode()).digest()


def keys(n: int, label: str = "party") -> list[StaticKey]:
    return [StaticKey.generate(rand(label, i)) for i in range(n)]


def roster_of(ks: list[StaticKey]) -> Roster:
    return Roster.from_parties([(k.party_id, k.public_key) for k in ks])


class Party:
    """One party's sender and receiver in a ceremony."""

    def __init__(self, key: StaticKey, roster: Roster, room: str = ROOM, cer: str = CEREMONY):
        self.key = key
        self.tx = ChannelSender(key, roster, room, cer)
        self.rx = ChannelReceiver(key, roster, room, cer, max_round=MAX_ROUND)


def ceremony(n: int = 3) -> list[Party]:
    ks = keys(n)
    roster = roster_of(ks)
    return [Party(k, roster) for k in ks]


def rewrite(envelope: bytes, **changes: Any) -> bytes:
    """Re-encode an envelope with some header fields changed (what a relay could do)."""
    env = ChannelEnvelope.from_bytes(envelope)
    return ChannelEnvelope(
        dataclasses.replace(env.header, **changes), env.enc, env.ciphertext
    ).to_bytes()


def flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 1]) + data[pos + 1 :]


def stream_error(exc: pytest.ExceptionInfo[BaseException], sender: int, reason: str) -> None:
    """A rejected envelope names the sender its header claims, and blames no one."""
    assert isinstance(exc.value, ChannelStreamError)
    assert isinstance(exc.value, FaultyCoordinatorError)
    assert not isinstance(exc.value, FaultyParticipantError)
    assert exc.value.reason == reason
    assert exc.value.claimed_sender == sender
    assert culprits(exc.value) == ()


### RFC 9180 Appendix A.2.3: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, mode_auth
# Values from RFC 9180 A.2.3 (Auth Setup Information) and A.2.3.1 (Encryptions, sequence number 0).

A23_INFO = "4f6465206f6e2061204772656369616e2055726e"
A23_IKM_E = "938d3daa5a8904540bc24f48ae90eed3f4f7f11839560597b55e7c9598c996c0"
A23_PK_EM = "f7674cc8cd7baa5872d1f33dbaffe3314239f6197ddf5ded1746760bfc847e0e"
A23_SK_EM = "c94619e1af28971c8fa7957192b7e62a71ca2dcdde0a7cc4a8a9e741d600ab13"
A23_IKM_R = "64835d5ee64aa7aad57c6f2e4f758f7696617f8829e70bc9ac7a5ef95d1c756c"
A23_PK_RM = "1a478716d63cb2e16786ee93004486dc151e988b34b475043d3e0175bdb01c44"
A23_SK_RM = "3ca22a6d1cda1bb9480949ec5329d3bf0b080ca4c45879c95eddb55c70b80b82"
A23_IKM_S = "9d8f94537d5a3ddef71234c0baedfad4ca6861634d0b94c3007fed557ad17df6"
A23_PK_SM = "f0f4f9e96c54aeed3f323de8534fffd7e0577e4ce269896716bcb95643c8712b"
A23_SK_SM = "2def0cb58ffcf83d1062dd085c8aceca7f4c0c3fd05912d847b61f3e54121f05"
A23_SHARED_SECRET = "d2d67828c8bc9fa661cf15a31b3ebf1febe0cafef7abfaaca580aaf6d471e3eb"
A23_KEY = "b071fd1136680600eb447a845a967d35e9db20749cdf9ce098bcc4deef4b1356"
A23_BASE_NONCE = "d20577dff16d7cea2c4bf780"
A23_PT = "4265617574792069732074727574682c20747275746820626561757479"
A23_AAD_0 = "436f756e742d30"
A23_CT_0 = (
    "ab1a13c9d4f01a87ec3440dbd756e2677bd2ecf9df0ce7ed73869b98e00c09be111cb9fdf077347aeb88e61bdf"
)


@pytest.mark.parametrize(
    ("ikm", "sk", "pk"),
    [
        (A23_IKM_E, A23_SK_EM, A23_PK_EM),
        (A23_IKM_R, A23_SK_RM, A23_PK_RM),
        (A23_IKM_S, A23_SK_SM, A23_PK_SM),
    ],
    ids=["ephemeral", "recipient", "sender"],
)
def test_rfc9180_a23_derive_key_pair(ikm: str, sk: str, pk: str) -> None:
    key = StaticKey.generate(bytes.fromhex(ikm))
    assert key.private_bytes().hex() == sk
    assert key.public_key.hex() == pk
    assert StaticKey.from_private_bytes(bytes.fromhex(sk)).public_key.hex() == pk


def test_rfc9180_a23_auth_encap_decap_and_key_schedule() -> None:
    sk_e = StaticKey.from_private_bytes(bytes.fromhex(A23_SK_EM))
    sk_r = StaticKey.from_private_bytes(bytes.fromhex(A23_SK_RM))
    sk_s = StaticKey.from_private_bytes(bytes.fromhex(A23_SK_SM))
    pk_r = X25519PublicKey.from_public_bytes(sk_r.public_key)
    pk_s = X25519PublicKey.from_public_bytes(sk_s.public_key)
    pk_e = X25519PublicKey.from_public_bytes(bytes.fromhex(A23_PK_EM))
    kem_context = bytes.fromhex(A23_PK_EM + A23_PK_RM + A23_PK_SM)
    # AuthEncap (sender side) and AuthDecap (recipient side) agree on the RFC's value.
    encap = channel._extract_and_expand(
        sk_e._sk.exchange(pk_r) + sk_s._sk.exchange(pk_r), kem_context
    )
    decap = channel._extract_and_expand(
        sk_r._sk.exchange(pk_e) + sk_r._sk.exchange(pk_s), kem_context
    )
    assert encap.hex() == decap.hex() == A23_SHARED_SECRET
    key, base_nonce = channel._key_schedule_auth(encap, bytes.fromhex(A23_INFO))
    assert key.hex() == A23_KEY
    assert base_nonce.hex() == A23_BASE_NONCE


def test_rfc9180_a23_seal_and_open_sequence_0() -> None:
    sk_r = StaticKey.generate(bytes.fromhex(A23_IKM_R))
    sk_s = StaticKey.generate(bytes.fromhex(A23_IKM_S))
    pk_r = X25519PublicKey.from_public_bytes(sk_r.public_key)
    dh_static = sk_s._sk.exchange(pk_r)
    args = (bytes.fromhex(A23_INFO), bytes.fromhex(A23_AAD_0))
    enc, ct = channel._hpke_seal_auth(
        pk_r, sk_r.public_key, sk_s.public_key, dh_static, bytes.fromhex(A23_IKM_E), *args,
        bytes.fromhex(A23_PT),
    )  # fmt: skip
    assert enc.hex() == A23_PK_EM
    assert ct.hex() == A23_CT_0
    pt = channel._hpke_open_auth(
        sk_r._sk, sk_r.public_key, sk_s.public_key, dh_static, enc, *args, ct
    )
    assert pt.hex() == A23_PT


### Static keys, party ids, public-key validation


def test_party_id_derives_from_public_key() -> None:
    key = StaticKey.generate(rand("id"))
    pid = party_id(key.public_key)
    assert pid == key.party_id
    assert len(pid) == 40 and int(pid, 16) >= 0 and pid == pid.lower()
    tagged = tagged_hash("shardkeep/channel/party-id", key.public_key)
    assert pid == tagged[:20].hex()
    assert StaticKey.from_private_bytes(key.private_bytes()).party_id == pid


def test_static_key_generation_is_deterministic_in_its_randomness() -> None:
    assert StaticKey.generate(rand("a")).public_key == StaticKey.generate(rand("a")).public_key
    assert StaticKey.generate(rand("a")).public_key != StaticKey.generate(rand("b")).public_key
    with pytest.raises(InputError):
        StaticKey.generate(bytes(31))
    with pytest.raises(InputError):
        StaticKey.from_private_bytes(bytes(33))


def test_keys_and_channels_print_redacted() -> None:
    parties = ceremony(2)
    key = parties[0].key
    secret_hex = key.private_bytes().hex()
    dh_hex = parties[0].tx._peers[1].dh_static.hex()
    texts = [repr(key), str(key), f"{key}", repr(parties[0].tx), repr(parties[0].rx)]
    texts += [repr(parties[0].tx._peers[1])]
    for text in texts:
        assert secret_hex not in text and dh_hex not in text
    assert "<redacted>" in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)


P25519 = 2**255 - 19
LOW_ORDER_POINTS = {
    # RFC 7748 §5 / the curve25519 low-order list: 0, 1, the two points of order 8, p-1.
    "zero": bytes(32),
    "one": (1).to_bytes(32, "little"),
    "order8-a": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    "order8-b": bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    "p-1": (P25519 - 1).to_bytes(32, "little"),
}
NON_CANONICAL = {
    "p": P25519.to_bytes(32, "little"),
    "p+1": (P25519 + 1).to_bytes(32, "little"),
    "top-bit": ((1 << 255) | 9).to_bytes(32, "little"),
}


@pytest.mark.parametrize(
    "data",
    [bytes(31), bytes(33), b"", *LOW_ORDER_POINTS.values(), *NON_CANONICAL.values()],
    ids=["len31", "len33", "empty", *LOW_ORDER_POINTS, *NON_CANONICAL],
)
def test_invalid_public_keys_raise_typed_errors(data: bytes) -> None:
    with pytest.raises(InvalidEncodingError):
        validate_public_key(data)
    with pytest.raises(InvalidEncodingError):
        party_id(data)
    good = keys(1)[0]
    with pytest.raises(InvalidEncodingError):
        Roster.from_parties([(good.party_id, good.public_key), ("00" * 20, data)])


def test_valid_public_key_passes() -> None:
    pk = StaticKey.generate(rand("v")).public_key
    assert validate_public_key(pk) == pk
    assert validate_public_key((9).to_bytes(32, "little"))  # the base point


def test_static_dh_is_the_pairs_dh_and_its_memo_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = keys(2, "dh")
    assert a._static_dh(b.public_key) == b._static_dh(a.public_key)
    assert a._static_dh(b.public_key) == a._sk.exchange(  # the memo's answer, again
        X25519PublicKey.from_public_bytes(b.public_key)
    )
    monkeypatch.setattr(channel, "_STATIC_DH_MEMO", 3)
    for peer in keys(7, "many"):
        a._static_dh(peer.public_key)
        assert len(a._shared) <= 3


### Roster


def test_roster_maps_indices_ids_and_keys() -> None:
    ks = keys(3)
    roster = Roster.from_parties([(k.party_id, k.public_key) for k in ks], indices=[0, 2, 5])
    assert len(roster) == 3
    assert roster.index_of(ks[1].party_id) == 2
    assert roster.party_id_of(5) == ks[2].party_id
    assert roster.public_key_of(0) == ks[0].public_key
    assert roster.find("ab" * 20) is None
    with pytest.raises(InputError):
        roster.index_of("ab" * 20)
    with pytest.raises(InputError):
        roster.public_key_of(1)


def test_roster_rejects_bad_party_lists() -> None:
    a, b, c = keys(3)
    with pytest.raises(InputError, match="does not derive"):
        Roster.from_parties([(a.party_id, a.public_key), (c.party_id, b.public_key)])
    with pytest.raises(InputError, match="distinct"):
        Roster.from_parties([(a.party_id, a.public_key), (a.party_id, a.public_key)])
    with pytest.raises(InputError, match="2 or more"):
        Roster.from_parties([(a.party_id, a.public_key)])
    with pytest.raises(InputError, match="indices"):
        Roster.from_parties(
            [(a.party_id, a.public_key), (b.party_id, b.public_key)], indices=[1, 1]
        )
    with pytest.raises(InputError, match="indices"):
        Roster.from_parties(
            [(a.party_id, a.public_key), (b.party_id, b.public_key)], indices=[-1, 0]
        )


def test_channel_needs_own_key_in_roster() -> None:
    ks = keys(3)
    roster = roster_of(ks[:2])
    with pytest.raises(InputError, match="not in the roster"):
        ChannelSender(ks[2], roster, ROOM, CEREMONY)
    with pytest.raises(InputError, match="room_id"):
        ChannelSender(ks[0], roster, "no spaces", CEREMONY)
    with pytest.raises(InputError, match="max_round"):
        ChannelReceiver(ks[0], roster, ROOM, CEREMONY, max_round=0)


### Wire format


def test_envelope_layout_and_round_trip() -> None:
    p = ceremony(2)
    env = p[0].tx.seal(1, 2, b"hello", rand("m"))
    room, cer = ROOM.encode(), CEREMONY.encode()
    assert len(env) == 91 + len(room) + len(cer) + len(b"hello") + 16
    assert env[0] == 1 and env[1] == len(room) and env[2 : 2 + len(room)] == room
    off = 2 + len(room)
    assert env[off] == len(cer) and env[off + 1 : off + 1 + len(cer)] == cer
    off += 1 + len(cer)
    assert int.from_bytes(env[off : off + 4], "big") == 2
    assert env[off + 4 : off + 24].hex() == p[0].key.party_id
    assert env[off + 24 : off + 44].hex() == p[1].key.party_id
    assert int.from_bytes(env[off + 44 : off + 52], "big") == 0
    assert int.from_bytes(env[off + 84 : off + 88], "big") == len(b"hello") + 16
    decoded = ChannelEnvelope.from_bytes(env)
    assert decoded.to_bytes() == env
    assert decoded.header == ChannelHeader(
        ROOM, CEREMONY, 2, p[0].key.party_id, p[1].key.party_id, 0
    )


def _good_envelope() -> bytes:
    return ceremony(2)[0].tx.seal(1, 1, b"payload", rand("w"))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e[:-1],
        lambda e: e + b"\x00",
        lambda e: b"",
        lambda e: e[:10],
        lambda e: b"\x02" + e[1:],
        lambda e: e[:1] + b"\x00" + e[2:],
        lambda e: e[:2] + b" " + e[3:],
        lambda e: e[:2] + b"\xff" + e[3:],
    ],
    ids=[
        "truncated",
        "trailing",
        "empty",
        "header-only",
        "version",
        "empty-room",
        "room-charset",
        "room-non-ascii",
    ],
)
def test_envelope_decoder_rejects_malformed_bytes(mutate: Callable[[bytes], bytes]) -> None:
    env = _good_envelope()
    bad = mutate(env)
    with pytest.raises(InvalidEncodingError):
        ChannelEnvelope.from_bytes(bad)


def test_envelope_decoder_checks_inner_lengths() -> None:
    env = _good_envelope()
    ct_len_at = len(env) - (len(b"payload") + 16) - 4
    for wrong in (0, 15, len(b"payload") + 15, len(b"payload") + 17, 2**32 - 1):
        bad = env[:ct_len_at] + wrong.to_bytes(4, "big") + env[ct_len_at + 4 :]
        with pytest.raises(InvalidEncodingError):
            ChannelEnvelope.from_bytes(bad)
    round_at = 3 + len(ROOM) + len(CEREMONY)
    with pytest.raises(InvalidEncodingError, match="round"):
        ChannelEnvelope.from_bytes(env[:round_at] + bytes(4) + env[round_at + 4 :])


def test_header_validates_fields() -> None:
    pid = PartyId("ab" * 20)
    ok = ChannelHeader(ROOM, CEREMONY, 1, pid, pid, 0)
    changes: tuple[dict[str, Any], ...] = (
        {"room_id": ""},
        {"room_id": "x" * 129},
        {"ceremony_id": "a b"},
        {"round": 0},
        {"round": 2**32},
        {"seq": -1},
        {"seq": 2**64},
        {"sender": "AB" * 20},
        {"recipient": "ab" * 19},
    )
    for change in changes:
        with pytest.raises(InputError):
            dataclasses.replace(ok, **change)


### Sealing and opening


def test_round_trip_point_to_point() -> None:
    a, _, c = ceremony(3)
    env = a.tx.seal(2, 1, b"secret share for c", rand("p2p"))
    assert env.find(b"secret share for c") == -1
    msg = c.rx.open(env)
    assert msg.sender == 0 and msg.plaintext == b"secret share for c"
    assert msg.header.round == 1 and msg.header.seq == 0
    assert msg.header.recipient == c.key.party_id
    assert a.tx.next_seq(2) == 1 and a.tx.next_seq(1) == 0
    assert c.rx.accepted(0) == {0} and c.rx.accepted(1) == set()


def test_round_trip_empty_and_long_plaintext() -> None:
    a, b = ceremony(2)
    for i, pt in enumerate((b"", bytes(range(256)) * 400)):
        assert b.rx.open(a.tx.seal(1, 1, pt, rand("len", i))).plaintext == pt


def test_broadcast_one_copy_per_recipient() -> None:
    parties = ceremony(4)
    out = parties[1].tx.seal_broadcast(1, b"commitment", rand("bc"))
    assert sorted(out) == [0, 2, 3]
    assert len({ChannelEnvelope.from_bytes(e).enc for e in out.values()}) == 3
    for index, env in out.items():
        msg = parties[index].rx.open(env)
        assert (msg.sender, msg.plaintext) == (1, b"commitment")
    # A copy for one recipient does not open at another.
    with pytest.raises(MisroutedEnvelopeError):
        parties[2].rx.open(out[3])


def test_streams_are_independent_per_pair() -> None:
    a, b, c = ceremony(3)
    a.tx.seal_broadcast(1, b"r1", rand("s", 0))
    env_b = a.tx.seal(1, 2, b"r2 to b", rand("s", 1))
    assert ChannelEnvelope.from_bytes(env_b).header.seq == 1
    assert a.tx.next_seq(2) == 1
    env_c = c.tx.seal(1, 2, b"c to b", rand("s", 2))
    assert ChannelEnvelope.from_bytes(env_c).header.seq == 0
    assert b.rx.open(env_b).plaintext == b"r2 to b"  # before a's seq 0: order is the ceremony's
    assert b.rx.open(env_c).plaintext == b"c to b"
    assert b.rx.accepted(0) == {1} and b.rx.accepted(2) == {0}


def test_sequential_messages_in_order() -> None:
    a, b = ceremony(2)
    envs = [a.tx.seal(1, r, f"m{r}".encode(), rand("seq", r)) for r in (1, 2, 3)]
    assert [b.rx.open(e).plaintext for e in envs] == [b"m1", b"m2", b"m3"]


def test_same_randomness_never_repeats_an_ephemeral() -> None:
    a, b = ceremony(2)
    r = rand("reused")
    e1 = ChannelEnvelope.from_bytes(a.tx.seal(1, 1, b"first", r))
    e2 = ChannelEnvelope.from_bytes(a.tx.seal(1, 1, b"second", r))
    assert e1.enc != e2.enc
    # Even with the same header (a rolled-back sender), different plaintexts get different keys.
    a2 = ChannelSender(a.key, roster_of([a.key, b.key]), ROOM, CEREMONY)
    e3 = ChannelEnvelope.from_bytes(a2.seal(1, 1, b"other", r))
    assert e3.header == e1.header and e3.enc != e1.enc


def test_seal_rejects_bad_arguments() -> None:
    a, _ = ceremony(2)
    with pytest.raises(InputError):
        a.tx.seal(0, 1, b"to myself", rand("x"))
    with pytest.raises(InputError):
        a.tx.seal(7, 1, b"nobody", rand("x"))
    with pytest.raises(InputError):
        a.tx.seal(1, 0, b"round 0", rand("x"))
    with pytest.raises(InputError):
        a.tx.seal(1, 1, b"short rand", bytes(31))
    assert a.tx.next_seq(1) == 0  # nothing was consumed


def test_exhausted_stream_refuses_to_seal() -> None:
    a, _ = ceremony(2)
    a.tx._next_seq[1] = channel.MAX_SEQ
    last = ChannelEnvelope.from_bytes(a.tx.seal(1, 1, b"last", rand("max")))
    assert last.header.seq == channel.MAX_SEQ
    with pytest.raises(SessionStateError):
        a.tx.seal(1, 1, b"one too many", rand("max", 1))


### Receiver: routing checks (no party blamed)


def test_wrong_recipient_is_misrouted() -> None:
    a, b, _ = ceremony(3)
    with pytest.raises(MisroutedEnvelopeError) as exc:
        b.rx.open(a.tx.seal(2, 1, b"for c", rand("r")))
    assert exc.value.reason == "recipient" and culprits(exc.value) == ()
    assert isinstance(exc.value, FaultyCoordinatorError)


def test_wrong_room_and_ceremony_are_misrouted() -> None:
    ks = keys(2)
    roster = roster_of(ks)
    receiver = Party(ks[1], roster)
    for room, cer, reason in (("room-other", CEREMONY, "room"), (ROOM, "sign:0002", "ceremony")):
        env = Party(ks[0], roster, room, cer).tx.seal(1, 1, b"x", rand("wr"))
        with pytest.raises(MisroutedEnvelopeError) as exc:
            receiver.rx.open(env)
        assert exc.value.reason == reason and culprits(exc.value) == ()
    assert receiver.rx.accepted(0) == set()


def test_unknown_sender_is_misrouted() -> None:
    ks = keys(3)
    outsider = keys(1, "outsider")[0]
    member = Party(ks[1], roster_of(ks))
    # The outsider runs its own channel towards party 1 (same room and ceremony ids).
    rogue = ChannelSender(outsider, roster_of([ks[0], ks[1], outsider]), ROOM, CEREMONY)
    with pytest.raises(MisroutedEnvelopeError) as exc:
        member.rx.open(rogue.seal(1, 1, b"let me in", rand("u")))
    assert exc.value.reason == "sender" and culprits(exc.value) == ()


def test_envelope_from_self_is_misrouted() -> None:
    a, b = ceremony(2)
    env = rewrite(b.tx.seal(0, 1, b"x", rand("self")), sender=a.key.party_id)
    with pytest.raises(MisroutedEnvelopeError) as exc:
        a.rx.open(env)
    assert exc.value.reason == "sender"


def test_malformed_envelope_is_misrouted() -> None:
    a, b = ceremony(2)
    with pytest.raises(MisroutedEnvelopeError) as exc:
        b.rx.open(a.tx.seal(1, 1, b"x", rand("mal"))[:-1])
    assert exc.value.reason == "malformed"
    assert isinstance(exc.value.__cause__, InvalidEncodingError)


### Receiver: replays (dropped, the claimed sender is not blamed)


def test_replay_is_rejected() -> None:
    a, b = ceremony(2)
    env = a.tx.seal(1, 1, b"once", rand("rp"))
    assert b.rx.open(env).plaintext == b"once"
    with pytest.raises(ChannelStreamError) as exc:
        b.rx.open(env)
    stream_error(exc, 0, "replay")


def test_reordered_envelopes_open_each_once() -> None:
    a, b = ceremony(2)
    m0 = a.tx.seal(1, 1, b"m0", rand("ro", 0))
    m1 = a.tx.seal(1, 2, b"m1", rand("ro", 1))
    assert b.rx.open(m1).plaintext == b"m1"
    assert b.rx.open(m0).plaintext == b"m0"
    for env in (m0, m1):
        with pytest.raises(ChannelStreamError) as exc:
            b.rx.open(env)
        stream_error(exc, 0, "replay")


def test_a_dropped_envelope_does_not_block_the_next() -> None:
    """Non-delivery is the ceremony's deadline to report; the channel cannot tell who lost it."""
    a, b = ceremony(2)
    a.tx.seal(1, 1, b"dropped by the relay", rand("d", 0))
    assert b.rx.open(a.tx.seal(1, 2, b"next", rand("d", 1))).plaintext == b"next"
    assert b.rx.accepted(0) == {1}


def test_round_out_of_range_is_rejected() -> None:
    a, b = ceremony(2)
    with pytest.raises(ChannelStreamError) as exc:
        b.rx.open(a.tx.seal(1, MAX_ROUND + 1, b"late", rand("rr")))
    stream_error(exc, 0, "round")


### Receiver: authentication (dropped, the claimed sender is not blamed)


def _ct_offset() -> int:
    return 3 + len(ROOM) + len(CEREMONY) + 4 + 20 + 20 + 8


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: flip(e, _ct_offset()),  # enc, first byte
        lambda e: flip(e, _ct_offset() + 31),  # enc, last byte
        lambda e: flip(e, _ct_offset() + 36),  # ciphertext body
        lambda e: flip(e, len(e) - 1),  # Poly1305 tag
        lambda e: rewrite(e, round=2),  # header field bound by the HPKE info
        lambda e: (lambda env: env.to_bytes())(  # ciphertext of another message, same header
            dataclasses.replace(ChannelEnvelope.from_bytes(e), ciphertext=bytes(23))
        ),
    ],
    ids=["enc-first", "enc-last", "ciphertext", "tag", "header-round", "ciphertext-swap"],
)
def test_tampering_fails_authentication_and_blames_no_one(
    tamper: Callable[[bytes], bytes],
) -> None:
    a, b = ceremony(2)
    env = a.tx.seal(1, 1, b"genuine", rand("t"))
    with pytest.raises(ChannelStreamError) as exc:
        b.rx.open(tamper(env))
    stream_error(exc, 0, "authentication")
    assert b.rx.open(env).plaintext == b"genuine"  # the forgery did not advance the stream


def test_low_order_enc_fails_authentication_without_crashing() -> None:
    a, b = ceremony(2)
    env = ChannelEnvelope.from_bytes(a.tx.seal(1, 1, b"x", rand("lo")))
    for point in LOW_ORDER_POINTS.values():
        bad = dataclasses.replace(env, enc=point).to_bytes()
        with pytest.raises(ChannelStreamError) as exc:
            b.rx.open(bad)
        stream_error(exc, 0, "authentication")


def test_header_fields_are_bound_cryptographically() -> None:
    """A relay re-addressing a message past the routing checks still fails authentication."""
    ks = keys(3)
    roster = roster_of(ks)
    a = Party(ks[0], roster)
    env = a.tx.seal(1, 1, b"for b in room/ceremony", rand("bind"))
    for room, cer, change in (
        ("room-other", CEREMONY, {"room_id": "room-other"}),
        (ROOM, "sign:0002", {"ceremony_id": "sign:0002"}),
    ):
        target = Party(ks[1], roster, room, cer)
        with pytest.raises(ChannelStreamError) as exc:
            target.rx.open(rewrite(env, **change))
        stream_error(exc, 0, "authentication")
    # Re-addressed to party 2, whose key is not the one a sealed to.
    c = Party(ks[2], roster)
    with pytest.raises(ChannelStreamError) as exc:
        c.rx.open(rewrite(env, recipient=ks[2].party_id))
    stream_error(exc, 0, "authentication")


def test_forged_sender_fails_authentication() -> None:
    """Party c seals to b but claims to be a: without a's private key it cannot authenticate."""
    a, b, c = ceremony(3)
    forged = rewrite(c.tx.seal(1, 1, b"I am a", rand("f")), sender=a.key.party_id)
    with pytest.raises(ChannelStreamError) as exc:
        b.rx.open(forged)
    stream_error(exc, 0, "authentication")
    assert b.rx.accepted(0) == set() and b.rx.accepted(2) == set()


def test_errors_carry_no_key_material() -> None:
    a, b = ceremony(2)
    env = a.tx.seal(1, 1, b"plaintext-canary", rand("e"))
    secrets_hex = [a.key.private_bytes().hex(), b.key.private_bytes().hex()]
    errors: list[Exception] = []
    for bad in (flip(env, len(env) - 1), env[:-1], rewrite(env, round=MAX_ROUND + 1)):
        try:
            b.rx.open(bad)
        except (ChannelStreamError, MisroutedEnvelopeError) as caught:
            errors.append(caught)
    assert len(errors) == 3
    for error in errors:
        text = str(error) + repr(error)
        assert "plaintext-canary" not in text
        assert all(s not in text for s in secrets_hex)
