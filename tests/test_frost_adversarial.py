"""FROST (BIP 445) per-signer rounds: end to end, and against misbehaving parties.

Key shares come from a trusted Shamir dealer written here (the DKG lives in
tss/dkg). Signatures are checked with coincurve's BIP-340 verifier. Randomness is
seeded so failures reproduce.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

import pytest
from coincurve import PublicKeyXOnly

from tss.bip32 import derive_public
from tss.curve import N, Point
from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    InputError,
    InternalError,
    ProtocolError,
    SessionStateError,
    culprits,
)
from tss.frost import (
    InvalidContributionError,
    PlainPk,
    SecnonceReuseError,
    SessionContext,
    SignersContext,
    SignerState,
    coordinator_aggregate,
    get_plain_pk,
    get_xonly_pk,
    nonce_agg,
    partial_sig_agg,
    sign,
    signer_round1,
    signer_round2,
    thresh_pubkey_and_tweak,
)
from tss.shamir import eval_point, poly_eval
from tss.taproot import taproot_output_key, taproot_tweak

Tweaks = Sequence[tuple[bytes, bool]]


class Keyring(NamedTuple):
    threshold: int
    public_key: bytes
    public_shares: list[bytes]
    secret_shares: list[int]


def deal(t: int, n: int, rng: random.Random) -> Keyring:
    """Trusted-dealer Shamir sharing (RFC 9591 Appendix C), test only."""
    coeffs = [rng.randrange(1, N) for _ in range(t)]
    shares = [poly_eval(coeffs, eval_point(i)) for i in range(n)]
    return Keyring(
        t,
        Point.base_mul(coeffs[0]).to_bytes(),
        [Point.base_mul(s).to_bytes() for s in shares],
        shares,
    )


def round1(
    key: Keyring, ids: Sequence[int], msg: bytes, session_id: bytes, rng: random.Random
) -> tuple[dict[int, SignerState], dict[int, bytes]]:
    states, pubnonces = {}, {}
    for i in ids:
        states[i], pubnonces[i] = signer_round1(
            i,
            key.secret_shares[i],
            key.public_key,
            key.public_shares,
            key.threshold,
            msg,
            session_id,
            rng.randbytes(32),
        )
    return states, pubnonces


def round2(
    states: dict[int, SignerState],
    pubnonces: dict[int, bytes],
    tweaks: Tweaks = (),
) -> dict[int, bytes]:
    ids = list(states)
    return {i: signer_round2(states[i], ids, pubnonces, tweaks) for i in ids}


def aggregate(
    key: Keyring,
    msg: bytes,
    pubnonces: dict[int, bytes],
    psigs: dict[int, bytes],
    tweaks: Tweaks = (),
    *,
    verify_each: bool = True,
) -> bytes:
    return coordinator_aggregate(
        key.public_key,
        key.public_shares,
        key.threshold,
        msg,
        list(pubnonces),
        pubnonces,
        psigs,
        tweaks,
        verify_each=verify_each,
    )


def tweaked_xonly(key: Keyring, tweaks: Tweaks) -> bytes:
    ctx = thresh_pubkey_and_tweak(
        PlainPk(key.public_key), [t for t, _ in tweaks], [x for _, x in tweaks]
    )
    return get_xonly_pk(ctx)


def sign_all(
    key: Keyring,
    ids: Sequence[int],
    msg: bytes,
    rng: random.Random,
    tweaks: Tweaks = (),
) -> bytes:
    states, pubnonces = round1(key, ids, msg, b"session-" + rng.randbytes(8), rng)
    return aggregate(key, msg, pubnonces, round2(states, pubnonces, tweaks), tweaks)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(request.node.name)


@pytest.fixture
def key23(rng: random.Random) -> Keyring:
    return deal(2, 3, rng)


### End to end


@pytest.mark.parametrize(
    ("t", "n", "ids"),
    [
        (2, 2, [0, 1]),
        (2, 3, [0, 1]),
        (2, 3, [2, 0]),
        (2, 3, [0, 1, 2]),
        (3, 5, [0, 2, 4]),
        (3, 5, [4, 3, 1, 0]),
        (1, 3, [1]),
    ],
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, list) else str(v),
)
def test_end_to_end_trusted_dealer(t: int, n: int, ids: list[int], rng: random.Random) -> None:
    key = deal(t, n, rng)
    for msg in (rng.randbytes(32), b"", b"not a 32-byte digest"):
        sig = sign_all(key, ids, msg, rng)
        assert PublicKeyXOnly(key.public_key[1:]).verify(sig, msg)


def test_end_to_end_with_bip32_and_taproot_tweaks(rng: random.Random) -> None:
    key = deal(3, 5, rng)
    key_x = key.public_key[1:]
    chain_code = rng.randbytes(32)
    child = derive_public(key.public_key, chain_code, [7, 0, 42])
    taproot = taproot_output_key(child.public_key[1:], None)
    merkle_root = rng.randbytes(32)
    cases: list[tuple[Tweaks, bytes]] = [
        ([(child.tweak, False)], child.public_key[1:]),
        ([(taproot_tweak(key_x), True)], taproot_output_key(key_x).output_key),
        ([(child.tweak, False), (taproot.tweak, True)], taproot.output_key),
        (
            [(child.tweak, False), (taproot_tweak(child.public_key[1:], merkle_root), True)],
            taproot_output_key(child.public_key[1:], merkle_root).output_key,
        ),
    ]
    for tweaks, expected_key in cases:
        assert tweaked_xonly(key, tweaks) == expected_key
        msg = rng.randbytes(32)
        sig = sign_all(key, [1, 3, 4], msg, rng, tweaks)
        assert PublicKeyXOnly(expected_key).verify(sig, msg)
    # BIP-32's plain tweak gives the child's full (plain) key, not only its x coordinate.
    ctx = thresh_pubkey_and_tweak(PlainPk(key.public_key), [child.tweak], [False])
    assert get_plain_pk(ctx) == child.public_key


def test_wrapper_matches_bip445_sign(key23: Keyring, rng: random.Random) -> None:
    """The rounds compute exactly the BIP's Sign / NonceAgg / PartialSigAgg."""
    msg = rng.randbytes(32)
    tweaks: Tweaks = [(rng.randbytes(31).rjust(32, b"\0"), True)]
    states, pubnonces = round1(key23, [2, 0], msg, b"sid", rng)
    secnonces = {i: bytearray(s.secnonce) for i, s in states.items()}
    psigs = round2(states, pubnonces, tweaks)
    ids = [2, 0]
    signers = SignersContext(
        3, 2, ids, [PlainPk(key23.public_shares[i]) for i in ids], PlainPk(key23.public_key)
    )
    aggnonce = nonce_agg([pubnonces[i] for i in ids])
    session = SessionContext(signers, aggnonce, [tweaks[0][0]], [True], msg)
    for i in ids:
        share = key23.secret_shares[i].to_bytes(32, "big")
        assert sign(secnonces[i], share, i, session) == psigs[i]
    expected = partial_sig_agg([psigs[i] for i in ids], session)
    assert aggregate(key23, msg, pubnonces, psigs, tweaks) == expected


