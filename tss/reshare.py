"""Reshare and refresh: new secret shares of an unchanged key, for a new or the same party set.

One ceremony in two modes (docs/architecture.md, "Data flow of a ceremony"):

- **reshare** (t-of-n -> t'-of-n', adding and removing parties): a quorum D of
  at least t old holders re-deals the key. Each dealer d in D shares its
  Lagrange-weighted share w_d = lambda_d * x_d (lambda_d its Lagrange
  coefficient at 0 in D) with a fresh random polynomial g_d of degree t' - 1,
  g_d(0) = w_d; new party j's share is x'_j = sum_d g_d(j + 1), so the new
  shares interpolate to sum_d w_d = x, the unchanged key (Desmedt and Jajodia,
  "Redistributing secret shares to new access structures and its
  applications", GMU ISSE-TR-97-01, 1997, §3).
- **refresh** (proactive renewal, same parties and threshold): every party d
  deals a random sharing g_d of zero; x'_j = x_j + sum_d g_d(j + 1)
  (Herzberg, Jarecki, Krawczyk and Yung, "Proactive secret sharing, or: how to
  cope with perpetual leakage", CRYPTO 1995, §3.2 "share renewal"). Old and new
  shares lie on different polynomials, so a mix of them interpolates to garbage.

Verifiability (Feldman, "A practical scheme for non-interactive verifiable
secret sharing", FOCS 1987; applied to redistribution by Wong, Wang and Wing,
"Verifiable secret redistribution for archive systems", IEEE SISW 2002, §4):
each dealer publishes C_d = (a_{d,0} G, ..., a_{d,t'-1} G), the commitments to
g_d's coefficients. Every party checks

1. the constant term: C_{d,0} == lambda_d * X_d (X_d the dealer's old public
   share) in a reshare, or the point at infinity in a refresh. A dealer failing
   it would change the public key and is blamed. Because the plan checks
   sum_d lambda_d X_d == public key, passing (1) for every dealer means the new
   sharing has the old public key;
2. its sub-shares: x'_j G == sum_d C_d(j + 1) (+ X_j in a refresh), where
   C_d(x) = sum_k x^k C_{d,k}; only on failure each dealer's g_d(j + 1) G ==
   C_d(j + 1) separately, to blame the dealer(s) at fault (the "sum first,
   investigate on failure" of SimplPedPoP, draft BIP "ChillDKG");
3. agreement: the commitments are sent point to point, so a dealer could send
   different (each self-consistent) commitments to different parties, who
   would then compute different public shares. Every party therefore sends
   every other party an agreement hash, H(plan || C_d for every dealer d), and
   aborts unless all equal its own (ChillDKG's CertEq, with authenticated
   channels standing in for the signatures). New public shares follow from the
   commitments: X'_j = sum_d C_d(j + 1) (+ X_j in a refresh).
4. certificate (when the plan names every seat's host public key, as the
   service's plans do): the agreement hash is only a point-to-point echo, which
   a party cannot show anyone else. So every seat then signs (session id,
   agreement hash) with its ChillDKG host key, CertEq style
   (``tss.certificate``), and the ceremony succeeds for a seat once it holds
   every seat's signature: a complete certificate any holder can present later
   (to the host, or to a party that missed the last messages). A seat stores
   its new share as pending before it signs (``Ceremony.pending``): the
   ceremony withholds its signature until the caller confirms the save. A party
   that sends the right echo to some and a wrong one to others thus gains
   nothing: whoever aborts never signs, so nobody holds a certificate, and
   whoever holds one can give it to all.

The BIP-32 chain code is not public (``tss.keygen``: only the keyring's
parties know it, so the host cannot link child keys), so it is not part of
``PublicKeyring`` nor of the plan, which new parties learn from the request.
Every dealer sends its share's chain code with its dealing; a new party takes
it from the dealers, every party checks that all dealers sent the one it
holds or got first, and the agreement hash (3) covers it, so every party ends
with the same chain code, carried unchanged into the new shares.

ECDSA keyrings also re-run the DKLs23 pairwise setup (``tss.ecdsa.keygen``)
among the new holders, so every pair gets fresh base OTs and zero-share seeds
bound to the new keyring; nothing of the old setups is reused.

Ceremony ids ("seats"). The parties of one ceremony are ints (``Ceremony``;
the service's ``Roster`` maps each to a party's static key). A dealer's seat is
its party id in the old keyring, so culprits name old party ids. New party j
(0-based id in the new keyring) sits at ``plan.holders[j]``: the seat of the
same physical party when it also deals (one seat playing both roles),
otherwise n + j, n the old keyring's size (``holder_seats`` assigns them from
the parties' identities). ``tss.local.reshare`` seats every new party at
n + j, so dealers and holders never share a seat there.
In a refresh the seats are the party ids, every party dealing and receiving.

Rounds (payloads are fixed-width for a given plan; the service encrypts and
authenticates every message between parties, so a point-to-point payload is
confidential and its sender authentic):

1. every dealer -> every other seat: its commitment (t' points of the keyring's
   group, ``tss.group``: 33 bytes each on secp256k1 with the point at infinity
   as 33 zero bytes, 32 on ed25519 with the identity's own encoding), the
   32-byte chain code, then for a new holder its 32-byte sub-share.
2. every seat -> every other seat: the 32-byte agreement hash; ECDSA holders
   append their ``setup_round1`` message when the recipient is a holder too.
3. ECDSA only, holder -> holder: ``setup_round2``; then ``setup_finalize``.
4. (3 for bip340 and ed25519) with host public keys in the plan: every seat -> every other
   seat, its 64-byte certificate signature, released once its pending share is saved.

Import. A dealer needs only its secret share, never the pairwise ECDSA setup
of its ``KeyShare``, so a dealer may bring a ``tss.keygen.KeyMaterial``
instead. That is how a whole key enters a keyring by ceremony: its holder is
the sole party of a 1-of-1 keyring (``tss.dealer.import_dealer``), which no
ECDSA ``KeyShare`` can represent (DKLs23 needs t >= 2), and reshares it to
the new parties. Every check above applies unchanged (the new threshold of an
ECDSA keyring is still at least 2), so the new holders get Feldman-checked
shares of the imported key, never of another one.

Error policy: ``InputError`` for a bad plan or a key share not fitting it;
``FaultyParticipantError`` naming the dealer whose message is malformed, whose
sub-share fails the Feldman check or whose constant term would change the key
(``ProtocolError`` with every culprit when several sub-shares fail); a
``ProtocolError`` without culprits when agreement hashes differ (a dealer
equivocated, or the party reporting lies); ``InternalError`` when a self-check
fails. The old key shares are never modified: an abandoned or failed ceremony
leaves them usable, and they stay the keyring until every party has stored its
new share (docs/key-changes.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from tss.ceremony import Ceremony, Message, Random
from tss.certificate import SIGNATURE_BYTES, PendingKeyChange, sign_certificate, verify_certificate
from tss.curve import Point, tagged_hash
from tss.dkg.chilldkg import hostpubkey_gen
from tss.ecdsa.keygen import (
    SetupRound1State,
    SetupRound2State,
    setup_finalize,
    setup_round1,
    setup_round2,
)
from tss.ecdsa.setup import EcdsaSetup
from tss.errors import (
    FaultyParticipantError,
    InputError,
    InternalError,
    InvalidEncodingError,
    ProtocolError,
    ViewMismatchError,
)
from tss.group import SECP256K1, Group, group_of
from tss.keygen import KeyMaterial
from tss.keyshare import MAX_PARTIES, SCHEMES, KeyShare, Scheme
from tss.shamir import eval_point, lagrange_coefficient, poly_eval
from tss.tags import (
    RESHARE_TAG_COEFFS,
    RESHARE_TAG_ECDSA_SESSION,
    RESHARE_TAG_ECHO,
    RESHARE_TAG_PLAN,
)

__all__ = [
    # Functions
    "holder_seats",
    "deal",
    "agreement_hash",
    # Types
    "Mode",
    "DealerShare",
    "PublicKeyring",
    "ResharePlan",
    "Dealing",
    "ReshareOutput",
    "Reshare",
]

Mode = Literal["reshare", "refresh"]
Element = Any
"""A point of the keyring's group (``tss.curve.Point`` or ``tss.group.EdPoint``)."""
DealerShare = KeyShare | KeyMaterial
"""What a dealer brings: its key share, or only its share's material (an import's
1-of-1 keyring; see the module docstring)."""

