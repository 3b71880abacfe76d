"""FROST threshold signing of BIP-340 Schnorr signatures, as specified in BIP 445 (FROST3).

The first part follows the BIP's algorithms one function each, in the BIP's
notation (``nonce_gen``, ``nonce_agg``, ``get_session_values``, ``sign``,
``partial_sig_verify``, ``partial_sig_agg``, ``deterministic_sign``), and passes
its test vectors. The last section is the sans-IO per-signer wrapper used by the
service and ``tss.local``: ``signer_round1`` -> ``signer_round2`` ->
``coordinator_aggregate``.

Error policy (BIP-445 reference, "two types of exceptions"):

- ``InputError`` (a ``ValueError``), with the BIP reference's message: the caller
  broke a precondition (wrong length, bad signers context, bad tweak, ...).
- ``InvalidContributionError`` (a ``FaultyParticipantError``): a signer's pubnonce
  or partial signature is invalid. ``signer_index`` is its position in the input
  list (the BIP's blame), ``participant`` / ``culprits`` its participant id.
- ``InvalidCoordinatorContributionError`` (a ``FaultyCoordinatorError``): the
  aggregate nonce (``aggnonce`` / ``aggothernonce``) cannot be decoded.
- ``SessionStateError``: a secret nonce or signer state used twice.
  ``SecnonceReuseError`` is also an ``InputError`` so that the BIP's
  "first secnonce value is out of range." vector still holds for a wiped nonce.
- ``InternalError``: a self-check failed (the signer verifies its own partial
  signature, the coordinator its aggregate signature) or an event of negligible
  probability happened (a hash equal to zero mod n).

Performance: group operations go through libsecp256k1 (``tss.curve``). Values that
depend only on public key material (validated signers context with its Lagrange
coefficients, tweak context) are cached, as the BIP allows ("Actual
implementations can cache these values"); per-session values are computed once per
call and points are decoded once. Scalar arithmetic on Python ints is not constant
time (see ``tss.curve``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field
from functools import lru_cache
from typing import Literal, NamedTuple, NewType

from tss.curve import (
    INFINITY,
    G,
    N,
    Point,
    mul_add_g,
    point_sum,
    schnorr_verify,
    tagged_hash,
)
from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    InputError,
    InternalError,
    InvalidEncodingError,
    ProtocolError,
    SessionStateError,
)
from tss.shamir import lagrange_coefficient
from tss.single_use import SingleUse, single_use
from tss.tags import (
    BIP340_TAG_CHALLENGE,
    FROST_TAG_AUX,
    FROST_TAG_DETERMINISTIC_NONCE,
    FROST_TAG_NONCE,
    FROST_TAG_NONCECOEF,
    FROST_TAG_SESSION,
)

__all__ = [
    # Functions: BIP 445 algorithms
    "validate_signers_ctx",
    "derive_interpolating_value",
    "derive_thresh_pubkey",
    "tweak_ctx_init",
    "apply_tweak",
    "get_xonly_pk",
    "get_plain_pk",
    "thresh_pubkey_and_tweak",
    "nonce_gen_internal",
    "nonce_gen",
    "nonce_agg",
    "serialize_ids",
    "get_session_values",
    "sign",
    "deterministic_sign",
    "partial_sig_verify",
    "partial_sig_verify_internal",
    "partial_sig_agg",
    # Functions: per-signer sans-IO rounds
    "signer_round1",
    "signer_round2",
    "coordinator_aggregate",
    "signer_aggregate",
    # Exceptions
    "InvalidContributionError",
    "InvalidCoordinatorContributionError",
    "SecnonceReuseError",
    # Types
    "PlainPk",
    "XonlyPk",
    "ContribKind",
    "SignersContext",
    "TweakContext",
    "SessionContext",
    "SessionValues",
    "SignerState",
    "Tweak",
]

PlainPk = NewType("PlainPk", bytes)
"""33-byte compressed point (public share, threshold public key)."""
XonlyPk = NewType("XonlyPk", bytes)
"""32-byte BIP-340 x-only public key."""
ContribKind = Literal["aggothernonce", "aggnonce", "psig", "pubnonce"]

_MAX_U32 = 2**32


### Errors


class InvalidContributionError(FaultyParticipantError):
    """A signer sent an invalid ``pubnonce`` or ``psig`` (BIP-445 blame).

    Attributes:
        signer_index: position of the bad contribution in the input list.
        participant: the blamed participant id (``signer_index`` when no ids were given).
        contrib: "pubnonce" or "psig".
    """

    def __init__(self, signer_index: int, participant: int, contrib: ContribKind) -> None:
        self.signer_index: int | None = signer_index
        self.contrib: ContribKind = contrib
        super().__init__(participant, f"invalid {contrib}")


class InvalidCoordinatorContributionError(FaultyCoordinatorError):
    """The coordinator's ``aggnonce`` (or ``aggothernonce``) is invalid.

    ``signer_index`` is always None, as in the BIP's ``InvalidContributionError``.
    """

    def __init__(self, contrib: ContribKind) -> None:
        self.signer_index: int | None = None
        self.contrib: ContribKind = contrib
        super().__init__(f"invalid {contrib} from the coordinator")


class SecnonceReuseError(SessionStateError, InputError):
    """The secret nonce is all zeros: it was already used (and wiped) by ``sign``."""


def _blame(bad: Sequence[tuple[int, int]], contrib: ContribKind) -> ProtocolError:
    """The error naming every (index, participant) in ``bad`` (non-empty)."""
    if len(bad) == 1:
        return InvalidContributionError(bad[0][0], bad[0][1], contrib)
    return ProtocolError(f"invalid {contrib} from several signers", (pid for _, pid in bad))


### Signers context (BIP 445 "Key Material and Setup")


class SignersContext(NamedTuple):
    """The public data of a signing session's participants (BIP 445 "Signers Context").

    ``u`` is ``len(ids)``; ``ids[i]`` (0-based participant id) owns ``pubshares[i]``.
    """

    n: int
    t: int
    ids: Sequence[int]
    pubshares: Sequence[PlainPk]
    thresh_pk: PlainPk


class _ValidSigners(NamedTuple):
    """A signers context that passed ``ValidateSignersCtx``, with its derived values."""

    ids: tuple[int, ...]
    pubshares: tuple[PlainPk, ...]
    points: tuple[Point, ...]
    lambdas: tuple[int, ...]
    ser_ids: bytes
    thresh_pk: PlainPk


def derive_interpolating_value(ids: Sequence[int], my_id: int) -> int:
    """``DeriveInterpolatingValue``: the Lagrange coefficient at 0 of ``my_id`` (point my_id+1).

    Raises:
        InputError: ``my_id`` not in ``ids``, or duplicate ids.
    """
    return lagrange_coefficient(ids, my_id)


def derive_thresh_pubkey(ids: Sequence[int], pubshares: Sequence[Point]) -> PlainPk:
    """``DeriveThreshPubkey``: ``cbytes(sum(lambda_i * P_i))`` (inputs not validated)."""
    if len(ids) != len(pubshares):
        raise InputError("The pubshares and ids arrays must have the same length.")
    terms = zip(ids, pubshares, strict=True)
    q = point_sum(derive_interpolating_value(ids, i) * p for i, p in terms)
    if q.is_infinity:
        raise InputError("The provided key material is incorrect.")
    return PlainPk(q.to_bytes())


def _is_u32_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < _MAX_U32


def _valid_signers(ctx: SignersContext) -> _ValidSigners:
    n, t, ids, pubshares, thresh_pk = ctx
    if not (_is_u32_int(n) and _is_u32_int(t)):
        raise InputError("n and t must be integers below 2^32.")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InputError("Participant identifiers must be integers.")
    if not all(isinstance(p, bytes | bytearray) for p in pubshares):
        raise InputError("Public shares must be byte strings.")
    if not isinstance(thresh_pk, bytes | bytearray):
        raise InputError("The threshold public key must be a byte string.")
    return _validate_signers_cached(
        n, t, tuple(ids), tuple(PlainPk(bytes(p)) for p in pubshares), PlainPk(bytes(thresh_pk))
    )


@lru_cache(maxsize=512)
def _validate_signers_cached(
    n: int, t: int, ids: tuple[int, ...], pubshares: tuple[PlainPk, ...], thresh_pk: PlainPk
) -> _ValidSigners:
    # ValidateSignersCtx, in the BIP's order so the vectors' messages match. The
    # result depends only on public key material, so it is cached (the BIP lets an
    # implementation "validate a context once and skip the repeated checks").
    if not 1 <= t <= n:
        raise InputError("The threshold must be 1 <= t <= n.")
    if not t <= len(ids) <= n:
        raise InputError("The number of signers must be between t and n.")
    if len(pubshares) != len(ids):
        raise InputError("The pubshares and ids arrays must have the same length.")
    points = []
    for idx, (i, pubshare) in enumerate(zip(ids, pubshares, strict=True)):
        if not 0 <= i <= n - 1:
            raise InputError(f"The participant identifier at index {idx} is out of range.")
        try:
            points.append(Point.from_bytes(pubshare))
        except InvalidEncodingError as e:
            # Pre-protocol input agreed before signing, so an input error, not blame.
            raise InputError(f"Invalid pubshare at index {idx}.") from e
    if len(set(ids)) != len(ids):
        raise InputError("The participant identifier list contains duplicate elements.")
    lambdas = tuple(lagrange_coefficient(ids, i) for i in ids)
    q = point_sum(lam * p for lam, p in zip(lambdas, points, strict=True))
    if q.is_infinity or q.to_bytes() != thresh_pk:
        raise InputError("The provided key material is incorrect.")
    return _ValidSigners(ids, pubshares, tuple(points), lambdas, serialize_ids(ids), thresh_pk)


def validate_signers_ctx(signers_ctx: SignersContext) -> None:
    """``ValidateSignersCtx``: check ids, public shares and that they interpolate to thresh_pk.

    Raises:
        InputError: with the BIP reference's message for the first failed check.
    """
    _valid_signers(signers_ctx)


def serialize_ids(ids: Sequence[int]) -> bytes:
    """``SerializeIds``: the sorted ids as 4-byte big-endian integers (a set, not a list)."""
    return b"".join(i.to_bytes(4, "big") for i in sorted(ids))


### Tweak context (BIP 445 "Tweaking the Threshold Public Key", identical to BIP 327)


class TweakContext(NamedTuple):
    """``(Q, gacc, tacc)``: tweaked key, accumulated sign (1 or -1) and accumulated tweak."""

    Q: Point
    gacc: int
    tacc: int


def tweak_ctx_init(thresh_pk: PlainPk) -> TweakContext:
    """``TweakCtxInit``.

    Raises:
        InvalidEncodingError: ``thresh_pk`` is not a 33-byte compressed point.
    """
    return TweakContext(Point.from_bytes(thresh_pk), 1, 0)


def get_xonly_pk(tweak_ctx: TweakContext) -> XonlyPk:
    """``GetXonlyPubkey``: 32-byte x-only (tweaked) threshold public key."""
    return XonlyPk(tweak_ctx.Q.xonly())


def get_plain_pk(tweak_ctx: TweakContext) -> PlainPk:
    """``GetPlainPubkey``: 33-byte compressed (tweaked) threshold public key."""
    return PlainPk(tweak_ctx.Q.to_bytes())


def apply_tweak(tweak_ctx: TweakContext, tweak: bytes, is_xonly: bool) -> TweakContext:
    """``ApplyTweak``: ``Q' = g*Q + t*G`` with g = -1 iff x-only and Q has odd y.

    Arguments:
        tweak_ctx: the context to tweak.
        tweak: 32-byte scalar < n.
        is_xonly: True for an x-only (BIP-341) tweak, False for a plain (BIP-32) one.

    Raises:
        InputError: tweak not 32 bytes, out of range, or the result is infinity.
    """
    if len(tweak) != 32:
        raise InputError("The tweak must be a 32-byte array.")
    q, gacc, tacc = tweak_ctx
    g = -1 if is_xonly and not q.has_even_y() else 1
    t = int.from_bytes(tweak, "big")
    if t >= N:
        raise InputError("The tweak value is out of range.")
    q2 = point_sum([q if g == 1 else -q, Point.base_mul(t)])
    if q2.is_infinity:
        raise InputError("The result of tweaking cannot be infinity.")
    return TweakContext(q2, g * gacc, (t + g * tacc) % N)


def thresh_pubkey_and_tweak(
    thresh_pk: PlainPk, tweaks: Sequence[bytes], is_xonly: Sequence[bool]
) -> TweakContext:
    """``TweakCtxInit`` then ``ApplyTweak`` for each tweak in order.

    Raises:
        InputError: the two lists differ in length, or a tweak is invalid.
    """
    if len(tweaks) != len(is_xonly):
        raise InputError("The tweaks and is_xonly arrays must have the same length.")
    if not all(isinstance(t, bytes | bytearray) for t in tweaks):
        raise InputError("The tweak must be a 32-byte array.")
    return _tweak_cached(
        PlainPk(bytes(thresh_pk)), tuple(bytes(t) for t in tweaks), tuple(map(bool, is_xonly))
    )


@lru_cache(maxsize=512)
def _tweak_cached(
    thresh_pk: PlainPk, tweaks: tuple[bytes, ...], is_xonly: tuple[bool, ...]
) -> TweakContext:
    # A pure function of public values: cached so each session does not redo the
    # point additions of a BIP-32 + BIP-341 tweak chain.
    ctx = tweak_ctx_init(thresh_pk)
    for tweak, xonly in zip(tweaks, is_xonly, strict=True):
        ctx = apply_tweak(ctx, tweak, xonly)
    return ctx


### Nonce generation (BIP 445 "Nonce Generation")


def _xor32(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(32, "big")


def _nonce_scalars(
    rand_: bytes,
    secshare: bytes | None,
    pubshare: bytes | None,
    thresh_pk: bytes | None,
    msg: bytes | None,
    extra_in: bytes | None,
) -> tuple[int, int]:
    rand = rand_ if secshare is None else _xor32(secshare, tagged_hash(FROST_TAG_AUX, rand_))
    pubshare = pubshare or b""
    thresh_pk = thresh_pk or b""
    msg_prefixed = b"\x00" if msg is None else b"\x01" + len(msg).to_bytes(8, "big") + msg
    extra_in = extra_in or b""
    buf = b"".join(
        (
            rand,
            len(pubshare).to_bytes(1, "big"),
            pubshare,
            len(thresh_pk).to_bytes(1, "big"),
            thresh_pk,
            msg_prefixed,
            len(extra_in).to_bytes(4, "big"),
            extra_in,
        )
    )
    k1 = int.from_bytes(tagged_hash(FROST_TAG_NONCE, buf + b"\x00"), "big") % N
    k2 = int.from_bytes(tagged_hash(FROST_TAG_NONCE, buf + b"\x01"), "big") % N
    if k1 == 0 or k2 == 0:  # probability ~2^-128
        raise InternalError("nonce hash is zero")
    return k1, k2


def _secnonce_and_pubnonce(k1: int, k2: int) -> tuple[bytearray, bytes, tuple[Point, Point]]:
    r1, r2 = Point.base_mul(k1), Point.base_mul(k2)
    secnonce = bytearray(k1.to_bytes(32, "big") + k2.to_bytes(32, "big"))
    return secnonce, r1.to_bytes() + r2.to_bytes(), (r1, r2)


def nonce_gen_internal(
    rand_: bytes,
    secshare: bytes | None,
    pubshare: PlainPk | None,
    thresh_pk: XonlyPk | None,
    msg: bytes | None,
    extra_in: bytes | None,
) -> tuple[bytearray, bytes]:
    """``NonceGen`` with its randomness ``rand'`` given explicitly (the vectors' entry point).

    Arguments:
        rand_: 32 bytes from a CSPRNG (never reuse).
        secshare: optional 32-byte secret share, xored into the randomness.
        pubshare: optional 33-byte public share.
        thresh_pk: optional 32-byte x-only (ideally tweaked) threshold public key.
        msg: optional message of any length.
        extra_in: optional extra input (e.g. a session id), < 2^32 bytes.

    Returns:
        ``(secnonce, pubnonce)``: a 64-byte bytearray ``k1 || k2`` that ``sign`` wipes,
        and the 66-byte ``cbytes(k1*G) || cbytes(k2*G)``.

    Raises:
        InputError: ``rand_`` is not 32 bytes.
    """
    if len(rand_) != 32:
        raise InputError("The randomness rand_ must be 32 bytes.")
    k1, k2 = _nonce_scalars(rand_, secshare, pubshare, thresh_pk, msg, extra_in)
    secnonce, pubnonce, _ = _secnonce_and_pubnonce(k1, k2)
    return secnonce, pubnonce


def nonce_gen(
    rand_: bytes,
    secshare: bytes | None,
    pubshare: PlainPk | None,
    thresh_pk: XonlyPk | None,
    msg: bytes | None,
    extra_in: bytes | None,
) -> tuple[bytearray, bytes]:
    """``NonceGen``, with the lengths of the optional arguments checked.

    The BIP draws ``rand'`` inside NonceGen; the protocol core takes no OS
    randomness (docs/architecture.md, "Components"), so the caller passes 32 fresh CSPRNG bytes.
    Arguments and returns as in ``nonce_gen_internal``.

    Raises:
        InputError: an argument has the wrong length.
    """
    if secshare is not None and len(secshare) != 32:
        raise InputError("The optional byte array secshare must have length 32.")
    if pubshare is not None and len(pubshare) != 33:
        raise InputError("The optional byte array pubshare must have length 33.")
    if thresh_pk is not None and len(thresh_pk) != 32:
        raise InputError("The optional byte array thresh_pk must have length 32.")
    if extra_in is not None and len(extra_in) >= _MAX_U32:
        raise InputError("The optional byte array extra_in must be shorter than 2^32 bytes.")
    return nonce_gen_internal(rand_, secshare, pubshare, thresh_pk, msg, extra_in)


### Nonce aggregation (BIP 445 "Nonce Aggregation")


def _decode_pubnonces(
    pubnonces: Sequence[bytes],
) -> tuple[list[tuple[Point, Point]], list[int], list[int]]:
    """Decode every pubnonce; return the points and the indices whose 1st / 2nd half is bad."""
    points: list[tuple[Point, Point]] = []
    bad1: list[int] = []
    bad2: list[int] = []
    for idx, pubnonce in enumerate(pubnonces):
        r1 = r2 = INFINITY
        if not isinstance(pubnonce, bytes | bytearray) or len(pubnonce) != 66:
            bad1.append(idx)
        else:
            try:
                r1 = Point.from_bytes(pubnonce[:33])
            except InvalidEncodingError:
                bad1.append(idx)
            try:
                r2 = Point.from_bytes(pubnonce[33:])
            except InvalidEncodingError:
                bad2.append(idx)
        points.append((r1, r2))
    return points, bad1, bad2


def _aggregate(points: Sequence[tuple[Point, Point]]) -> tuple[Point, Point]:
    return point_sum(p[0] for p in points), point_sum(p[1] for p in points)


def nonce_agg(pubnonces: Sequence[bytes], ids: Sequence[int] | None = None) -> bytes:
    """``NonceAgg``: ``cbytes_ext(sum R_i1) || cbytes_ext(sum R_i2)``.

    Arguments:
        pubnonces: the u signers' 66-byte public nonces.
        ids: optional participant ids aligned with ``pubnonces``, used only to name
            the culprit (without them the culprit is the list index).

    Returns:
        The 66-byte aggregate nonce.

    Raises:
        InvalidContributionError: a pubnonce is not two valid compressed points; blames
            the first bad signer in the BIP's order (all first halves, then all second).
    """
    if ids is not None and len(ids) != len(pubnonces):
        raise InputError("The pubnonces and ids arrays must have the same length.")
    points, bad1, bad2 = _decode_pubnonces(pubnonces)
    if bad1 or bad2:
        idx = min(bad1) if bad1 else min(bad2)
        raise InvalidContributionError(idx, idx if ids is None else ids[idx], "pubnonce")
    r1, r2 = _aggregate(points)
    return r1.to_bytes_ext() + r2.to_bytes_ext()


### Session context (BIP 445 "Session Context")


class SessionContext(NamedTuple):
    """``(signers_ctx, aggnonce, v, tweak_1..v, is_xonly_t_1..v, m)``; v is ``len(tweaks)``."""

    signers_ctx: SignersContext
    aggnonce: bytes
    tweaks: Sequence[bytes]
    is_xonly: Sequence[bool]
    msg: bytes


class SessionValues(NamedTuple):
    """The output of ``GetSessionValues``: ``(Q, gacc, tacc, ids, pubshares, b, R, e)``."""

    Q: Point
    gacc: int
    tacc: int
    ids: tuple[int, ...]
    pubshares: tuple[PlainPk, ...]
    b: int
    R: Point
    e: int


class _Session(NamedTuple):
    """Session values plus what signing and verification derive from them."""

    values: SessionValues
    signers: _ValidSigners
    r_even: bool
    g: int  # 1 if Q has even y else -1


def _session_from_points(
    signers: _ValidSigners,
    tweak_ctx: TweakContext,
    aggnonce: bytes,
    r1: Point,
    r2: Point,
    msg: bytes,
) -> _Session:
    q, gacc, tacc = tweak_ctx
    qx = q.xonly()
    b_hash = tagged_hash(FROST_TAG_NONCECOEF, signers.ser_ids + aggnonce + qx + msg)
    b = int.from_bytes(b_hash, "big") % N
    if b == 0:  # probability ~2^-128
        raise InternalError("nonce coefficient is zero")
    r = point_sum([r1, r2 * b])
    if r.is_infinity:
        # BIP 445 "Dealing with Infinity in Nonce Aggregation": fall back to G.
        r = G
    rx = r.xonly()
    e = int.from_bytes(tagged_hash(BIP340_TAG_CHALLENGE, rx + qx + msg), "big") % N
    if e == 0:  # probability ~2^-128
        raise InternalError("challenge is zero")
    values = SessionValues(q, gacc, tacc, signers.ids, signers.pubshares, b, r, e)
    return _Session(values, signers, r.has_even_y(), 1 if q.has_even_y() else -1)


def _session(session_ctx: SessionContext) -> _Session:
    signers_ctx, aggnonce, tweaks, is_xonly, msg = session_ctx
    signers = _valid_signers(signers_ctx)
    tweak_ctx = thresh_pubkey_and_tweak(signers_ctx.thresh_pk, tweaks, is_xonly)
    if len(aggnonce) != 66:
        raise InvalidCoordinatorContributionError("aggnonce")
    try:
        r1 = Point.from_bytes_ext(aggnonce[:33])
        r2 = Point.from_bytes_ext(aggnonce[33:])
    except InvalidEncodingError as e:
        raise InvalidCoordinatorContributionError("aggnonce") from e
    return _session_from_points(signers, tweak_ctx, bytes(aggnonce), r1, r2, msg)


def get_session_values(session_ctx: SessionContext) -> SessionValues:
    """``GetSessionValues``.

    Raises:
        InputError: invalid signers context or tweaks.
        InvalidCoordinatorContributionError: ``aggnonce`` is not 66 bytes of two
            ``cpoint_ext`` encodings (blames the coordinator).
    """
    return _session(session_ctx).values


### Signing (BIP 445 "Signing")


def _lambda(sess: _Session, my_id: int) -> int:
    return sess.signers.lambdas[sess.signers.ids.index(my_id)]


def _psig_equation_holds(
    s: int, my_id: int, nonce: tuple[Point, Point], pubshare: Point, sess: _Session
) -> bool:
    """``s*G == Re + e*lambda*g'*P`` of PartialSigVerifyInternal (public inputs only).

    With Re = eps*(R1 + b*R2) (eps = -1 iff R has odd y) and c = e*lambda*g', the
    equation is equivalent to R1 + b*R2 + (eps*c*P - eps*s*G) = infinity: folding
    the signs into the scalars avoids negating points, and the bracket is one
    variable-time double multiplication (``mul_add_g``), fine for public values.
    """
    q_gacc = sess.g * sess.values.gacc
    c = sess.values.e * _lambda(sess, my_id) * q_gacc
    eps = 1 if sess.r_even else -1
    total = point_sum([nonce[0], nonce[1] * sess.values.b, mul_add_g(pubshare, eps * c, -eps * s)])
    return total.is_infinity


def _sign_with_scalars(
    k1_: int, k2_: int, d_: int, my_id: int, pubshare: Point, sess: _Session
) -> int:
    """The arithmetic of ``Sign`` and its self-check; returns the partial signature s."""
    values = sess.values
    eps = 1 if sess.r_even else -1
    # k1 + b*k2 with k_j = eps*k_j' (the nonce is negated when R has odd y).
    k = eps * (k1_ + values.b * k2_)
    # "Negation of the Secret Share when Signing": d = g*gacc*d', so e*lambda*d = c*d'.
    c = values.e * _lambda(sess, my_id) * sess.g * values.gacc
    s = (k + c * d_) % N
    # Self-check (BIP 445 Sign's last step, mandatory here): the
    # BIP runs PartialSigVerifyInternal with pubnonce recomputed from secnonce, i.e.
    # s*G == eps*(k1'*G + b*k2'*G) + c*P. Moving the nonce term to the left, that is
    # (s - eps*(k1' + b*k2'))*G == c*P: the same group equation with one base
    # multiplication and one multiplication instead of three. It fails if s was
    # miscomputed or if the secret share does not match the public share P.
    # s - k = c*d' is secret, so it goes through constant-time base_mul, not the
    # variable-time mul_add_g used for verifying others' partial signatures.
    if Point.base_mul(s - k) != pubshare * c:
        raise InternalError("own partial signature does not verify")
    return s


def _take_secnonce(secnonce: bytearray) -> tuple[int, int]:
    """Read and wipe the secret nonce (``secnonce[:] = 0``) so a second use fails."""
    if not isinstance(secnonce, bytearray) or len(secnonce) != 64:
        raise InputError("The secnonce must be a 64-byte bytearray.")
    if not any(secnonce):
        raise SecnonceReuseError("first secnonce value is out of range.")
    k1_ = int.from_bytes(secnonce[:32], "big")
    if not 0 < k1_ < N:
        raise InputError("first secnonce value is out of range.")
    k2_ = int.from_bytes(secnonce[32:], "big")
    if not 0 < k2_ < N:
        raise InputError("second secnonce value is out of range.")
    secnonce[:] = bytes(64)
    return k1_, k2_


def sign(secnonce: bytearray, secshare: bytes, my_id: int, session_ctx: SessionContext) -> bytes:
    """``Sign``: the signer's partial signature; wipes ``secnonce``.

    Arguments:
        secnonce: the 64-byte bytearray from ``nonce_gen``; overwritten with zeros.
        secshare: 32-byte secret share.
        my_id: the signer's participant id (0-based).
        session_ctx: the session context.

    Returns:
        The 32-byte partial signature, verified before release.

    Raises:
        SecnonceReuseError: ``secnonce`` was already used.
        InputError: invalid secnonce, secret share, signers context or tweaks.
        InvalidCoordinatorContributionError: invalid ``aggnonce``.
        InternalError: the partial signature failed its self-check.
    """
    sess = _session(session_ctx)
    k1_, k2_ = _take_secnonce(secnonce)
    if len(secshare) != 32:
        raise InputError("The signer's secret share value is out of range.")
    d_ = int.from_bytes(secshare, "big")
    if not 0 < d_ < N:
        raise InputError("The signer's secret share value is out of range.")
    p = Point.base_mul(d_)
    if p.to_bytes() not in sess.signers.pubshares:
        raise InputError("The signer's pubshare must be included in the list of pubshares.")
    if my_id not in sess.signers.ids:
        raise InputError("The signer's id must be present in the participant identifier list.")
    return _sign_with_scalars(k1_, k2_, d_, my_id, p, sess).to_bytes(32, "big")


def _det_nonce_hash(
    secshare_: bytes,
    my_id: int,
    ids: Sequence[int],
    aggothernonce: bytes,
    tweaked_tpk: bytes,
    msg: bytes,
    i: int,
) -> int:
    buf = b"".join(
        (
            secshare_,
            my_id.to_bytes(4, "big"),
            len(ids).to_bytes(4, "big"),
            serialize_ids(ids),
            aggothernonce,
            tweaked_tpk,
            len(msg).to_bytes(8, "big"),
            msg,
            i.to_bytes(1, "big"),
        )
    )
    return int.from_bytes(tagged_hash(FROST_TAG_DETERMINISTIC_NONCE, buf), "big") % N


def deterministic_sign(
    secshare: bytes,
    my_id: int,
    aggothernonce: bytes | None,
    signers_ctx: SignersContext,
    tweaks: Sequence[bytes],
    is_xonly: Sequence[bool],
    msg: bytes,
    rand: bytes | None,
) -> tuple[bytes, bytes]:
    """``DeterministicSign``: stateless signing for the last signer (or a sole signer).

    Arguments:
        secshare: 32-byte secret share.
        my_id: the signer's participant id.
        aggothernonce: ``nonce_agg`` of all other signers' pubnonces (66 bytes), or None
            for a sole signer.
        signers_ctx: the signers context.
        tweaks, is_xonly: the tweaks and their modes.
        msg: the message.
        rand: optional 32 bytes of auxiliary randomness.

    Returns:
        ``(pubnonce, psig)``: 66 and 32 bytes.

    Raises:
        InputError: invalid arguments (see ``sign``).
        InvalidCoordinatorContributionError: ``aggothernonce`` is invalid.
    """
    if len(secshare) != 32:
        raise InputError("The signer's secret share value is out of range.")
    if not _is_u32_int(my_id):
        raise InputError("The signer's id must be present in the participant identifier list.")
    if rand is not None and len(rand) != 32:
        raise InputError("The optional randomness rand must be 32 bytes.")
    secshare_ = secshare if rand is None else _xor32(secshare, tagged_hash(FROST_TAG_AUX, rand))
    signers = _valid_signers(signers_ctx)
    tweaked_tpk = get_xonly_pk(thresh_pubkey_and_tweak(signers_ctx.thresh_pk, tweaks, is_xonly))
    aggothernonce_ = b"" if aggothernonce is None else aggothernonce
    k1, k2 = (
        _det_nonce_hash(secshare_, my_id, signers.ids, aggothernonce_, tweaked_tpk, msg, i)
        for i in (0, 1)
    )
    if k1 == 0 or k2 == 0:  # probability ~2^-128
        raise InternalError("deterministic nonce hash is zero")
    secnonce, pubnonce, _ = _secnonce_and_pubnonce(k1, k2)
    if aggothernonce is None:
        aggnonce = pubnonce
    else:
        try:
            aggnonce = nonce_agg([pubnonce, aggothernonce])
        except InvalidContributionError as e:
            # Our own pubnonce is valid, so the fault is the coordinator's.
            raise InvalidCoordinatorContributionError("aggothernonce") from e
    session_ctx = SessionContext(signers_ctx, aggnonce, tweaks, is_xonly, msg)
    return pubnonce, sign(secnonce, secshare, my_id, session_ctx)


### Partial signature verification (BIP 445 "Partial Signature Verification")


def partial_sig_verify(
    psig: bytes,
    pubnonces: Sequence[bytes],
    signers_ctx: SignersContext,
    tweaks: Sequence[bytes],
    is_xonly: Sequence[bool],
    msg: bytes,
    i: int,
) -> bool:
    """``PartialSigVerify``: does signer ``i`` (list position) have a valid partial signature?

    Returns a bool, as in the BIP and its ``verify_fail`` vectors.

    Raises:
        InputError: invalid signers context, tweaks, or list lengths.
        InvalidContributionError: some signer's pubnonce is invalid (blamed).
    """
    signers = _valid_signers(signers_ctx)
    if len(pubnonces) != len(signers.ids):
        raise InputError("The pubnonces and ids arrays must have the same length.")
    if len(tweaks) != len(is_xonly):
        raise InputError("The tweaks and is_xonly arrays must have the same length.")
    if not 0 <= i < len(signers.ids):
        raise InputError("The signer index is out of range.")
    aggnonce = nonce_agg(pubnonces, signers.ids)
    session_ctx = SessionContext(signers_ctx, aggnonce, tweaks, is_xonly, msg)
    return partial_sig_verify_internal(
        psig, signers.ids[i], pubnonces[i], signers.pubshares[i], session_ctx
    )


def partial_sig_verify_internal(
    psig: bytes, my_id: int, pubnonce: bytes, pubshare: bytes, session_ctx: SessionContext
) -> bool:
    """``PartialSigVerifyInternal``: verify one partial signature against a session.

    Raises:
        InputError / InvalidCoordinatorContributionError: as ``get_session_values``.
    """
    sess = _session(session_ctx)
    if len(psig) != 32:
        return False
    s = int.from_bytes(psig, "big")
    if s >= N:
        return False
    if pubshare not in sess.signers.pubshares or my_id not in sess.signers.ids:
        return False
    if len(pubnonce) != 66:
        return False
    try:
        nonce = (Point.from_bytes(pubnonce[:33]), Point.from_bytes(pubnonce[33:]))
        p = Point.from_bytes(pubshare)
    except InvalidEncodingError:
        return False
    return _psig_equation_holds(s, my_id, nonce, p, sess)


### Partial signature aggregation (BIP 445 "Partial Signature Aggregation")


def _parse_psigs(psigs: Sequence[bytes], ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """The scalars of ``psigs`` and the indices of the ones not 32 bytes < n."""
    scalars: list[int] = []
    bad: list[int] = []
    for idx, psig in enumerate(psigs):
        ok = isinstance(psig, bytes | bytearray) and len(psig) == 32
        s = int.from_bytes(psig, "big") if ok else N
        if s >= N:
            bad.append(idx)
        scalars.append(s)
    return scalars, bad


def _final_signature(scalars: Sequence[int], sess: _Session) -> bytes:
    v = sess.values
    s = (sum(scalars) + v.e * sess.g * v.tacc) % N
    return v.R.xonly() + s.to_bytes(32, "big")


def partial_sig_agg(psigs: Sequence[bytes], session_ctx: SessionContext) -> bytes:
    """``PartialSigAgg``: sum the partial signatures into a 64-byte BIP-340 signature.

    Does not verify the partial signatures (use ``partial_sig_verify`` first, or
    ``coordinator_aggregate``).

    Raises:
        InputError: ``len(psigs) != u``, or as ``get_session_values``.
        InvalidContributionError: a partial signature is not a scalar < n (blames it).
    """
    sess = _session(session_ctx)
    ids = sess.signers.ids
    if len(psigs) != len(ids):
        raise InputError("The psigs and ids arrays must have the same length.")
    scalars, bad = _parse_psigs(psigs, ids)
    if bad:
        raise InvalidContributionError(bad[0], ids[bad[0]], "psig")
    return _final_signature(scalars, sess)


### Per-signer sans-IO rounds (used by the service and tss.local)
#
# Round 1: signer_round1 -> (state, pubnonce); every pubnonce goes to every signer
#          and to the coordinator (the BIP's coordinator-less variant, so each
#          signer can aggregate nonces and blame a bad pubnonce itself).
# Round 2: signer_round2(state, signer_ids, pubnonces, tweaks) -> psig; state consumed.
# Output:  coordinator_aggregate(...) verifies the psigs (each one, or only when
#          the aggregate fails), blames culprits, aggregates, and verifies the
#          final BIP-340 signature.
#
# Tweaks are (32-byte tweak, is_xonly) pairs applied in order: a BIP-32 plain
# tweak (tss.bip32) first, then a BIP-341 x-only tweak (tss.taproot).

Tweak = tuple[bytes, bool]
"""A tweak for the wrapper: (32-byte scalar, is_xonly)."""


@single_use
class SignerState(SingleUse):
    """A signer's secret state between round 1 and round 2; single use.

    ``signer_round2`` wipes the secret nonce (in place) before anything else, so a
    second call raises ``SessionStateError``. Secrets are left out of ``repr``.
    """

    session_id: bytes
    party_id: int
    threshold: int
    public_key: PlainPk
    public_shares: tuple[PlainPk, ...]
    msg: bytes
    pubnonce: bytes
    nonce_points: tuple[Point, Point] = field(repr=False)
    secnonce: bytearray = field(repr=False)
    secret_share: int = field(repr=False)
    # Round 2's public session (nonces, session values), reused by signer_aggregate.
    _session: list[_Ceremony] = field(default_factory=list, repr=False, compare=False)

    @property
    def consumed(self) -> bool:
        """True once round 2 has run (the secret nonce is all zeros)."""
        return not any(self.secnonce)


def _session_extra_in(session_id: bytes) -> bytes:
    label = FROST_TAG_SESSION.encode()
    return label + len(session_id).to_bytes(4, "big") + session_id


def _check_key_fields(
    public_key: bytes, public_shares: Sequence[bytes], threshold: int
) -> tuple[PlainPk, tuple[PlainPk, ...]]:
    n = len(public_shares)
    if not (_is_u32_int(threshold) and 1 <= threshold <= n < _MAX_U32):
        raise InputError("need 1 <= threshold <= len(public_shares) < 2^32")
    if not all(isinstance(p, bytes) and len(p) == 33 for p in public_shares):
        raise InputError("public shares must be 33-byte compressed points")
    if not isinstance(public_key, bytes) or len(public_key) != 33:
        raise InputError("public_key must be a 33-byte compressed point")
    # The point itself is checked by ValidateSignersCtx in round 2 and aggregation.
    return PlainPk(public_key), tuple(PlainPk(p) for p in public_shares)


@lru_cache(maxsize=64)
def _check_point(data: bytes) -> None:
    Point.from_bytes(data)


def signer_round1(
    party_id: int,
    secret_share: int,
    public_key: bytes,
    public_shares: Sequence[bytes],
    threshold: int,
    msg: bytes,
    session_id: bytes,
    rand: bytes,
) -> tuple[SignerState, bytes]:
    """Round 1 of signing for one signer: make a nonce bound to the session.

    Runs ``NonceGen`` with every optional input: the secret share, the signer's
    public share, the x-only threshold public key, the message, and
    ``extra_in = "shardkeep/frost/session" || len32(session_id) || session_id``.

    Arguments:
        party_id: this signer's 0-based participant id (``KeyShare.party_id``).
        secret_share: this signer's secret share, 0 < x < n (``KeyShare.secret_share``).
        public_key: 33-byte compressed threshold public key (``KeyShare.public_key``).
        public_shares: 33-byte public share of every party, by id (``KeyShare.public_shares``).
        threshold: t (``KeyShare.threshold``).
        msg: the message to sign (any length; BIP-340 signs it as given).
        session_id: the caller's unique id of this signing session (non-empty).
        rand: 32 fresh bytes from a CSPRNG.

    Returns:
        ``(state, pubnonce)``: the single-use state for ``signer_round2`` and the
        66-byte public nonce to send to the other signers and the coordinator.

    Raises:
        InputError: a malformed argument.
    """
    public_key, shares = _check_key_fields(public_key, public_shares, threshold)
    if not (_is_u32_int(party_id) and party_id < len(shares)):
        raise InputError("party_id out of range")
    _check_point(public_key)  # fail early on a malformed key
    if not isinstance(secret_share, int) or not 0 < secret_share < N:
        raise InputError("secret share out of range")
    if not isinstance(rand, bytes) or len(rand) != 32:
        raise InputError("rand must be 32 bytes")
    if not isinstance(session_id, bytes) or not 0 < len(session_id) < 2**31:
        raise InputError("session_id must be non-empty bytes")
    if not isinstance(msg, bytes):
        raise InputError("msg must be bytes")
    k1, k2 = _nonce_scalars(
        rand,
        secret_share.to_bytes(32, "big"),
        shares[party_id],
        public_key[1:],
        msg,
        _session_extra_in(session_id),
    )
    secnonce, pubnonce, points = _secnonce_and_pubnonce(k1, k2)
    state = SignerState(
        session_id=session_id,
        party_id=party_id,
        threshold=threshold,
        public_key=public_key,
        public_shares=shares,
        msg=msg,
        pubnonce=pubnonce,
        nonce_points=points,
        secnonce=secnonce,
        secret_share=secret_share,
    )
    return state, pubnonce


class _Ceremony(NamedTuple):
    """What a signer and the coordinator both derive from round 1's messages."""

    sess: _Session
    nonces: list[tuple[Point, Point]]
    ids: tuple[int, ...]