### Misbehaving signers and coordinator


def _invalid_point_pubnonce(valid: bytes) -> bytes:
    # x = 5 is not on secp256k1 (5^3 + 7 is a quadratic non-residue mod p).
    return valid[:33] + b"\x02" + (5).to_bytes(32, "big")


def test_bad_pubnonce_is_blamed_by_signers_and_coordinator(
    key23: Keyring, rng: random.Random
) -> None:
    msg = rng.randbytes(32)
    states, pubnonces = round1(key23, [0, 1, 2], msg, b"sid", rng)
    pubnonces[2] = _invalid_point_pubnonce(pubnonces[2])
    with pytest.raises(InvalidContributionError) as exc:
        signer_round2(states[0], [0, 1, 2], pubnonces)
    assert culprits(exc.value) == (2,) and exc.value.contrib == "pubnonce"
    assert exc.value.signer_index == 2
    psigs = {i: bytes(32) for i in pubnonces}
    with pytest.raises(FaultyParticipantError) as exc2:
        aggregate(key23, msg, pubnonces, psigs)
    assert culprits(exc2.value) == (2,)
    # Malformed lengths are blamed the same way; several culprits are all named.
    pubnonces[0] = pubnonces[0][:65]
    with pytest.raises(ProtocolError) as exc3:
        signer_round2(states[1], [0, 1, 2], pubnonces)
    assert culprits(exc3.value) == (0, 2)


