"""ChillDKG sharing an Ed25519 key: full sessions, validation of every received point,
blame, and separation from secp256k1 sessions.

Sessions use deterministic host keys and randomness so failures reproduce. The
threshold key and proofs of possession are checked by libsodium (PyNaCl).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest
from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from tss import dkg
from tss.dkg.pop import ed25519_pop_prove, ed25519_pop_verify
from tss.dkg.vss import VSSCommitment
from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    InputError,
    UnknownFaultyParticipantOrCoordinatorError,
    culprits,
)
from tss.group import ED25519, SECP256K1, L
from tss.keygen import Keygen
from tss.shamir import lagrange_coefficient


def det(label: str, i: int = 0) -> bytes:
    return hashlib.sha256(f"ed25519-dkg/{label}/{i}".encode()).digest()


def host_keys(label: str, n: int) -> list[bytes]:
    return [det(f"{label}/host", i) for i in range(n)]


def params(label: str, t: int, n: int, group: object = ED25519) -> dkg.SessionParams:
    keys = host_keys(label, n)
    return dkg.SessionParams([dkg.hostpubkey_gen(k) for k in keys], t, group)  # type: ignore[arg-type]


def step1(label: str, p: dkg.SessionParams) -> tuple[list[dkg.ParticipantState1], list[bytes]]:
    states, msgs = [], []
    for i, key in enumerate(host_keys(label, p.n)):
        state, msg = dkg.participant_step1(key, p, det(f"{label}/rand", i))
        states.append(state)
        msgs.append(msg)
    return states, msgs


def run_secp(label: str, t: int, n: int) -> tuple[list[dkg.DKGOutput], dkg.DKGOutput, bytes]:
    return run(label, t, n, SECP256K1)


def run(
    label: str, t: int, n: int, group: object = ED25519
) -> tuple[list[dkg.DKGOutput], dkg.DKGOutput, bytes]:
    p = params(label, t, n, group)
    states1, pmsgs1 = step1(label, p)
    cstate, cmsg1 = dkg.coordinator_step1(pmsgs1, p)
    states2, pmsgs2 = [], []
    for i, key in enumerate(host_keys(label, n)):
        state2, pmsg2 = dkg.participant_step2(key, states1[i], cmsg1, det(f"{label}/aux", i))
        states2.append(state2)
        pmsgs2.append(pmsg2)
    cmsg2, coutput, crec = dkg.coordinator_finalize(cstate, pmsgs2)
    outputs = []
    for state2 in states2:
        output, rec = dkg.participant_finalize(state2, cmsg2)
        assert rec == crec
        outputs.append(output)
    return outputs, coutput, crec


# Points libsodium's validation refuses, each a distinct fault.
SMALL_ORDER = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
IDENTITY = b"\x01" + bytes(31)
NON_CANONICAL = (2**255 - 19 + 1).to_bytes(32, "little")  # y = p + 1, i.e. y = 1 unreduced
NOT_ON_CURVE = (2).to_bytes(32, "little")  # y = 2: (y^2 - 1) / (d y^2 + 1) is no square


def off_subgroup(point: bytes) -> bytes:
    """``point`` plus a point of order 8: on the curve, outside the prime-order subgroup."""
    return sodium.crypto_core_ed25519_add(point, SMALL_ORDER)


### Full sessions


@pytest.mark.parametrize(("t", "n"), [(1, 1), (2, 3), (3, 5), (5, 9)], ids=str)
def test_full_session_shares_an_ed25519_key(t: int, n: int) -> None:
    outputs, coutput, crec = run(f"full/{t}/{n}", t, n)
    assert {o.thresh_pk for o in outputs} == {coutput.thresh_pk}
    assert {o.pubshares for o in outputs} == {coutput.pubshares}
    assert len(coutput.thresh_pk) == 32 and all(len(p) == 32 for p in coutput.pubshares)
    assert len(crec) == 4 + 32 * t + 162 * n
    for i, out in enumerate(outputs):
        assert out.secshare is not None and len(out.secshare) == 32
        secshare = ED25519.decode_scalar(out.secshare)
        assert ED25519.encode(ED25519.base_mul(secshare)) == out.pubshares[i]
    # No Taproot tweak: t shares interpolate to the discrete log of the key itself.
    rng = random.Random(f"{t}/{n}")
    subset = rng.sample(range(n), t)
    shares = {i: ED25519.decode_scalar(outputs[i].secshare or b"") for i in subset}
    secret = sum(lagrange_coefficient(subset, i, order=L) * s for i, s in shares.items()) % L
    assert ED25519.encode(ED25519.base_mul(secret)) == coutput.thresh_pk
    # The key is a valid RFC 8032 public key: a signature by its scalar verifies in libsodium.
    r = rng.randrange(1, L)
    big_r = ED25519.encode(ED25519.base_mul(r))
    msg = b"a Solana message"
    e = int.from_bytes(hashlib.sha512(big_r + coutput.thresh_pk + msg).digest(), "little") % L
    sig = big_r + ED25519.encode_scalar((r + e * secret) % L)
    VerifyKey(coutput.thresh_pk).verify(msg, sig)


def test_recovery_reproduces_the_outputs() -> None:
    outputs, coutput, crec = run("recover", 2, 3)
    for i, key in enumerate(host_keys("recover", 3)):
        recovered, p = dkg.participant_recover(key, crec, ED25519)
        assert p == params("recover", 2, 3)
        assert (recovered.secshare, recovered.thresh_pk, recovered.pubshares) == (
            outputs[i].secshare,
            outputs[i].thresh_pk,
            outputs[i].pubshares,
        )
    recovered, _ = dkg.coordinator_recover(crec, ED25519)
    assert (recovered.secshare, recovered.thresh_pk) == (None, coutput.thresh_pk)


def test_message_lengths() -> None:
    p = params("lengths", 3, 4)
    _, pmsgs1 = step1("lengths", p)
    assert all(len(m) == dkg.pmsg1_len(3, 4, ED25519) == 32 * 3 + 32 * 4 + 97 for m in pmsgs1)
    _, cmsg1 = dkg.coordinator_step1(pmsgs1, p)
    assert len(cmsg1) == dkg.cmsg1_len(3, 4, ED25519) == 161 * 4 + 32 * 2
    cinvs = dkg.coordinator_investigate(pmsgs1, p)
    assert all(len(c) == dkg.cinv_len(4, ED25519) == 64 * 4 for c in cinvs)


### Proofs of possession


def test_proof_of_possession_is_an_rfc8032_signature_bound_to_the_index() -> None:
    secret = random.Random(1).randrange(1, L)
    pubkey = ED25519.base_mul(secret)
    pop = ed25519_pop_prove(secret, pubkey, 3, det("pop"))
    message = b"shardkeep/ed25519 BIP DKG/pop message" + (3).to_bytes(4, "big")
    VerifyKey(ED25519.encode(pubkey)).verify(message, pop)  # libsodium
    assert ed25519_pop_verify(pop, pubkey, 3)
    assert not ed25519_pop_verify(pop, pubkey, 4)
    assert not ed25519_pop_verify(pop, ED25519.base_mul(secret + 1), 3)
    assert not ed25519_pop_verify(pop, ED25519.identity(), 3)
    s = int.from_bytes(pop[32:], "little")
    assert not ed25519_pop_verify(pop[:32] + (s + L).to_bytes(32, "little"), pubkey, 3)
    with pytest.raises(BadSignatureError):
        VerifyKey(ED25519.encode(pubkey)).verify(message[:-1] + b"\x04", pop)


def test_a_bad_proof_of_possession_names_its_participant() -> None:
    """Attack: participant 1 sends a proof of possession that does not verify (it
    cannot prove it knows its secret: a rogue-key attempt). Every other participant
    names participant 1."""
    t, n = 2, 3
    p = params("badpop", t, n)
    states1, pmsgs1 = step1("badpop", p)
    forged = bytearray(pmsgs1[1])
    forged[32 * t + 40] ^= 1  # inside the proof's s
    pmsgs1[1] = bytes(forged)
    _, cmsg1 = dkg.coordinator_step1(pmsgs1, p)
    keys = host_keys("badpop", n)
    for victim in (0, 2):
        with pytest.raises(dkg.FaultyParticipantOrCoordinatorError) as info:
            dkg.participant_step2(keys[victim], states1[victim], cmsg1, det("aux"))
        assert info.value.participant == 1


def test_a_rogue_key_summing_to_the_identity_is_caught_by_the_coordinator() -> None:
    """Attack: participant 1 commits to minus participant 0's secret commitment, so
    the key would be one it chose. It cannot prove possession; the coordinator
    names it when the commitments cancel."""
    t, n = 2, 2
    p = params("rogue", t, n)
    _, pmsgs1 = step1("rogue", p)
    minus_c0 = ED25519.encode(ED25519.mul(ED25519.decode(pmsgs1[0][:32]), L - 1))
    pmsgs1[1] = minus_c0 + pmsgs1[1][32:]
    with pytest.raises(FaultyParticipantError) as info:
        dkg.coordinator_step1(pmsgs1, p)
    assert info.value.participant == 1


### Every received point is validated


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda c: SMALL_ORDER, id="small-order"),
        pytest.param(lambda c: NON_CANONICAL, id="non-canonical"),
        pytest.param(off_subgroup, id="outside-prime-order-subgroup"),
        pytest.param(lambda c: NOT_ON_CURVE, id="not-on-curve"),
    ],
)
@pytest.mark.parametrize("position", [0, 1], ids=["commitment-to-secret", "commitment-1"])
def test_an_invalid_commitment_point_names_its_sender(
    bad: Callable[[bytes], bytes], position: int
) -> None:
    t, n = 2, 3
    p = params("badpoint", t, n)
    _, pmsgs1 = step1("badpoint", p)
    msg = bytearray(pmsgs1[2])
    at = 32 * position
    msg[at : at + 32] = bad(bytes(msg[at : at + 32]))
    pmsgs1[2] = bytes(msg)
    with pytest.raises(FaultyParticipantError) as info:
        dkg.coordinator_step1(pmsgs1, p)
    assert culprits(info.value) == (2,)


def test_an_identity_commitment_to_the_secret_names_its_sender() -> None:
    p = params("identity", 2, 3)
    _, pmsgs1 = step1("identity", p)
    pmsgs1[1] = IDENTITY + pmsgs1[1][32:]
    with pytest.raises(FaultyParticipantError) as info:
        dkg.coordinator_step1(pmsgs1, p)
    assert culprits(info.value) == (1,)


@pytest.mark.parametrize("bad", [SMALL_ORDER, NON_CANONICAL], ids=["small-order", "non-canonical"])
def test_an_invalid_point_from_the_coordinator_is_blamed_on_it(bad: bytes) -> None:
    t, n = 2, 3
    p = params("badcoord", t, n)
    states1, pmsgs1 = step1("badcoord", p)
    _, cmsg1 = dkg.coordinator_step1(pmsgs1, p)
    forged = bad + cmsg1[32:]  # participant 0's commitment to its secret
    with pytest.raises(FaultyCoordinatorError):
        dkg.participant_step2(host_keys("badcoord", n)[1], states1[1], forged, det("aux"))


def test_an_out_of_range_encrypted_share_is_blamed_on_its_sender() -> None:
    t, n = 2, 3
    p = params("range", t, n)
    _, pmsgs1 = step1("range", p)
    pmsgs1[0] = pmsgs1[0][: -32 * n] + L.to_bytes(32, "little") + pmsgs1[0][-32 * (n - 1) :]
    with pytest.raises(FaultyParticipantError) as info:
        dkg.coordinator_step1(pmsgs1, p)
    assert culprits(info.value) == (0,)


### Blame by investigation


def test_a_bad_encrypted_share_is_traced_to_its_sender() -> None:
    """Attack: participant 2 encrypts a wrong share to participant 0 (still a valid
    scalar). Participant 0's check fails; the investigation names participant 2."""
    t, n = 2, 3
    p = params("badshare", t, n)
    states1, pmsgs1 = step1("badshare", p)
    msg = bytearray(pmsgs1[2])
    msg[len(msg) - 32 * n] ^= 1  # the lowest byte of the share for participant 0
    pmsgs1[2] = bytes(msg)
    _, cmsg1 = dkg.coordinator_step1(pmsgs1, p)
    with pytest.raises(UnknownFaultyParticipantOrCoordinatorError) as step2_error:
        dkg.participant_step2(host_keys("badshare", n)[0], states1[0], cmsg1, det("aux"))
    cinv = dkg.coordinator_investigate(pmsgs1, p)[0]
    with pytest.raises(dkg.FaultyParticipantOrCoordinatorError) as info:
        dkg.participant_investigate(step2_error.value, cinv)
    assert info.value.participant == 2