def _signers_for(
    public_key: PlainPk,
    public_shares: tuple[PlainPk, ...],
    threshold: int,
    signer_ids: Sequence[int],
    pubnonces: Mapping[int, bytes],
    tweaks: Sequence[Tweak],
) -> tuple[SignersContext, list[int], tuple[bytes, ...], tuple[bool, ...]]:
    ids = list(signer_ids)
    n = len(public_shares)
    for idx, i in enumerate(ids):
        if not (isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n):
            raise InputError(f"The participant identifier at index {idx} is out of range.")
    if not isinstance(pubnonces, Mapping) or set(pubnonces) != set(ids):
        raise InputError("pubnonces must have exactly one entry per signer id")
    if not all(isinstance(t, tuple) and len(t) == 2 for t in tweaks):
        raise InputError("tweaks must be (tweak32, is_xonly) pairs")
    ctx = SignersContext(n, threshold, ids, [public_shares[i] for i in ids], public_key)
    return ctx, ids, tuple(t for t, _ in tweaks), tuple(x for _, x in tweaks)


def _ceremony(
    ctx: SignersContext,
    ids: list[int],
    tweaks: tuple[bytes, ...],
    is_xonly: tuple[bool, ...],
    pubnonces: Mapping[int, bytes],
    msg: bytes,
    known: Mapping[int, tuple[Point, Point]],
) -> _Ceremony:
    """Validate, decode every pubnonce once (blaming all bad ones), and get the session."""
    signers = _valid_signers(ctx)
    tweak_ctx = thresh_pubkey_and_tweak(ctx.thresh_pk, tweaks, is_xonly)
    others = [i for i in ids if i not in known]
    decoded, bad1, bad2 = _decode_pubnonces([pubnonces[i] for i in others])
    bad = sorted(set(bad1) | set(bad2))
    if bad:
        raise _blame([(ids.index(others[k]), others[k]) for k in bad], "pubnonce")
    by_id = dict(zip(others, decoded, strict=True))
    by_id.update(known)
    nonces = [by_id[i] for i in ids]
    r1, r2 = _aggregate(nonces)
    aggnonce = r1.to_bytes_ext() + r2.to_bytes_ext()
    return _Ceremony(
        _session_from_points(signers, tweak_ctx, aggnonce, r1, r2, msg), nonces, tuple(ids)
    )