@pytest.mark.parametrize("verify_each", [True, False], ids=["verify-each", "aggregate-first"])
def test_bad_partial_signature_is_blamed(
    key23: Keyring, rng: random.Random, verify_each: bool
) -> None:
    msg = rng.randbytes(32)
    states, pubnonces = round1(key23, [0, 2], msg, b"sid", rng)
    psigs = round2(states, pubnonces)
    good = aggregate(key23, msg, pubnonces, psigs, verify_each=verify_each)
    assert PublicKeyXOnly(key23.public_key[1:]).verify(good, msg)
    for bad in (
        ((int.from_bytes(psigs[2], "big") + 1) % N).to_bytes(32, "big"),  # wrong value
        N.to_bytes(32, "big"),  # out of range
        psigs[2][:31],  # wrong length
        psigs[0],  # someone else's
    ):
        with pytest.raises(InvalidContributionError) as exc:
            aggregate(key23, msg, pubnonces, {0: psigs[0], 2: bad}, verify_each=verify_each)
        assert culprits(exc.value) == (2,) and exc.value.contrib == "psig"
    swapped = {0: psigs[2], 2: psigs[0]}  # same sum: only verify-each notices
    if verify_each:
        with pytest.raises(ProtocolError) as exc2:
            aggregate(key23, msg, pubnonces, swapped)
        assert culprits(exc2.value) == (0, 2)
    else:
        assert aggregate(key23, msg, pubnonces, swapped, verify_each=False) == good
    with pytest.raises(ProtocolError) as exc3:  # out of range and wrong value together
        aggregate(key23, msg, pubnonces, {0: psigs[2], 2: bytes(33)}, verify_each=verify_each)
    assert culprits(exc3.value) == (0, 2)


def test_canceling_partial_signatures(key23: Keyring, rng: random.Random) -> None:
    """Two signers shifting their psigs by +delta / -delta: each psig is invalid, the sum is not.

    Verifying every psig blames both; aggregate-first returns the (valid) signature.
    """
    msg = rng.randbytes(32)
    states, pubnonces = round1(key23, [0, 1], msg, b"sid", rng)
    psigs = round2(states, pubnonces)
    delta = rng.randrange(1, N)
    shifted = {
        0: ((int.from_bytes(psigs[0], "big") + delta) % N).to_bytes(32, "big"),
        1: ((int.from_bytes(psigs[1], "big") - delta) % N).to_bytes(32, "big"),
    }
    with pytest.raises(ProtocolError) as exc:
        aggregate(key23, msg, pubnonces, shifted)
    assert culprits(exc.value) == (0, 1)
    sig = aggregate(key23, msg, pubnonces, shifted, verify_each=False)
    assert sig == aggregate(key23, msg, pubnonces, psigs)
    assert PublicKeyXOnly(key23.public_key[1:]).verify(sig, msg)


def test_reused_state_raises_session_state_error(key23: Keyring, rng: random.Random) -> None:
    msg = rng.randbytes(32)
    states, pubnonces = round1(key23, [0, 1], msg, b"sid", rng)
    signer_round2(states[0], [0, 1], pubnonces)
    assert states[0].consumed and states[0].secnonce == bytearray(64)
    with pytest.raises(SessionStateError):
        signer_round2(states[0], [0, 1], pubnonces)
    # A failed round 2 consumes the state too: the nonce is never offered twice.
    with pytest.raises(InputError):
        signer_round2(states[1], [1], pubnonces)
    with pytest.raises(SessionStateError):
        signer_round2(states[1], [0, 1], pubnonces)


def test_reused_secnonce_in_bip445_sign(key23: Keyring, rng: random.Random) -> None:
    msg = rng.randbytes(32)
    states, pubnonces = round1(key23, [0, 1], msg, b"sid", rng)
    secnonce = bytearray(states[0].secnonce)
    signers = SignersContext(
        3, 2, [0, 1], [PlainPk(p) for p in key23.public_shares[:2]], PlainPk(key23.public_key)
    )
    session = SessionContext(signers, nonce_agg([pubnonces[0], pubnonces[1]]), [], [], msg)
    share = key23.secret_shares[0].to_bytes(32, "big")
    sign(secnonce, share, 0, session)
    with pytest.raises(SecnonceReuseError) as exc:
        sign(secnonce, share, 0, session)
    assert isinstance(exc.value, SessionStateError)
    with pytest.raises(InputError):  # not wipeable
        sign(bytes(states[1].secnonce), share, 0, session)  # type: ignore[arg-type]