_SCALAR = 32
_CHAIN_CODE = 32
_HASH = 32


### The public side of a keyring and the plan of a ceremony


@dataclass(frozen=True)
class PublicKeyring:
    """Everything public about a keyring: what every party of a lifecycle ceremony must agree on.

    A new holder that had no share learns it from the plan (the service takes
    it from the keyring's stored metadata); the ceremony's checks make a wrong
    one abort, never yield shares of another key.

    Attributes:
        scheme: "bip340", "ecdsa-secp256k1" or "ed25519".
        threshold: t.
        public_key: the encoded threshold public key (33 bytes on secp256k1, 32 on ed25519).
        public_shares: every party's encoded public share, by party id.
        epoch: the keyring's epoch.
    """

    scheme: Scheme
    threshold: int
    public_key: bytes
    public_shares: tuple[bytes, ...]
    epoch: int

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise InputError(f"unknown scheme {self.scheme!r}")
        if not 1 <= self.threshold <= len(self.public_shares) <= MAX_PARTIES:
            raise InputError("need 1 <= threshold <= parties <= 32")
        if not 0 <= self.epoch < 2**64:
            raise InputError("need 0 <= epoch < 2^64")
        self.group.decode(self.public_key)
        for share in self.public_shares:
            self.group.decode(share)

    @property
    def group(self) -> Group[Any]:
        """The keyring's group (``tss.group``): its points and scalars."""
        return group_of(self.scheme)

    @staticmethod
    def from_share(share: KeyShare) -> PublicKeyring:
        """The public keyring a key share belongs to."""
        return PublicKeyring(
            share.scheme,
            share.threshold,
            share.public_key,
            share.public_shares,
            share.epoch,
        )

    @property
    def parties(self) -> int:
        return len(self.public_shares)

    def to_bytes(self) -> bytes:
        """Canonical encoding (hashed into plans and export contexts)."""
        scheme = self.scheme.encode()
        return (
            bytes([len(scheme)]) + scheme + bytes([self.threshold, self.parties])
            + self.public_key + b"".join(self.public_shares) + self.epoch.to_bytes(8, "big")
        )  # fmt: skip