def signer_round2(
    state: SignerState,
    signer_ids: Sequence[int],
    pubnonces: Mapping[int, bytes],
    tweaks: Sequence[Tweak] = (),
) -> bytes:
    """Round 2 for one signer: the partial signature over the message bound in round 1.

    Consumes ``state`` first (its secret nonce is wiped even when this call fails),
    checks that ``pubnonces[state.party_id]`` is our own round-1 nonce, aggregates
    the nonces, signs (``Sign``) and verifies the result (self-check).

    Arguments:
        state: from ``signer_round1``.
        signer_ids: the ids of the u signers, t <= u <= n, including ours.
        pubnonces: ``{id: 66-byte pubnonce}`` for exactly ``signer_ids``.
        tweaks: ``(tweak32, is_xonly)`` pairs applied to the threshold key in order.

    Returns:
        The 32-byte partial signature, for the coordinator.

    Raises:
        SessionStateError: ``state`` was already used.
        InputError: malformed ids, pubnonces map or tweaks.
        FaultyCoordinatorError: our own pubnonce was replaced.
        ProtocolError: other signers' pubnonces are invalid; ``culprits`` names them
            (an ``InvalidContributionError`` when there is one).
        InternalError: the partial signature failed its self-check.
    """
    if state.consumed:
        raise SessionStateError("this signer state was already used")
    k1_, k2_ = _take_secnonce(state.secnonce)
    ctx, ids, tws, xonly = _signers_for(
        state.public_key, state.public_shares, state.threshold, signer_ids, pubnonces, tweaks
    )
    me = state.party_id
    if me not in ids:
        raise InputError("The signer's id must be present in the participant identifier list.")
    if pubnonces[me] != state.pubnonce:
        raise FaultyCoordinatorError("our own pubnonce was replaced")
    cer = _ceremony(ctx, ids, tws, xonly, pubnonces, state.msg, {me: state.nonce_points})
    state._session.append(cer)
    pubshare = cer.sess.signers.points[ids.index(me)]
    s = _sign_with_scalars(k1_, k2_, state.secret_share, me, pubshare, cer.sess)
    return s.to_bytes(32, "big")


