"""Export: the whole private key, for exactly one designated party (docs/architecture.md).

**Export ceremony** (``Export``, one round). The request names a quorum Q of
at least t key holders and a recipient with an X25519 public key (bound, in the
service, to the wallet owner's authorisation). Each member i of Q sends the
recipient w_i = lambda_i * x_i, lambda_i its Lagrange coefficient at 0 in Q,
sealed to the recipient's key (``seal_to``). The recipient opens each
contribution, checks w_i G == lambda_i X_i against the keyring's public share
(a bad contribution blames its sender), and outputs x = sum_i w_i after
checking x G == the public key. Neither the relay, nor the host, nor the
other holders see any w_i or x: each contribution is encrypted to the
recipient alone, on top of the ceremony's own channel encryption, so it stays
confidential even where it travels outside a ceremony (e.g. stored for a
recipient that is offline). The recipient may itself be one of the holders;
its own w_i never leaves it.

What the recipient learns: the key and the quorum's w_i, from which it can
compute every share of the current epoch (t points of the polynomial). Once
the key is exported that adds no signing power, but a keyring that stays in use
after an export should be refreshed.

**Offline export** (``offline_export``): reconstruct the key from at least t
backup key shares with no server or ceremony involved: Lagrange interpolation
at 0, checked against the public key, and every other party's public share
checked against the polynomial the backups define (so backups of a corrupted
or mixed keyring are refused instead of yielding a wrong key).

**Sealing** (``seal_to`` / ``open_sealed``): HPKE-style (RFC 9180 base mode's
shape, composed from ``cryptography``'s X25519, HKDF-SHA256 and
ChaCha20-Poly1305): an ephemeral X25519 key ``e`` (hedged: derived from the
caller's 32 random bytes, the context and the plaintext, so weak randomness
cannot repeat a key for a different plaintext), ``dh = X25519(e, pk_R)``, key =
HKDF(dh, salt = enc || pk_R, info = label || context), one ChaCha20-Poly1305
encryption under a zero nonce (each key encrypts once) with the context as
associated data. Output: enc (32 bytes) || ciphertext || tag (16 bytes). The
context binds session id, keyring, quorum, sender and recipient key, so a
contribution cannot be replayed into another export or attributed to another
holder. The sender is not authenticated by the sealing (base mode): the check
w_i G == lambda_i X_i is what makes a contribution trustworthy, and only a
holder of x_i can pass it.

Error policy: ``InputError`` for bad arguments (``InvalidEncodingError`` when a
sealed blob does not open: one opaque error, as Fernet's ``InvalidToken``);
``FaultyParticipantError`` naming a holder whose contribution does not open or
fails its check; ``InternalError`` for a failed self-check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tss.ceremony import Ceremony, Message, Random
from tss.channel import validate_public_key
from tss.curve import tagged_hash
from tss.ed25519_keys import expanded_secret
from tss.errors import FaultyParticipantError, InputError, InternalError, InvalidEncodingError
from tss.keyshare import KeyShare
from tss.reshare import PublicKeyring
from tss.shamir import eval_point, lagrange_coefficient
from tss.tags import EXPORT_HKDF_INFO_LABEL, EXPORT_TAG_CONTEXT, EXPORT_TAG_EPHEMERAL

__all__ = [
    # Functions
    "seal_to",
    "open_sealed",
    "export_contribution",
    "export_finalize",
    "offline_export",
    # Types
    "ExportPlan",
    "ExportOutput",
    "Export",
]

_ENC = 32
_TAG = 16
_NONCE = bytes(12)
SEALED_CONTRIBUTION_BYTES = _ENC + 32 + _TAG
"""Length of one sealed export contribution: enc, the 32-byte w_i, the AEAD tag."""


### Sealing to an X25519 key


def _sealing_key(dh: bytes, enc: bytes, recipient_pk: bytes, context: bytes) -> ChaCha20Poly1305:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=enc + recipient_pk,
        info=EXPORT_HKDF_INFO_LABEL + context,
    )
    return ChaCha20Poly1305(hkdf.derive(dh))


def seal_to(recipient_pk: bytes, plaintext: bytes, context: bytes, rand: bytes) -> bytes:
    """Encrypt ``plaintext`` so that only the holder of ``recipient_pk``'s private key reads it.

    Arguments:
        recipient_pk: the recipient's 32-byte X25519 public key.
        plaintext: the bytes to seal.
        context: bytes both sides know (bound into the key and as associated data).
        rand: 32 bytes of fresh randomness.

    Returns:
        enc (32) || ciphertext (len(plaintext)) || tag (16).

    Raises:
        InputError: ``rand`` is not 32 bytes; InvalidEncodingError: a bad recipient key.
    """
    pk = validate_public_key(recipient_pk)
    if not isinstance(rand, bytes) or len(rand) != 32:
        raise InputError("rand must be 32 bytes")
    ikm = tagged_hash(
        EXPORT_TAG_EPHEMERAL, rand + pk + tagged_hash(EXPORT_TAG_EPHEMERAL, context + plaintext)
    )
    ephemeral = X25519PrivateKey.from_private_bytes(ikm)
    enc = ephemeral.public_key().public_bytes_raw()
    dh = ephemeral.exchange(X25519PublicKey.from_public_bytes(pk))
    return enc + _sealing_key(dh, enc, pk, context).encrypt(_NONCE, plaintext, context)


def open_sealed(recipient_key: bytes, sealed: bytes, context: bytes) -> bytes:
    """Decrypt ``seal_to`` output with the recipient's private key.

    Arguments:
        recipient_key: the recipient's 32-byte X25519 private key.
        sealed: ``seal_to`` output.
        context: the same context the sender used.

    Returns:
        The plaintext.

    Raises:
        InputError: ``recipient_key`` is not 32 bytes.
        InvalidEncodingError: the blob does not open (wrong key, wrong context,
            tampered or malformed: deliberately one error).
    """
    if not isinstance(recipient_key, bytes) or len(recipient_key) != 32:
        raise InputError("an X25519 private key is 32 bytes")
    sk = X25519PrivateKey.from_private_bytes(recipient_key)
    pk = sk.public_key().public_bytes_raw()
    if not isinstance(sealed, bytes) or len(sealed) < _ENC + _TAG:
        raise InvalidEncodingError("sealed data does not open")
    enc = sealed[:_ENC]
    try:
        dh = sk.exchange(X25519PublicKey.from_public_bytes(validate_public_key(enc)))
        return _sealing_key(dh, enc, pk, context).decrypt(_NONCE, sealed[_ENC:], context)
    except (InvalidEncodingError, InvalidTag, ValueError) as e:
        raise InvalidEncodingError("sealed data does not open") from e


### The export ceremony


@dataclass(frozen=True)
class ExportPlan:
    """What every party of an export agrees on.

    Attributes:
        session_id: 32 bytes, fresh for this export, the same for every party.
        keyring: the keyring's public side.
        quorum: party ids of the holders taking part (at least t), ascending;
            each is also that holder's seat.
        recipient: the recipient's seat (a quorum member's id, or any other int).
        recipient_pk: the recipient's 32-byte X25519 public key.

    Raises (on construction):
        InputError: a bad session id, quorum, recipient seat or key, or
            quorum public shares that do not interpolate to the public key.
    """

    session_id: bytes
    keyring: PublicKeyring
    quorum: tuple[int, ...]
    recipient: int
    recipient_pk: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.session_id, bytes) or len(self.session_id) != 32:
            raise InputError("session_id must be 32 bytes")
        q = self.quorum
        if (
            any(not isinstance(i, int) or isinstance(i, bool) for i in q)
            or list(q) != sorted(set(q))
            or not q
            or q[0] < 0
            or q[-1] >= self.keyring.parties
        ):
            raise InputError("quorum must be distinct ascending party ids of the keyring")
        if len(q) < self.keyring.threshold:
            raise InputError(f"need at least {self.keyring.threshold} holders")
        if not isinstance(self.recipient, int) or not 0 <= self.recipient < 2**32:
            raise InputError("recipient seat must be an int in [0, 2^32)")
        try:
            validate_public_key(self.recipient_pk)
        except InvalidEncodingError as e:
            raise InputError(f"recipient key: {e}") from e
        # The quorum's weighted public shares must sum to the key, or honest
        # contributions could not reconstruct it.
        g = self.keyring.group
        weighted = (
            g.mul(
                g.decode(self.keyring.public_shares[i]), lagrange_coefficient(q, i, order=g.order)
            )
            for i in q
        )
        if g.sum(weighted) != g.decode(self.keyring.public_key):
            raise InputError("the quorum's public shares do not interpolate to the public key")

    @property
    def seats(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.quorum) | {self.recipient}))

    def context(self, sender: int) -> bytes:
        """What a sealed contribution of ``sender`` is bound to."""
        data = (
            self.session_id + self.keyring.to_bytes() + bytes([len(self.quorum), *self.quorum])
            + sender.to_bytes(4, "big") + self.recipient_pk
        )  # fmt: skip
        return tagged_hash(EXPORT_TAG_CONTEXT, data)


def _weighted_share(plan: ExportPlan, share: KeyShare) -> int:
    if PublicKeyring.from_share(share) != plan.keyring or share.party_id not in plan.quorum:
        raise InputError("the key share is not a quorum member's of the plan's keyring")
    q = plan.keyring.group.order
    return lagrange_coefficient(plan.quorum, share.party_id, order=q) * share.secret_share % q


def export_contribution(plan: ExportPlan, share: KeyShare, rand: bytes) -> bytes:
    """A quorum member's contribution: lambda_i x_i sealed to the recipient.

    Arguments:
        plan: the export's plan.
        share: this holder's key share (its party id in the quorum).
        rand: 32 bytes of fresh randomness.

    Returns:
        ``SEALED_CONTRIBUTION_BYTES`` bytes for the recipient.

    Raises:
        InputError: the share is not of the plan's keyring or quorum, or bad ``rand``.
    """
    w = _weighted_share(plan, share)
    return seal_to(plan.recipient_pk, w.to_bytes(32, "big"), plan.context(share.party_id), rand)


def export_finalize(
    plan: ExportPlan,
    recipient_key: bytes,
    contributions: Mapping[int, bytes],
    own_share: KeyShare | None = None,
) -> bytes:
    """The recipient's step: open and check every contribution, return the private key.

    Arguments:
        plan: the export's plan.
        recipient_key: the recipient's 32-byte X25519 private key.
        contributions: the sealed contribution of every quorum member (but the
            recipient, if it is one), keyed by party id.
        own_share: the recipient's own key share when it is a quorum member.

    Returns:
        The private key as ``exported_key`` gives it (32 bytes; 64 for ed25519).

    Raises:
        InputError: missing or extra contributions, a wrong recipient key, or
            ``own_share`` not fitting the plan.
        FaultyParticipantError: a contribution that does not open or does not
            match its sender's public share.
        InternalError: the checked contributions do not sum to the key.
    """
    if not isinstance(recipient_key, bytes) or len(recipient_key) != 32:
        raise InputError("an X25519 private key is 32 bytes")
    own_pk = X25519PrivateKey.from_private_bytes(recipient_key).public_key().public_bytes_raw()
    if own_pk != plan.recipient_pk:
        raise InputError("the recipient key does not match the plan")
    own = own_share.party_id if own_share is not None else None
    if own is not None and own != plan.recipient:
        raise InputError("own_share must be the recipient's")
    if sorted(contributions) != [i for i in plan.quorum if i != own]:
        raise InputError("need exactly one contribution per other quorum member")
    weighted = {} if own_share is None else {own: _weighted_share(plan, own_share)}
    g = plan.keyring.group
    for i, sealed in contributions.items():
        try:
            w = _scalar(open_sealed(recipient_key, sealed, plan.context(i)), g.order)
        except InvalidEncodingError as e:
            raise FaultyParticipantError(i, "export contribution does not open") from e
        expected = g.mul(
            g.decode(plan.keyring.public_shares[i]),
            lagrange_coefficient(plan.quorum, i, order=g.order),
        )
        if g.base_mul(w) != expected:
            raise FaultyParticipantError(i, "export contribution does not match its public share")
        weighted[i] = w
    key = sum(weighted.values()) % g.order
    if key == 0 or g.encode(g.base_mul(key)) != plan.keyring.public_key:
        raise InternalError("checked contributions do not reconstruct the public key")
    return exported_key(plan.keyring.scheme, key)


def exported_key(scheme: str, key: int) -> bytes:
    """The form a whole key leaves in: 32 bytes big-endian on secp256k1; for
    ed25519 the 64-byte RFC 8032 expanded secret (``tss.ed25519_keys``: a
    keyring holds no seed, so none can be exported)."""
    return expanded_secret(key) if scheme == "ed25519" else key.to_bytes(32, "big")


def _scalar(data: bytes, order: int) -> int:
    k = int.from_bytes(data, "big")
    if len(data) != 32 or not 0 <= k < order:
        raise InvalidEncodingError("scalar out of range")
    return k


@dataclass(frozen=True)
class ExportOutput:
    """One seat's result of an export: the key for the recipient, None for everyone else."""

    private_key: bytes | None = field(repr=False)

    def __repr__(self) -> str:
        key = "None" if self.private_key is None else "<redacted>"
        return f"ExportOutput(private_key={key})"


