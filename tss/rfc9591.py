"""FROST as specified in RFC 9591, over any ``tss.group.Group``; the Ed25519 ciphersuite.

The first part follows the RFC's functions one each, named as in the RFC
(sections 4 and 5): ``nonce_generate``, ``commit``, ``compute_binding_factors``,
``compute_group_commitment``, ``compute_challenge``, ``sign``,
``verify_signature_share`` and ``aggregate``. The RFC's identifier of our
0-based participant ``i`` is ``i + 1`` (its Shamir evaluation point).

The second part is the per-signer sans-IO rounds the ceremonies run (the same
shape as ``tss.frost`` for BIP 445): ``signer_round1`` draws the two nonces from
the caller's fresh randomness, ``signer_round2`` checks every received
commitment and returns the signature share, and ``signer_aggregate`` /
``coordinator_aggregate`` aggregate, naming every signer whose commitment or
share is invalid.

``FROST_ED25519`` is FROST(Ed25519, SHA-512) (RFC 9591 section 6.1): its
signatures are RFC 8032 Ed25519 signatures over the message bytes.

Session binding: the RFC fixes every hash input (and RFC 8032 fixes the
challenge), so the session id is bound where the project adds messages: the
host-key-signed round-1 commitments (``tss.signing``) sign a context that
hashes the session id, key, message and signer set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, NoReturn, TypeVar

from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError

from tss.errors import (
    InputError,
    InternalError,
    InvalidEncodingError,
    ProtocolError,
    SessionStateError,
)
from tss.frost import ContribKind, InvalidContributionError
from tss.group import ED25519, EdPoint, Group
from tss.shamir import lagrange_coefficient
from tss.single_use import SingleUse, single_use

__all__ = [
    "Ciphersuite",
    "FROST_ED25519",
    "Commitment",
    "nonce_generate",
    "commit",
    "compute_binding_factors",
    "compute_group_commitment",
    "compute_challenge",
    "sign",
    "verify_signature_share",
    "aggregate",
    "KeyMaterial",
    "SignerState",
    "signer_round1",
    "signer_round2",
    "signer_aggregate",
    "coordinator_aggregate",
]

E = TypeVar("E")


@dataclass(frozen=True)
class Ciphersuite(Generic[E]):
    """An RFC 9591 ciphersuite: the group, the hash functions H1..H5 and a verifier.

    ``verify(public_key, msg, sig)`` is the ciphersuite's standard signature
    check (for Ed25519, RFC 8032), used on every aggregate before release.
    """

    name: str
    group: Group[E]
    h1: Callable[[bytes], int]
    h2: Callable[[bytes], int]
    h3: Callable[[bytes], int]
    h4: Callable[[bytes], bytes]
    h5: Callable[[bytes], bytes]
    verify: Callable[[bytes, bytes, bytes], bool]

    @property
    def commitment_size(self) -> int:
        """Bytes of a round-1 commitment: the hiding then the binding nonce commitment."""
        return 2 * self.group.element_size


### FROST(Ed25519, SHA-512), RFC 9591 section 6.1

_ED25519_CONTEXT = b"FROST-ED25519-SHA512-v1"


def _sha512_scalar(data: bytes) -> int:
    # SHA-512 output as a little-endian integer mod L (RFC 9591 section 6.1).
    return int.from_bytes(hashlib.sha512(data).digest(), "little") % ED25519.order


def _ed25519_verify(public_key: bytes, msg: bytes, sig: bytes) -> bool:
    # RFC 8032 section 5.1.7 verification (the cofactorless equation) by
    # libsodium, which also refuses a non-canonical S or public key and a
    # small-order R or public key; about 35 µs here, against 58 for OpenSSL's.
    # crypto_sign_open reads 32 key bytes and takes the first 64 as the signature.
    if len(public_key) != 32 or len(sig) != 64:
        return False
    try:
        sodium.crypto_sign_open(sig + msg, public_key)
    except BadSignatureError:
        return False
    return True


FROST_ED25519: Ciphersuite[EdPoint] = Ciphersuite(
    name="FROST(Ed25519, SHA-512)",
    group=ED25519,
    h1=lambda m: _sha512_scalar(_ED25519_CONTEXT + b"rho" + m),
    h2=_sha512_scalar,  # no context string: the RFC 8032 challenge
    h3=lambda m: _sha512_scalar(_ED25519_CONTEXT + b"nonce" + m),
    h4=lambda m: hashlib.sha512(_ED25519_CONTEXT + b"msg" + m).digest(),
    h5=lambda m: hashlib.sha512(_ED25519_CONTEXT + b"com" + m).digest(),
    verify=_ed25519_verify,
)


### RFC 9591 sections 4 and 5


class Commitment(NamedTuple, Generic[E]):
    """One signer's entry of the commitment list: identifier, hiding D and binding E."""

    identifier: int
    hiding: E
    binding: E