def coordinator_aggregate(
    public_key: bytes,
    public_shares: Sequence[bytes],
    threshold: int,
    msg: bytes,
    signer_ids: Sequence[int],
    pubnonces: Mapping[int, bytes],
    psigs: Mapping[int, bytes],
    tweaks: Sequence[Tweak] = (),
    *,
    verify_each: bool = True,
) -> bytes:
    """Verify the partial signatures, blame the culprits, and aggregate (``PartialSigAgg``).

    With ``verify_each`` (the default) every partial signature is checked with
    ``PartialSigVerify`` first, the BIP's condition for identifiable aborts. With
    ``verify_each=False`` the aggregate is formed and verified first, and the partial
    signatures are checked one by one only if it fails (the strategy of ZF's
    frost-core ``aggregate``): equally able to name culprits whenever signing
    aborts, and cheaper when it does not. Either way out-of-range partial
    signatures are blamed and the returned signature has been verified.

    Arguments:
        public_key: 33-byte compressed threshold public key.
        public_shares: 33-byte public share of every party, by id.
        threshold: t.
        msg: the message the signers signed.
        signer_ids: the u signers' ids.
        pubnonces: ``{id: 66-byte pubnonce}`` for exactly ``signer_ids``.
        psigs: ``{id: 32-byte partial signature}`` for exactly ``signer_ids``.
        tweaks: ``(tweak32, is_xonly)`` pairs, as given to the signers.
        verify_each: verify every partial signature even when the aggregate is valid.

    Returns:
        The 64-byte BIP-340 signature, valid for the (tweaked) x-only threshold key.

    Raises:
        InputError: malformed key material, ids, maps or tweaks.
        ProtocolError: invalid pubnonces, else invalid partial signatures (out of range
            or failing ``PartialSigVerify``); ``culprits`` names every bad signer (an
            ``InvalidContributionError`` when there is one).
        InternalError: the aggregate signature does not verify (self-check).
    """
    pk, shares = _check_key_fields(public_key, public_shares, threshold)
    ctx, ids, tws, xonly = _signers_for(pk, shares, threshold, signer_ids, pubnonces, tweaks)
    if not isinstance(psigs, Mapping) or set(psigs) != set(ids):
        raise InputError("psigs must have exactly one entry per signer id")
    cer = _ceremony(ctx, ids, tws, xonly, pubnonces, msg, {})
    return _aggregate_psigs(cer, ids, psigs, msg, verify_each)