def _int_tuple(values: Sequence[int], what: str) -> tuple[int, ...]:
    out = tuple(values)
    if any(not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**32 for v in out):
        raise InputError(f"{what} must be ints in [0, 2^32)")
    if len(set(out)) != len(out):
        raise InputError(f"{what} must be distinct")
    return out


@dataclass(frozen=True)
class ResharePlan:
    """What every party of a reshare or refresh must agree on before it starts.

    Build a reshare plan with the constructor and a refresh plan with
    ``ResharePlan.refresh``.

    Attributes:
        session_id: 32 bytes, fresh for this ceremony, the same for every party.
        keyring: the old keyring's public side.
        dealers: old party ids of the dealing quorum (at least t of them), ascending;
            each is also that dealer's seat.
        holders: ``holders[j]`` is the seat of new party j (see the module docstring).
        threshold: t' of the new keyring.
        mode: "reshare" or "refresh".
        hostpubkeys: every seat's 33-byte ChillDKG host public key, in ``seats``
            order: the ceremony then ends with a certificate (module docstring,
            check 4). Empty only for in-process runs (``tss.local``, tests),
            where nobody else must be convinced.

    Raises (on construction):
        InputError: a bad session id, dealer set or holder seats, t' out of range
            (ECDSA needs t' >= 2), host public keys not one valid distinct
            point per seat, a refresh plan not covering every party or
            of a 1-of-n keyring (whose shares are the key), or
            old public shares whose dealers' interpolation is not the public key.
    """

    session_id: bytes
    keyring: PublicKeyring
    dealers: tuple[int, ...]
    holders: tuple[int, ...]
    threshold: int
    mode: Mode = "reshare"
    hostpubkeys: tuple[bytes, ...] = ()
    # Derived in __post_init__: lambda_d * X_d per dealer, and the plan hash.
    weighted_shares: dict[int, Element] = field(init=False, repr=False, compare=False)
    digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kr = self.keyring
        if not isinstance(self.session_id, bytes) or len(self.session_id) != 32:
            raise InputError("session_id must be 32 bytes")
        dealers = _int_tuple(self.dealers, "dealers")
        holders = _int_tuple(self.holders, "holder seats")
        if list(dealers) != sorted(dealers) or any(d >= kr.parties for d in dealers):
            raise InputError("dealers must be ascending old party ids")
        if len(dealers) < kr.threshold:
            raise InputError(f"need at least {kr.threshold} dealers, got {len(dealers)}")
        if not isinstance(self.threshold, int) or isinstance(self.threshold, bool):
            raise InputError("the new threshold must be an int")
        min_t = 2 if kr.scheme == "ecdsa-secp256k1" else 1
        if not min_t <= self.threshold <= len(holders) <= MAX_PARTIES:
            raise InputError(f"need {min_t} <= new threshold <= new parties <= {MAX_PARTIES}")
        if self.mode == "refresh":
            everyone = tuple(range(kr.parties))
            if dealers != everyone or holders != everyone or self.threshold != kr.threshold:
                raise InputError("a refresh keeps every party and the threshold")
            if kr.threshold == 1:  # degree-0 shares are the key itself: nothing to renew
                raise InputError("a refresh needs a threshold of at least 2")
        elif self.mode != "reshare":
            raise InputError(f"unknown mode {self.mode!r}")
        # Reshare: the dealers' weighted public shares are what their constant terms
        # must be, so they must sum to the key. Refresh: the old public shares stay
        # in the new ones, so the first t must interpolate to the key.
        basis = dealers if self.mode == "reshare" else tuple(range(kr.threshold))
        g = kr.group
        weighted = {
            i: g.mul(g.decode(kr.public_shares[i]), lagrange_coefficient(basis, i, order=g.order))
            for i in basis
        }
        if g.sum(weighted.values()) != g.decode(kr.public_key):
            raise InputError("the old public shares do not interpolate to the public key")
        object.__setattr__(self, "weighted_shares", weighted)
        hostpubkeys = tuple(self.hostpubkeys)
        if hostpubkeys:
            if len(hostpubkeys) != len(self.seats) or len(set(hostpubkeys)) != len(hostpubkeys):
                raise InputError("need one distinct host public key per seat")
            for key in hostpubkeys:
                if not isinstance(key, bytes) or len(key) != 33:
                    raise InputError("host public keys must be 33 bytes")
                Point.from_bytes(key)
        object.__setattr__(self, "hostpubkeys", hostpubkeys)
        data = (
            self.session_id + self.mode.encode().ljust(8, b"\x00") + kr.to_bytes()
            + bytes([len(dealers), *dealers]) + bytes([self.threshold, len(holders)])
            + b"".join(h.to_bytes(4, "big") for h in holders) + b"".join(hostpubkeys)
        )  # fmt: skip
        object.__setattr__(self, "digest", tagged_hash(RESHARE_TAG_PLAN, data))

    @staticmethod
    def refresh(
        keyring: PublicKeyring, session_id: bytes, hostpubkeys: Sequence[bytes] = ()
    ) -> ResharePlan:
        """The plan of a refresh: every party deals a sharing of zero to every party.

        Seats are the party ids; the threshold and the parties stay.
        """
        everyone = tuple(range(keyring.parties))
        return ResharePlan(
            session_id, keyring, everyone, everyone, keyring.threshold, "refresh",
            tuple(hostpubkeys),
        )  # fmt: skip

    @property
    def certified(self) -> bool:
        """Whether the ceremony ends with a certificate (host public keys given)."""
        return bool(self.hostpubkeys)

    @property
    def new_parties(self) -> int:
        return len(self.holders)

    @property
    def seats(self) -> tuple[int, ...]:
        """Every seat of the ceremony, ascending."""
        return tuple(sorted(set(self.dealers) | set(self.holders)))

    @property
    def new_epoch(self) -> int:
        return self.keyring.epoch + 1

    def new_id(self, seat: int) -> int | None:
        """The new party id of the holder at ``seat`` (None: not a holder)."""
        return self.holders.index(seat) if seat in self.holders else None

    def expected_constant(self, dealer: int) -> Element:
        """What the dealer's C_{d,0} must be: lambda_d X_d, or the identity in a refresh."""
        if self.mode == "refresh":
            return self.keyring.group.identity()
        return self.weighted_shares[dealer]

    def round1_length(self, seat: int) -> int:
        """Length of a dealer's round-1 payload to ``seat``."""
        point = self.keyring.group.element_size
        return self.threshold * point + _CHAIN_CODE + (_SCALAR if seat in self.holders else 0)


