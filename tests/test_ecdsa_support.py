"""Helpers for the DKLs23 tests and benchmark: a trusted dealer and an in-process runner.

Not tests themselves (pytest collects nothing here). The dealer stands in for
the DKG (tss/dkg, wired by the lead): it Shamir-shares a random key and returns
``tss.keygen.KeyMaterial`` objects, which satisfy ``tss.ecdsa.KeyMaterial``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from tss import ecdsa
from tss.curve import N, Point
from tss.ecdsa.sign import RecoverableSignature
from tss.keygen import KeyMaterial
from tss.shamir import eval_point, poly_eval

Messages = dict[int, dict[int, bytes]]
"""outbox[sender][recipient] = bytes."""


def rand32(label: str, *parts: int) -> bytes:
    """Deterministic test randomness (tests must be reproducible)."""
    return hashlib.sha256(label.encode() + b"".join(p.to_bytes(4, "big") for p in parts)).digest()


def dealer_keygen(threshold: int, parties: int, seed: int = 0) -> list[KeyMaterial]:
    """Trusted-dealer Shamir sharing of a fresh key (test stand-in for the DKG)."""
    coeffs = [int.from_bytes(rand32("coeff", seed, k), "big") % N or 1 for k in range(threshold)]
    public_key = Point.base_mul(coeffs[0]).to_bytes()
    secrets_ = [poly_eval(coeffs, eval_point(i)) for i in range(parties)]
    public_shares = tuple(Point.base_mul(x).to_bytes() for x in secrets_)
    chain_code = rand32("chain", seed)
    return [
        KeyMaterial(i, threshold, public_key, public_shares, secrets_[i], chain_code)
        for i in range(parties)
    ]


def deliver(outboxes: dict[int, dict[int, bytes]], recipient: int) -> dict[int, bytes]:
    """The messages addressed to ``recipient``, keyed by sender."""
    return {s: box[recipient] for s, box in outboxes.items() if recipient in box}


def run_setup(
    shares: Sequence[KeyMaterial],
    session: int = 0,
    tamper: Callable[[int, int, int, bytes], bytes] | None = None,
) -> list[ecdsa.EcdsaSetup]:
    """Run the setup ceremony for all parties in process; ``tamper(round, s, r, msg)``."""
    sid = rand32("setup-sid", session)
    tamper = tamper or (lambda _r, _s, _t, m: m)
    st1, out1 = {}, {}
    for k in shares:
        st1[k.party_id], box = ecdsa.setup_round1(k, sid, rand32("setup", session, k.party_id))
        out1[k.party_id] = {r: tamper(1, k.party_id, r, m) for r, m in box.items()}
    st2, out2 = {}, {}
    for i in st1:
        st2[i], box = ecdsa.setup_round2(st1[i], deliver(out1, i))
        out2[i] = {r: tamper(2, i, r, m) for r, m in box.items()}
    return [ecdsa.setup_finalize(st2[i], deliver(out2, i)) for i in sorted(st2)]


def run_sign(
    shares: Sequence[KeyMaterial],
    setups: Sequence[ecdsa.EcdsaSetup],
    signers: Sequence[int],
    digest: bytes,
    session: int = 0,
    tamper: Callable[[int, int, int, bytes], bytes] | None = None,
) -> dict[int, RecoverableSignature]:
    """Run the three signing rounds for ``signers``; every signer combines."""
    sid = rand32("sign-sid", session)
    tamper = tamper or (lambda _r, _s, _t, m: m)
    ids = list(signers)
    st1, out1 = {}, {}
    for i in ids:
        st1[i], box = ecdsa.sign_round1(
            setups[i], shares[i], ids, sid, rand32("sign", session, i), digest
        )
        out1[i] = {r: tamper(1, i, r, m) for r, m in box.items()}
    st2, out2 = {}, {}
    for i in ids:
        st2[i], box = ecdsa.sign_round2(st1[i], deliver(out1, i))
        out2[i] = {r: tamper(2, i, r, m) for r, m in box.items()}
    st3, out3 = {}, {}
    for i in ids:
        st3[i], msg = ecdsa.sign_round3(st2[i], deliver(out2, i), digest)
        out3[i] = {r: tamper(3, i, r, msg) for r in ids if r != i}
    return {i: ecdsa.sign_combine(st3[i], deliver(out3, i)) for i in ids}