class Export(Ceremony[ExportOutput]):
    """One seat's side of an export; ``result`` is its ``ExportOutput``.

    One round: every quorum member but the recipient sends its sealed
    contribution to the recipient and finishes; the recipient finishes with
    the key.

    Arguments:
        plan: the export's plan (identical at every seat).
        me: this party's seat.
        share: this party's key share if it is a quorum member, else None.
        rand: fresh randomness.
        recipient_key: at the recipient's seat, its 32-byte X25519 private key.

    Raises:
        InputError: a seat, share or recipient key not fitting the plan.
    """

    rounds = 1

    def __init__(
        self,
        plan: ExportPlan,
        me: int,
        share: KeyShare | None,
        rand: Random,
        recipient_key: bytes | None = None,
    ) -> None:
        super().__init__(me, plan.seats, rand)
        self._plan = plan
        if (share is not None) != (me in plan.quorum) or (
            share is not None and share.party_id != me
        ):
            raise InputError("quorum members (only) bring their own key share")
        if (recipient_key is not None) != (me == plan.recipient):
            raise InputError("the recipient (only) brings its X25519 private key")
        self._share = share
        self._recipient_key = recipient_key

    def _expected_senders(self, round_: int) -> Sequence[int]:
        if self.me != self._plan.recipient:
            return []
        return [i for i in self._plan.quorum if i != self.me]

    def _start(self) -> list[Message]:
        if self._share is None or self.me == self._plan.recipient:
            return []
        sealed = export_contribution(self._plan, self._share, self._rand(32))
        return self._p2p(1, {self._plan.recipient: sealed})

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        if self._recipient_key is None:
            self._finish(ExportOutput(None))
            return []
        key = export_finalize(self._plan, self._recipient_key, payloads, self._share)
        self._recipient_key = None
        self._finish(ExportOutput(key))
        return []