def holder_seats(
    old_parties: int, dealers: Mapping[int, Hashable], new_parties: Sequence[Hashable]
) -> tuple[int, ...]:
    """The seats of the new parties (``ResharePlan.holders``) by the id scheme above.

    A new party that is also a dealer (the same identity, e.g. its channel
    party id) keeps the dealer's seat, its old party id; every other new
    party j sits at ``old_parties + j``.

    Arguments:
        old_parties: n of the old keyring.
        dealers: each dealer's identity, keyed by its old party id.
        new_parties: each new party's identity, in new-party-id order.

    Returns:
        ``holders[j]``, the seat of new party j.

    Raises:
        InputError: repeated identities.
    """
    seat_of = {identity: d for d, identity in dealers.items()}
    if len(seat_of) != len(dealers) or len(set(new_parties)) != len(new_parties):
        raise InputError("party identities must be distinct")
    return tuple(seat_of.get(p, old_parties + j) for j, p in enumerate(new_parties))


### The dealing (round 1)


@dataclass(frozen=True)
class Dealing:
    """One dealer's polynomial: its commitment (public) and every new party's sub-share.

    Attributes:
        dealer: the dealer's old party id.
        commitment: (a_0 G, ..., a_{t'-1} G).
        subshares: g(j + 1) for every new party j (secret; never printed).
        chain_code: the keyring's BIP-32 chain code, from the dealer's share.
    """

    dealer: int
    commitment: tuple[Element, ...]
    subshares: tuple[int, ...] = field(repr=False)
    chain_code: bytes = field(repr=False)
    group: Group[Any] = field(default=SECP256K1, repr=False)

    def commitment_bytes(self) -> bytes:
        return b"".join(self.group.encode_ext(c) for c in self.commitment)

    def message_to(self, plan: ResharePlan, seat: int) -> bytes:
        """The round-1 payload for ``seat``: commitment, chain code, and a holder's sub-share."""
        new_id = plan.new_id(seat)
        sub = b"" if new_id is None else self.subshares[new_id].to_bytes(32, "big")
        return self.commitment_bytes() + self.chain_code + sub