def nonce_generate(suite: Ciphersuite[E], random_bytes: bytes, secret: int) -> int:
    """Section 4.1: ``H3(random_bytes || SerializeScalar(secret))`` with 32 fresh random bytes."""
    if len(random_bytes) != 32:
        raise InputError("nonce randomness must be 32 bytes")
    return suite.h3(random_bytes + suite.group.encode_scalar(secret))


def commit(
    suite: Ciphersuite[E], secret: int, hiding_rand: bytes, binding_rand: bytes
) -> tuple[tuple[int, int], tuple[E, E]]:
    """Section 5.1 ``commit``: the nonces (d, e) and their commitments (D, E)."""
    g = suite.group
    d = nonce_generate(suite, hiding_rand, secret)
    e = nonce_generate(suite, binding_rand, secret)
    return (d, e), (g.base_mul(d), g.base_mul(e))


def _encode_commitment_list(suite: Ciphersuite[E], commitments: Sequence[Commitment[E]]) -> bytes:
    # Section 4.3 encode_group_commitment_list.
    g = suite.group
    return b"".join(
        g.encode_scalar(c.identifier) + g.encode(c.hiding) + g.encode(c.binding)
        for c in commitments
    )


def compute_binding_factors(
    suite: Ciphersuite[E], group_public_key: E, commitments: Sequence[Commitment[E]], msg: bytes
) -> dict[int, int]:
    """Section 4.4: ``{identifier: rho}`` for a commitment list sorted by identifier."""
    return _binding_factors(
        suite,
        suite.group.encode(group_public_key),
        _encode_commitment_list(suite, commitments),
        [c.identifier for c in commitments],
        msg,
    )


def _binding_factors(
    suite: Ciphersuite[E],
    group_public_key: bytes,
    encoded_commitments: bytes,
    identifiers: Sequence[int],
    msg: bytes,
) -> dict[int, int]:
    # Section 4.4 on the encoded key and commitment list.
    prefix = group_public_key + suite.h4(msg) + suite.h5(encoded_commitments)
    return {i: suite.h1(prefix + suite.group.encode_scalar(i)) for i in identifiers}


def compute_group_commitment(
    suite: Ciphersuite[E], commitments: Sequence[Commitment[E]], binding_factors: Mapping[int, int]
) -> E:
    """Section 4.5: ``R = sum(D_i + rho_i * E_i)``."""
    g = suite.group
    return g.sum(
        g.add(c.hiding, g.mul(c.binding, binding_factors[c.identifier])) for c in commitments
    )


def compute_challenge(
    suite: Ciphersuite[E], group_commitment: E, group_public_key: E, msg: bytes
) -> int:
    """Section 4.6: ``H2(SerializeElement(R) || SerializeElement(PK) || msg)``."""
    g = suite.group
    return suite.h2(g.encode(group_commitment) + g.encode(group_public_key) + msg)


def _lagrange(suite: Ciphersuite[E], identifiers: Sequence[int], identifier: int) -> int:
    # Section 4.2 derive_interpolating_value; identifier k is our participant k - 1.
    return lagrange_coefficient(
        [i - 1 for i in identifiers], identifier - 1, order=suite.group.order
    )


class _Session(NamedTuple, Generic[E]):
    """What every signer and the aggregator derive from the commitment list."""

    identifiers: tuple[int, ...]
    binding_factors: dict[int, int]
    group_commitment: E
    challenge: int


def _session(
    suite: Ciphersuite[E], group_public_key: E, commitments: Sequence[Commitment[E]], msg: bytes
) -> _Session[E]:
    ordered = tuple(sorted(commitments, key=lambda c: c.identifier))
    rho = compute_binding_factors(suite, group_public_key, ordered, msg)
    r = compute_group_commitment(suite, ordered, rho)
    identifiers = tuple(c.identifier for c in ordered)
    return _Session(identifiers, rho, r, compute_challenge(suite, r, group_public_key, msg))