### Offline export


def offline_export(shares: Sequence[KeyShare]) -> bytes:
    """Reconstruct the private key from at least t backup key shares, with no server.

    Arguments:
        shares: key shares of one keyring and epoch (e.g. decrypted backups,
            ``KeyShare.from_bytes``), distinct parties, at least the threshold.

    Returns:
        The private key as ``exported_key`` gives it (32 bytes; 64 for ed25519).

    Raises:
        InputError: too few shares, repeated parties, shares of different
            keyrings or epochs, or shares inconsistent with the keyring's
            public key or public shares (a corrupted backup).
    """
    if not shares:
        raise InputError("no key shares given")
    keyring = PublicKeyring.from_share(shares[0])
    if any(PublicKeyring.from_share(s) != keyring for s in shares[1:]):
        raise InputError("shares belong to different keyrings or epochs")
    ids = [s.party_id for s in shares]
    if len(set(ids)) != len(ids):
        raise InputError("the same party's share was given twice")
    t = keyring.threshold
    if len(shares) < t:
        raise InputError(f"need at least {t} shares, got {len(shares)}")
    # t shares define the polynomial f; every other party's public share must be
    # f(j + 1) G and the key f(0) G (each KeyShare already matches its own).
    basis = {s.party_id: s.secret_share for s in shares[:t]}
    g = keyring.group
    key = _interpolate(basis, 0, g.order)
    others = [j for j in range(keyring.parties) if j not in basis]
    expected = [g.base_mul(key)] + [
        g.base_mul(_interpolate(basis, eval_point(j), g.order)) for j in others
    ]
    actual = [g.decode(keyring.public_key)] + [g.decode(keyring.public_shares[j]) for j in others]
    if key == 0 or expected != actual:
        raise InputError("the shares are inconsistent with the keyring's public key or shares")
    return exported_key(keyring.scheme, key)


def _interpolate(basis: Mapping[int, int], x: int, order: int) -> int:
    """f(x) for the polynomial through {(i + 1, y_i)} (Lagrange; scalars only)."""
    total = 0
    for i, y in basis.items():
        num, den = 1, 1
        for j in basis:
            if j != i:
                num = num * (x - eval_point(j)) % order
                den = den * (eval_point(i) - eval_point(j)) % order
        total += y * num * pow(den, -1, order)
    return total % order