def deal(plan: ResharePlan, share: DealerShare, rand: bytes) -> Dealing:
    """A dealer's round 1: a fresh polynomial with constant lambda_d x_d (reshare) or 0 (refresh).

    The coefficients are a hash of ``rand``, the dealer's secret share and the
    plan, hedged as BIP-340 hedges nonces: weak randomness alone does not make
    them predictable to anyone who lacks the share.

    Arguments:
        plan: the ceremony's plan.
        share: the dealer's old key share (or its ``KeyMaterial``); its party
            id must be a dealer.
        rand: 32 bytes of fresh randomness.

    Returns:
        The dealing (commitment and one sub-share per new party).

    Raises:
        InputError: the share is not of the plan's keyring or not a dealer's,
            or ``rand`` is not 32 bytes.
    """
    _check_own_share(plan, share)
    if share.party_id not in plan.dealers:
        raise InputError("this party is not a dealer of the plan")
    if not isinstance(rand, bytes) or len(rand) != 32:
        raise InputError("rand must be 32 bytes")
    d = share.party_id
    g = plan.keyring.group
    q = g.order
    constant = (
        0
        if plan.mode == "refresh"
        else lagrange_coefficient(plan.dealers, d, order=q) * share.secret_share % q
    )
    seed = tagged_hash(
        RESHARE_TAG_COEFFS,
        rand + share.secret_share.to_bytes(32, "big") + plan.digest + d.to_bytes(4, "big"),
    )
    stream = hashlib.shake_256(seed).digest(64 * (plan.threshold - 1))
    # 64 bytes per coefficient, reduced mod the group order: bias below 2^-250.
    coeffs = [constant] + [
        int.from_bytes(stream[64 * k : 64 * (k + 1)], "big") % q for k in range(plan.threshold - 1)
    ]
    commitment = tuple(g.base_mul(c) for c in coeffs)
    subshares = tuple(poly_eval(coeffs, eval_point(j), order=q) for j in range(plan.new_parties))
    if commitment[0] != plan.expected_constant(d):  # self-check: honest dealers pass check (1)
        raise InternalError("own dealing would change the public key")
    return Dealing(d, commitment, subshares, share.chain_code, g)


def _check_own_share(plan: ResharePlan, share: DealerShare) -> None:
    if isinstance(share, KeyShare):  # checked its secret against its public share already
        if PublicKeyring.from_share(share) != plan.keyring:
            raise InputError("the key share is not of the plan's keyring and epoch")
        return
    if not isinstance(share, KeyMaterial):
        raise InputError("a dealer brings a KeyShare or KeyMaterial")
    kr = plan.keyring
    if (share.threshold, share.public_key, share.public_shares, share.epoch) != (
        kr.threshold, kr.public_key, kr.public_shares, kr.epoch,
    ):  # fmt: skip
        raise InputError("the key material is not of the plan's keyring and epoch")
    # KeyMaterial checks nothing itself: its secret must be its public share's (as in KeyShare).
    g = kr.group
    if not 0 <= share.party_id < kr.parties or not 0 < share.secret_share < g.order:
        raise InputError("key material out of range")
    if g.encode(g.base_mul(share.secret_share)) != kr.public_shares[share.party_id]:
        raise InputError("secret share does not match the party's public share")


def _parse_round1(
    plan: ResharePlan, dealer: int, seat: int, payload: bytes
) -> tuple[tuple[Element, ...], bytes, int | None]:
    """Decode a dealer's round-1 payload (commitment, chain code, sub-share); every
    fault blames the dealer."""
    if len(payload) != plan.round1_length(seat):
        raise FaultyParticipantError(dealer, "round-1 payload has the wrong length")
    g = plan.keyring.group
    size = g.element_size
    end = plan.threshold * size
    try:
        commitment = tuple(g.decode_ext(payload[k : k + size]) for k in range(0, end, size))
        sub = payload[end + _CHAIN_CODE :]
        subshare = _scalar(sub, g.order) if sub else None
    except InvalidEncodingError as e:
        raise FaultyParticipantError(dealer, f"malformed dealing: {e}") from e
    return commitment, payload[end : end + _CHAIN_CODE], subshare


def _scalar(data: bytes, order: int) -> int:
    """A 32-byte big-endian scalar below the group order (sub-shares on the wire)."""
    k = int.from_bytes(data, "big")
    if len(data) != _SCALAR or k >= order:
        raise InvalidEncodingError("scalar out of range")
    return k