def sign(
    suite: Ciphersuite[E],
    identifier: int,
    secret_share: int,
    group_public_key: E,
    nonce: tuple[int, int],
    msg: bytes,
    commitments: Sequence[Commitment[E]],
) -> int:
    """Section 5.2 ``sign``: ``z_i = d_i + e_i * rho_i + lambda_i * s_i * c``."""
    sess = _session(suite, group_public_key, commitments, msg)
    return _sign_in_session(suite, identifier, secret_share, nonce, sess)


def _sign_in_session(
    suite: Ciphersuite[E],
    identifier: int,
    secret_share: int,
    nonce: tuple[int, int],
    sess: _Session[E],
) -> int:
    q = suite.group.order
    lam = _lagrange(suite, sess.identifiers, identifier)
    d, e = nonce
    return (d + e * sess.binding_factors[identifier] + lam * secret_share * sess.challenge) % q


def verify_signature_share(
    suite: Ciphersuite[E],
    identifier: int,
    public_share: E,
    commitment: Commitment[E],
    sig_share: int,
    sess: _Session[E],
) -> bool:
    """Section 5.4: ``z_i * G == D_i + rho_i * E_i + (c * lambda_i) * PK_i``."""
    g = suite.group
    lam = _lagrange(suite, sess.identifiers, identifier)
    rho = sess.binding_factors[identifier]
    expected = g.sum(
        [
            commitment.hiding,
            g.mul(commitment.binding, rho),
            g.mul(public_share, sess.challenge * lam % g.order),
        ]
    )
    return g.base_mul(sig_share) == expected


def aggregate(suite: Ciphersuite[E], group_commitment: E, sig_shares: Sequence[int]) -> bytes:
    """Section 5.3 ``aggregate``: ``SerializeElement(R) || SerializeScalar(sum z_i)``."""
    g = suite.group
    return g.encode(group_commitment) + g.encode_scalar(sum(sig_shares) % g.order)


### Per-signer sans-IO rounds


@dataclass(frozen=True)
class KeyMaterial:
    """The public half of a keyring as the signers hold it.

    Attributes:
        public_key: the encoded group public key.
        public_shares: every party's encoded public share, by 0-based party id.
        threshold: t.
    """

    public_key: bytes
    public_shares: tuple[bytes, ...]
    threshold: int


@single_use
class SignerState(SingleUse):
    """A signer's secret nonces between round 1 and round 2; single use.

    ``signer_round2`` wipes the nonces in place before anything else, so a second
    call raises ``SessionStateError``. Secrets are left out of ``repr``.
    """

    suite: Ciphersuite[Any]
    party_id: int
    key: KeyMaterial
    msg: bytes
    commitment: bytes
    nonce: bytearray = field(repr=False)
    secret_share: int = field(repr=False)
    _session: list[tuple[_Session[Any], dict[int, bytes]]] = field(
        default_factory=list, repr=False, compare=False
    )

    @property
    def consumed(self) -> bool:
        """True once round 2 has run (the nonces are all zeros)."""
        return not any(self.nonce)


def _check_key(suite: Ciphersuite[E], key: KeyMaterial) -> None:
    n = len(key.public_shares)
    if not 1 <= key.threshold <= n:
        raise InputError("need 1 <= threshold <= len(public_shares)")
    size = suite.group.element_size
    if len(key.public_key) != size or any(len(p) != size for p in key.public_shares):
        raise InputError(f"{suite.group.name} keys and public shares must be {size} bytes")


def signer_round1(
    suite: Ciphersuite[E],
    party_id: int,
    secret_share: int,
    key: KeyMaterial,
    msg: bytes,
    rand: bytes,
) -> tuple[SignerState, bytes]:
    """Round 1 for one signer: RFC 9591 ``commit`` with 64 fresh random bytes.

    Arguments:
        suite: the ciphersuite (``FROST_ED25519``).
        party_id: this signer's 0-based party id.
        secret_share: its secret share, 0 < s < q.
        key: the keyring's public key material.
        msg: the message to sign (any bytes).
        rand: 64 fresh bytes from a CSPRNG (hiding then binding randomness).

    Returns:
        ``(state, commitment)``: the single-use state and the encoded D || E to send.

    Raises:
        InputError: a malformed argument.
    """
    _check_key(suite, key)
    if not 0 <= party_id < len(key.public_shares):
        raise InputError("party_id out of range")
    if not 0 < secret_share < suite.group.order:
        raise InputError("secret share out of range")
    if not isinstance(rand, bytes) or len(rand) != 64:
        raise InputError("rand must be 64 bytes")
    if not isinstance(msg, bytes):
        raise InputError("msg must be bytes")
    g = suite.group
    (d, e), (big_d, big_e) = commit(suite, secret_share, rand[:32], rand[32:])
    state = SignerState(
        suite,
        party_id,
        key,
        msg,
        g.encode(big_d) + g.encode(big_e),
        bytearray(g.encode_scalar(d) + g.encode_scalar(e)),
        secret_share,
    )
    return state, state.commitment