def test_messages_of_another_session_are_rejected(key23: Keyring, rng: random.Random) -> None:
    msg = rng.randbytes(32)
    states_a, pubnonces_a = round1(key23, [0, 1], msg, b"session-A", rng)
    psigs_a = round2(states_a, pubnonces_a)
    # A pubnonce of session A replayed into session B: signer 1 notices its own nonce
    # was replaced and refuses; signer 0 signs, and the coordinator, verifying signer
    # 1's session-A partial signature against session B's values, blames signer 1.
    states_b, pubnonces_b = round1(key23, [0, 1], msg, b"session-B", rng)
    replayed = {0: pubnonces_b[0], 1: pubnonces_a[1]}
    with pytest.raises(FaultyCoordinatorError):
        signer_round2(states_b[1], [0, 1], replayed)
    psig0 = signer_round2(states_b[0], [0, 1], replayed)
    with pytest.raises(InvalidContributionError) as exc:
        aggregate(key23, msg, replayed, {0: psig0, 1: psigs_a[1]})
    assert culprits(exc.value) == (1,)
    # A partial signature of session A replayed into an honest session C.
    states_c, pubnonces_c = round1(key23, [0, 1], msg, b"session-C", rng)
    psigs_c = round2(states_c, pubnonces_c)
    with pytest.raises(InvalidContributionError) as exc2:
        aggregate(key23, msg, pubnonces_c, {0: psigs_c[0], 1: psigs_a[1]})
    assert culprits(exc2.value) == (1,)
    assert aggregate(key23, msg, pubnonces_c, psigs_c)


def test_session_id_is_bound_into_the_nonce(key23: Keyring) -> None:
    rand = bytes(range(32))
    args = (0, key23.secret_shares[0], key23.public_key, key23.public_shares, 2, b"m")
    _, n1 = signer_round1(*args, b"session-1", rand)
    _, n2 = signer_round1(*args, b"session-2", rand)
    _, n3 = signer_round1(*args, b"session-1", rand)
    assert n1 != n2 and n1 == n3


def test_self_check_catches_a_wrong_secret_share(key23: Keyring, rng: random.Random) -> None:
    msg = rng.randbytes(32)
    _, pubnonces = round1(key23, [0, 1], msg, b"sid", rng)
    wrong = (key23.secret_shares[0] + 1) % N  # not the share behind public_shares[0]
    faulty, pubnonces[0] = signer_round1(
        0, wrong, key23.public_key, key23.public_shares, 2, msg, b"sid", rng.randbytes(32)
    )
    with pytest.raises(InternalError):
        signer_round2(faulty, [0, 1], pubnonces)


def test_signer_refuses_bad_round2_input(key23: Keyring, rng: random.Random) -> None:
    msg = rng.randbytes(32)
    cases: list[tuple[list[int], dict[int, bytes] | None, Tweaks]] = [
        ([1, 2], None, []),  # own id missing
        ([0], None, []),  # fewer than t
        ([0, 0], None, []),  # duplicate
        ([0, 3], None, []),  # out of range
        ([0, 1], {0: b""}, []),  # pubnonce map does not match the ids
        ([0, 1], None, [(N.to_bytes(32, "big"), False)]),  # tweak out of range
    ]
    for ids, override, tweaks in cases:
        states, pubnonces = round1(key23, [0, 1], msg, b"sid", rng)
        with pytest.raises(InputError):
            signer_round2(states[0], ids, override if override is not None else pubnonces, tweaks)


def test_round1_rejects_bad_input(key23: Keyring) -> None:
    good = dict(
        party_id=0,
        secret_share=key23.secret_shares[0],
        public_key=key23.public_key,
        public_shares=key23.public_shares,
        threshold=2,
        msg=b"m",
        session_id=b"sid",
        rand=bytes(32),
    )
    for name, bad in [
        ("party_id", 3),
        ("secret_share", 0),
        ("secret_share", N),
        ("public_key", key23.public_key[:32]),
        ("threshold", 4),
        ("threshold", 0),
        ("session_id", b""),
        ("rand", bytes(31)),
    ]:
        with pytest.raises(InputError):
            signer_round1(**{**good, name: bad})  # type: ignore[arg-type]


def test_wrong_key_material_is_an_input_error(key23: Keyring, rng: random.Random) -> None:
    other = deal(2, 3, rng)
    msg = rng.randbytes(32)
    states, pubnonces = round1(key23, [0, 1], msg, b"sid", rng)
    psigs = round2(states, pubnonces)
    with pytest.raises(InputError, match="key material"):
        coordinator_aggregate(
            other.public_key, key23.public_shares, 2, msg, [0, 1], pubnonces, psigs
        )


def test_secrets_are_not_in_repr(key23: Keyring, rng: random.Random) -> None:
    states, _ = round1(key23, [0], b"m", b"sid", rng)
    text = repr(states[0])
    share = key23.secret_shares[0]
    assert str(share) not in text and f"{share:x}" not in text
    assert states[0].secnonce.hex() not in text and "secnonce" not in text