def signer_aggregate(state: SignerState, psigs: Mapping[int, bytes]) -> bytes:
    """A signer's own ``coordinator_aggregate``, reusing the session of its round 2.

    Aggregates first and checks partial signatures one by one only when the
    aggregate fails (culprits are named on every abort); the released signature
    always verifies.

    Arguments:
        state: the state ``signer_round2`` consumed.
        psigs: ``{id: 32-byte partial signature}`` for exactly round 2's signers.

    Raises:
        SessionStateError: round 2 has not run with this state.
        InputError, ProtocolError, InternalError: as ``coordinator_aggregate``.
    """
    if not state._session:
        raise SessionStateError("signer_aggregate needs the state after signer_round2")
    cer = state._session[0]
    ids = list(cer.ids)
    if not isinstance(psigs, Mapping) or set(psigs) != set(ids):
        raise InputError("psigs must have exactly one entry per signer id")
    return _aggregate_psigs(cer, ids, psigs, state.msg, verify_each=False)


def _aggregate_psigs(
    cer: _Ceremony, ids: list[int], psigs: Mapping[int, bytes], msg: bytes, verify_each: bool
) -> bytes:
    sess = cer.sess
    xonly_key = sess.values.Q.xonly()
    scalars, out_of_range = _parse_psigs([psigs[i] for i in ids], ids)
    if not verify_each and not out_of_range:
        sig = _final_signature(scalars, sess)
        if schnorr_verify(msg, xonly_key, sig):
            return sig
    # PartialSigVerify for every signer, to name every culprit.
    bad = set(out_of_range)
    for idx, i in enumerate(ids):
        if idx not in bad and not _psig_equation_holds(
            scalars[idx], i, cer.nonces[idx], sess.signers.points[idx], sess
        ):
            bad.add(idx)
    if bad:
        raise _blame([(idx, ids[idx]) for idx in sorted(bad)], "psig")
    sig = _final_signature(scalars, sess)
    if not schnorr_verify(msg, xonly_key, sig):
        raise InternalError("aggregate signature does not verify")
    return sig