def _blame(ids: Sequence[int], bad: Sequence[int], kind: ContribKind) -> ProtocolError:
    # "pubnonce" is a round-1 commitment, "psig" a signature share (as tss.frost).
    if len(bad) == 1:
        return InvalidContributionError(list(ids).index(bad[0]), bad[0], kind)
    return ProtocolError(f"invalid {kind} from several signers", bad)


def _decode_commitments(
    suite: Ciphersuite[E], signer_ids: Sequence[int], commitments: Mapping[int, bytes]
) -> dict[int, Commitment[E]]:
    """Every signer's commitment decoded (RFC 9591 DeserializeElement); culprits named."""
    g = suite.group
    size = g.element_size
    out: dict[int, Commitment[E]] = {}
    bad = []
    for i in signer_ids:
        data = commitments[i]
        try:
            if len(data) != 2 * size:
                raise InvalidEncodingError("wrong commitment length")
            out[i] = Commitment(i + 1, g.decode(data[:size]), g.decode(data[size:]))
        except InvalidEncodingError:
            bad.append(i)
    if bad:
        raise _blame(signer_ids, bad, "pubnonce")
    return out


def _wire_session(
    suite: Ciphersuite[E],
    public_key: bytes,
    signer_ids: Sequence[int],
    commitments: Mapping[int, bytes],
    msg: bytes,
) -> _Session[E]:
    """The session of the commitment list as received, every entry checked, culprits named.

    Every hiding commitment D_i is decoded (section 6.1 DeserializeElement);
    every binding commitment E_i is checked by the multiplication rho_i * E_i
    that the group commitment (section 4.5) needs anyway (``Group.decode_mul``
    refuses exactly what DeserializeElement refuses), so no point costs two
    checks. On any invalid entry, every commitment is decoded to name every culprit.

    Arguments:
        public_key: the encoded group public key (the caller's, decoded here).
        signer_ids: the sorted 0-based signer ids, each with an entry in ``commitments``.
    """
    g = suite.group
    size = g.element_size

    def blame() -> NoReturn:
        _decode_commitments(suite, signer_ids, commitments)  # raises, naming culprits
        raise InternalError("an invalid commitment decoded")

    hiding = {}
    for i in signer_ids:
        data = commitments[i]
        try:
            if len(data) != 2 * size:
                raise InvalidEncodingError("wrong commitment length")
            hiding[i] = g.decode(data[:size])
        except InvalidEncodingError:
            blame()
    pk = g.decode(public_key)
    encoded = b"".join(g.encode_scalar(i + 1) + commitments[i] for i in signer_ids)  # section 4.3
    identifiers = tuple(i + 1 for i in signer_ids)
    rho = _binding_factors(suite, g.encode(pk), encoded, identifiers, msg)
    terms = []
    for i in signer_ids:
        try:
            terms.append(g.add(hiding[i], g.decode_mul(commitments[i][size:], rho[i + 1])))
        except InvalidEncodingError:
            blame()
    r = g.sum(terms)
    return _Session(identifiers, rho, r, compute_challenge(suite, r, pk, msg))


def _check_signers(
    key: KeyMaterial, signer_ids: Sequence[int], commitments: Mapping[int, bytes]
) -> list[int]:
    ids = sorted(signer_ids)
    n = len(key.public_shares)
    if len(set(ids)) != len(ids) or not all(0 <= i < n for i in ids):
        raise InputError("signer ids must be distinct party ids")
    if len(ids) < key.threshold:
        raise InputError(f"need at least {key.threshold} signers")
    if not isinstance(commitments, Mapping) or set(commitments) != set(ids):
        raise InputError("commitments must have exactly one entry per signer id")
    return ids