### Separation from secp256k1 sessions


def test_the_group_is_bound_into_params_hash_and_certificates() -> None:
    """Replay: the same host keys and threshold give different parameter hashes, and
    recovery data of an edwards25519 session is refused as a secp256k1 one (and the
    reverse): the certificate signs a different CertEq prefix."""
    ed = params("bind", 2, 3, ED25519)
    secp = params("bind", 2, 3, SECP256K1)
    assert dkg.params_hash(ed) != dkg.params_hash(secp)
    _, _, ed_rec = run("bind", 2, 3)
    key = host_keys("bind", 3)[0]
    with pytest.raises(dkg.RecoveryDataError):
        dkg.participant_recover(key, ed_rec, SECP256K1)
    with pytest.raises(dkg.RecoveryDataError):
        dkg.coordinator_recover(ed_rec, SECP256K1)
    _, _, secp_rec = run_secp("bind-secp", 2, 3)
    with pytest.raises(dkg.RecoveryDataError):
        dkg.coordinator_recover(secp_rec, ED25519)


def test_keygen_contexts_differ_per_scheme() -> None:
    """A signed round-1 message of one scheme's keygen is no evidence in another's:
    the context each signs differs even for the same session id and host keys."""
    keys = host_keys("ctx", 3)
    pubkeys = [dkg.hostpubkey_gen(k) for k in keys]
    contexts = {
        Keygen(scheme, keys[0], pubkeys, 2, random.randbytes, session_id=b"sid").context
        for scheme in ("bip340", "ecdsa-secp256k1", "ed25519")
    }
    assert len(contexts) == 3