def _evaluate(g: Group[Any], commitment: Sequence[Element], x: int) -> Element:
    """C(x) = sum_k x^k C_k: the public value a commitment implies at x."""
    terms = [commitment[0]]
    xk = 1
    for c in commitment[1:]:
        xk = xk * x % g.order
        terms.append(g.mul(c, xk))
    return g.sum(terms)


def agreement_hash(
    plan: ResharePlan, commitments: Mapping[int, Sequence[Element]], chain_code: bytes
) -> bytes:
    """The 32-byte hash every party sends in round 2: the plan, every dealer's
    commitment and the chain code.

    Arguments:
        plan: the ceremony's plan.
        commitments: every dealer's commitment as this party received it.
        chain_code: the keyring's chain code as this party holds or received it.
    """
    g = plan.keyring.group
    data = plan.digest + b"".join(
        b"".join(g.encode_ext(c) for c in commitments[d]) for d in plan.dealers
    )
    return tagged_hash(RESHARE_TAG_ECHO, data + chain_code)


def _new_keyring(
    plan: ResharePlan, commitments: Mapping[int, Sequence[Element]]
) -> tuple[PublicKeyring, tuple[Element, ...]]:
    """The new public keyring from checked commitments (X'_j = C(j + 1) (+ X_j in a refresh))."""
    kr = plan.keyring
    g = kr.group
    summed = [g.sum(commitments[d][k] for d in plan.dealers) for k in range(plan.threshold)]
    points = []
    for j in range(plan.new_parties):
        p = _evaluate(g, summed, eval_point(j))
        if plan.mode == "refresh":
            p = g.add(p, g.decode(kr.public_shares[j]))
        if g.is_identity(p):  # only dealers colluding with party j (who alone knows its
            # sub-shares) can aim at this; nobody can be blamed reliably
            raise ProtocolError(f"new public share of party {j} is the point at infinity")
        points.append(p)
    # Self-check: t' new public shares interpolate to the unchanged public key (check (1) holds).
    ids = list(range(plan.threshold))
    interpolated = g.sum(g.mul(points[j], lagrange_coefficient(ids, j, order=g.order)) for j in ids)
    if interpolated != g.decode(kr.public_key):
        raise InternalError("the new public shares do not interpolate to the public key")
    keyring = PublicKeyring(
        kr.scheme,
        plan.threshold,
        kr.public_key,
        tuple(g.encode(p) for p in points),
        plan.new_epoch,
    )
    return keyring, tuple(points)


def _blame_subshares(
    plan: ResharePlan,
    new_id: int,
    commitments: Mapping[int, Sequence[Element]],
    subshares: Mapping[int, int],
) -> NoReturn:
    """After the summed check failed: blame the dealers whose own sub-share fails (Feldman)."""
    x = eval_point(new_id)
    g = plan.keyring.group
    bad = [d for d in plan.dealers if g.base_mul(subshares[d]) != _evaluate(g, commitments[d], x)]
    if len(bad) == 1:
        raise FaultyParticipantError(bad[0], "sub-share does not match its commitment")
    if bad:
        raise ProtocolError("sub-shares do not match their commitments", bad)
    # The sum fails but no addend does: only a fault in this process can do that.
    raise InternalError("summed sub-shares fail the check but each one passes")


### Results and the ceremony


@dataclass(frozen=True)
class ReshareOutput:
    """One seat's result of a reshare or refresh.

    Attributes:
        keyring: the new keyring's public side (the same for every seat).
        share: this seat's new key share (an ECDSA one with its fresh pairwise
            setup); None for a dealer that leaves the keyring.
        agreement: the agreement hash every seat confirmed (a transcript id
            the service can record with the epoch change).
        certificate: every seat's signature over it, verified (empty when the
            plan has no host public keys).
    """

    keyring: PublicKeyring
    share: KeyShare | None
    agreement: bytes
    certificate: bytes = b""