def signer_round2(
    state: SignerState, signer_ids: Sequence[int], commitments: Mapping[int, bytes]
) -> bytes:
    """Round 2 for one signer: its signature share (RFC 9591 section 5.2).

    Consumes ``state`` first (its nonces are wiped even when this call fails).

    Raises:
        SessionStateError: ``state`` was already used.
        InputError: malformed ids or commitments map, or our id is missing.
        ProtocolError: our own commitment was replaced, or other signers'
            commitments are invalid (culprits named).
    """
    if state.consumed:
        raise SessionStateError("this signer state was already used")
    suite = state.suite
    g = suite.group
    nonce = (g.decode_scalar(bytes(state.nonce[:32])), g.decode_scalar(bytes(state.nonce[32:])))
    state.nonce[:] = bytes(len(state.nonce))
    ids = _check_signers(state.key, signer_ids, commitments)
    me = state.party_id
    if me not in ids:
        raise InputError("the signer's id must be among the signer ids")
    if commitments[me] != state.commitment:
        raise ProtocolError("our own commitment was replaced")
    sess = _wire_session(suite, state.key.public_key, ids, commitments, state.msg)
    state._session.append((sess, {i: commitments[i] for i in ids}))
    # No self-check of the share (RFC 9591 section 5.2 has none, nor frost-core):
    # the nonces are fresh random, so a faulty share leaks nothing, and every
    # aggregate is verified before it is released.
    z = _sign_in_session(suite, me + 1, state.secret_share, nonce, sess)
    return g.encode_scalar(z)


def _aggregate_shares(
    suite: Ciphersuite[E],
    key: KeyMaterial,
    msg: bytes,
    sess: _Session[E],
    commitments: Mapping[int, bytes],
    shares: Mapping[int, bytes],
    verify_each: bool,
) -> bytes:
    """``commitments``: the session's list, every entry already checked by ``_wire_session``."""
    g = suite.group
    ids = sorted(commitments)
    if not isinstance(shares, Mapping) or set(shares) != set(ids):
        raise InputError("signature shares must have exactly one entry per signer id")
    scalars: dict[int, int] = {}
    bad = set()
    for i in ids:
        try:
            scalars[i] = g.decode_scalar(shares[i])
        except InvalidEncodingError:
            bad.add(i)
    if not verify_each and not bad:
        sig = aggregate(suite, sess.group_commitment, list(scalars.values()))
        if suite.verify(key.public_key, msg, sig):
            return sig
    # Section 5.4 for every signer, to name every culprit.
    decoded = _decode_commitments(suite, ids, commitments)
    for i in ids:
        if i not in bad and not verify_signature_share(
            suite, i + 1, g.decode(key.public_shares[i]), decoded[i], scalars[i], sess
        ):
            bad.add(i)
    if bad:
        raise _blame(ids, sorted(bad), "psig")
    sig = aggregate(suite, sess.group_commitment, list(scalars.values()))
    if not suite.verify(key.public_key, msg, sig):
        raise InternalError("aggregate signature does not verify")
    return sig


def signer_aggregate(state: SignerState, shares: Mapping[int, bytes]) -> bytes:
    """A signer's aggregation with its round-2 session: the signature, always verified.

    Aggregates first and checks shares one by one only when the aggregate fails
    to verify; culprits are named on every abort.

    Raises:
        SessionStateError: round 2 has not run with this state.
        InputError, ProtocolError, InternalError: as ``coordinator_aggregate``.
    """
    if not state._session:
        raise SessionStateError("signer_aggregate needs the state after signer_round2")
    sess, commitments = state._session[0]
    return _aggregate_shares(state.suite, state.key, state.msg, sess, commitments, shares, False)


def coordinator_aggregate(
    suite: Ciphersuite[E],
    key: KeyMaterial,
    msg: bytes,
    signer_ids: Sequence[int],
    commitments: Mapping[int, bytes],
    shares: Mapping[int, bytes],
    *,
    verify_each: bool = True,
) -> bytes:
    """Check the commitments and shares (RFC 9591 section 5.4), blame, aggregate, verify.

    Returns:
        The signature (for Ed25519: 64 bytes, RFC 8032).

    Raises:
        InputError: malformed key material, ids or maps.
        ProtocolError: invalid commitments, else invalid shares; culprits named.
        InternalError: the aggregate does not verify (self-check).
    """
    _check_key(suite, key)
    ids = _check_signers(key, signer_ids, commitments)
    sess: _Session[E] = _wire_session(suite, key.public_key, ids, commitments, msg)
    return _aggregate_shares(suite, key, msg, sess, commitments, shares, verify_each)