def test_a_group_without_a_dkg_is_refused() -> None:
    with pytest.raises(InputError):
        dkg.SessionParams([dkg.hostpubkey_gen(det("x"))], 1, object())  # type: ignore[arg-type]


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=["ed25519", "secp256k1"])
def test_step2_as_its_own_coordinator_matches_step2_on_the_bytes(group: object) -> None:
    """A party that aggregated the first messages itself skips decoding its own
    coordinator message: the signature and state are those of the bytes path."""
    p = params("own-coordinator", 2, 3, group)
    key = host_keys("own-coordinator", 3)[1]
    (states_a, pmsgs1), (states_b, _) = step1("own-coordinator", p), step1("own-coordinator", p)
    cstate, cmsg1 = dkg.coordinator_step1(pmsgs1, p)
    state_a, sig_a = dkg.participant_step2(key, states_a[1], cmsg1, det("aux"))
    state_b, sig_b = dkg.participant_step2_as_coordinator(key, states_b[1], cstate, det("aux"))
    assert sig_a == sig_b
    assert (state_a.eq_input, state_a.thresh_pk, state_a.pubshares) == (
        state_b.eq_input,
        state_b.thresh_pk,
        state_b.pubshares,
    )
    other = params("another-session", 2, 3, group)
    other_cstate, _ = dkg.coordinator_step1(step1("another-session", other)[1], other)
    with pytest.raises(InputError):
        dkg.participant_step2_as_coordinator(
            key, step1("own-coordinator", p)[0][1], other_cstate, det("aux")
        )


@pytest.mark.parametrize(("t", "n"), [(2, 3), (3, 5), (7, 9), (32, 32)], ids=str)
def test_pubshares_by_forward_differences_match_direct_evaluation(t: int, n: int) -> None:
    """Small public factors are applied by additions, larger ones by multiplication
    (t = 32 has forward-difference factors far above 255); identities included."""
    rng = random.Random(t * 100 + n)
    points = [ED25519.base_mul(rng.randrange(1, L)) for _ in range(t)]
    points[t // 2] = ED25519.identity()
    com = VSSCommitment(tuple(points), ED25519)
    assert com.pubshares(n) == [com.pubshare(i) for i in range(n)]
    x = n  # participant n - 1
    direct = ED25519.sum(ED25519.mul(p, pow(x, j, L)) for j, p in enumerate(points))
    assert com.pubshare(n - 1) == direct