class Reshare(Ceremony[ReshareOutput]):
    """One seat's side of a reshare or refresh; ``result`` is its ``ReshareOutput``.

    Rounds: 2 for bip340 and ed25519, 3 for ecdsa-secp256k1, one more for the certificate
    (see the module docstring); before that last round the ceremony waits for
    ``confirm_saved`` (``pending`` holds the new share).

    Arguments:
        plan: the ceremony's plan (identical at every seat).
        me: this party's seat.
        share: this party's old key share if it deals (required at a dealer's
            seat, hence at every seat of a refresh; a ``KeyMaterial`` will do,
            see "Import" above); None for any other seat.
        rand: fresh randomness.
        hostseckey: this party's 32-byte ChillDKG host secret key (required
            when the plan has host public keys; it signs the certificate).

    Raises:
        InputError: ``me`` is not a seat, the share is missing, extra or
            not the plan's dealer's, or the host key is missing or not this seat's.
    """

    def __init__(
        self,
        plan: ResharePlan,
        me: int,
        share: DealerShare | None,
        rand: Random,
        hostseckey: bytes | None = None,
    ) -> None:
        super().__init__(me, plan.seats, rand)
        self._exchange_rounds = 3 if plan.keyring.scheme == "ecdsa-secp256k1" else 2
        self.rounds = self._exchange_rounds + (1 if plan.certified else 0)
        self._position = plan.seats.index(me)
        if plan.certified and (
            hostseckey is None or hostpubkey_gen(hostseckey) != plan.hostpubkeys[self._position]
        ):
            raise InputError("this seat needs the host secret key of its host public key")
        self._hostseckey = hostseckey
        self._plan = plan
        self._new_id = plan.new_id(me)
        if me in plan.dealers:
            if share is None or share.party_id != me:
                raise InputError("a dealer's seat needs that dealer's old key share")
            _check_own_share(plan, share)
        elif share is not None:
            raise InputError("only dealers bring an old key share")
        self._share = share
        self._dealing: Dealing | None = None
        self._keyring: PublicKeyring | None = None
        self._material: KeyMaterial | None = None
        self._agreement = b""
        self._setup1: SetupRound1State | None = None
        self._setup2: SetupRound2State | None = None
        self._new_share: KeyShare | None = None  # held while the certificate completes
        self._signatures: dict[int, bytes] = {}

    # --- round logic -------------------------------------------------------------

    def _others(self) -> list[int]:
        return [s for s in self.parties if s != self.me]

    def _expected_senders(self, round_: int) -> Sequence[int]:
        if round_ == 1:
            return [d for d in self._plan.dealers if d != self.me]
        if round_ == 2 or round_ > self._exchange_rounds:
            return self._others()
        if self._new_id is None:
            return []
        return [s for s in self._plan.holders if s != self.me]

    def _start(self) -> list[Message]:
        if self._share is None:
            return []
        dealing = deal(self._plan, self._share, self._rand(32))
        self._dealing = dealing
        return self._p2p(1, {s: dealing.message_to(self._plan, s) for s in self._others()})

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        if round_ > self._exchange_rounds:
            return self._receive_certificate(payloads)
        if round_ == 1:
            return self._receive_dealings(payloads)
        if round_ == 2:
            return self._receive_agreement(payloads)
        if self._new_id is None:  # a dealer leaving an ECDSA keyring: no pairwise setup
            return []
        return self._finish_setup(payloads)

    def _receive_dealings(self, payloads: Mapping[int, bytes]) -> list[Message]:
        plan = self._plan
        commitments: dict[int, tuple[Element, ...]] = {}
        chain_codes: dict[int, bytes] = {}
        subshares: dict[int, int] = {}
        for d in plan.dealers:
            if d == self.me:
                continue
            commitments[d], chain_codes[d], sub = _parse_round1(plan, d, self.me, payloads[d])
            if sub is not None:
                subshares[d] = sub
        chain_code = _agreed_chain_code(self._share, chain_codes)
        if self._dealing is not None:
            commitments[self.me] = self._dealing.commitment
            if self._new_id is not None:
                subshares[self.me] = self._dealing.subshares[self._new_id]
            self._dealing = None  # the polynomial's values are no longer needed
        for d in plan.dealers:  # check (1): nobody changes the public key
            if commitments[d][0] != plan.expected_constant(d):
                raise FaultyParticipantError(d, "dealing would change the public key")
        self._keyring, points = _new_keyring(plan, commitments)
        if self._new_id is not None:  # check (2): the sub-shares, summed first
            j = self._new_id
            g = plan.keyring.group
            secret = sum(subshares.values()) % g.order
            if plan.mode == "refresh":
                if self._share is None:
                    raise InternalError("a refresh holder without its old share")
                secret = (secret + self._share.secret_share) % g.order
            if g.base_mul(secret) != points[j]:
                _blame_subshares(plan, j, commitments, subshares)
            kr = self._keyring
            self._material = KeyMaterial(
                j, kr.threshold, kr.public_key, kr.public_shares, secret, chain_code, kr.epoch
            )
        self._agreement = agreement_hash(plan, commitments, chain_code)
        out = {s: self._agreement for s in self._others()}
        if self._material is not None and self._exchange_rounds == 3:  # ECDSA: pairwise setup
            session_id = tagged_hash(RESHARE_TAG_ECDSA_SESSION, self._agreement)
            self._setup1, setup_msgs = setup_round1(self._material, session_id, self._rand(32))
            for j, msg in setup_msgs.items():
                out[plan.holders[j]] += msg
        return self._p2p(2, out)

    def _receive_agreement(self, payloads: Mapping[int, bytes]) -> list[Message]:
        # Check (3) before anything else, so that a mismatch reads as what it is.
        setup_msgs: dict[int, bytes] = {}
        mismatched = []
        for s, payload in payloads.items():
            if len(payload) < _HASH:
                raise FaultyParticipantError(s, "round-2 payload too short")
            if not hmac.compare_digest(payload[:_HASH], self._agreement):
                mismatched.append(s)
            elif self._setup1 is not None and s in self._plan.holders:
                setup_msgs[self._plan.holders.index(s)] = payload[_HASH:]
            elif len(payload) != _HASH:
                raise FaultyParticipantError(s, "round-2 payload has the wrong length")
        if mismatched:
            raise ViewMismatchError(
                f"agreement check failed: parties {mismatched} received different dealings "
                "(a dealer equivocated, or those parties misreport); aborting"
            )
        if self._setup1 is None:  # bip340, or a dealer leaving the keyring
            return self._finish_with(None)
        with _blame_seats(self._plan):
            self._setup2, replies = setup_round2(self._setup1, setup_msgs)
        self._setup1 = None
        return self._p2p(3, {self._plan.holders[j]: m for j, m in replies.items()})

    def _finish_setup(self, payloads: Mapping[int, bytes]) -> list[Message]:
        if self._setup2 is None:
            raise InternalError("round 3 out of order")
        msgs = {self._plan.holders.index(s): m for s, m in payloads.items()}
        with _blame_seats(self._plan):
            setup = setup_finalize(self._setup2, msgs)
        self._setup2 = None
        return self._finish_with(setup)

    def _finish_with(self, setup: EcdsaSetup | None) -> list[Message]:
        """The new share exists: finish, or (certified) hold the signature until it is saved."""
        keyring, material = self._keyring, self._material
        if keyring is None:
            raise InternalError("finished before round 1")
        share = None if material is None else material.key_share(keyring.scheme, setup)
        self._material = None
        if not self._plan.certified:
            self._finish(ReshareOutput(keyring, share, self._agreement))
            return []
        plan = self._plan
        if self._hostseckey is None:
            raise InternalError("a certified ceremony without its host key")
        self._new_share = share
        signature = sign_certificate(
            self._hostseckey, plan.session_id, self._agreement, self._position, self._rand(32)
        )
        self._signatures = {self.me: signature}
        pending = PendingKeyChange(
            share, keyring.public_key, keyring.epoch, plan.session_id, self._agreement,
            plan.hostpubkeys, self._position,
        )  # fmt: skip
        return self._hold(pending, self._broadcast(self.rounds, signature))

    def _receive_certificate(self, payloads: Mapping[int, bytes]) -> list[Message]:
        """Check every seat's signature over our transcript; the complete certificate finishes.

        The echo round already showed every seat the same agreement hash, so a
        signature that fails here is its sender's fault.
        """
        plan, keyring = self._plan, self._keyring
        if keyring is None:
            raise InternalError("certificate round before round 1")
        for s, sig in payloads.items():
            if len(sig) != SIGNATURE_BYTES:
                raise FaultyParticipantError(s, "certificate signature has the wrong length")
            self._signatures[s] = sig
        certificate = b"".join(self._signatures[s] for s in plan.seats)
        try:
            verify_certificate(plan.hostpubkeys, plan.session_id, self._agreement, certificate)
        except FaultyParticipantError as e:
            raise FaultyParticipantError(
                plan.seats[e.participant], "certificate signature does not verify"
            ) from e
        self._finish(ReshareOutput(keyring, self._new_share, self._agreement, certificate))
        return []


def _agreed_chain_code(own: DealerShare | None, received: Mapping[int, bytes]) -> bytes:
    """The chain code every dealer sent: a dealer holds it already and blames a dealer
    sending another one; a new party takes the first, and aborts, blaming nobody, if
    dealers disagree (it cannot tell who is right). The agreement hash then makes
    sure every party ended with the same one."""
    if own is not None:
        liars = sorted(d for d, code in received.items() if code != own.chain_code)
        if len(liars) == 1:
            raise FaultyParticipantError(liars[0], "sent another chain code than the keyring's")
        if liars:
            raise ProtocolError("dealers sent another chain code than the keyring's", liars)
        return own.chain_code
    codes = set(received.values())
    if len(codes) != 1:
        raise ProtocolError("dealers sent different chain codes; aborting")
    return codes.pop()


@contextmanager
def _blame_seats(plan: ResharePlan) -> Iterator[None]:
    """Re-raise the pairwise setup's blame (new party ids) naming ceremony seats."""
    try:
        yield
    except FaultyParticipantError as e:
        seat = plan.holders[e.participant]
        raise FaultyParticipantError(
            seat, f"pairwise ECDSA setup (new party {e.participant}) failed"
        ) from e
