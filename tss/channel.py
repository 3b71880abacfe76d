"""End-to-end authenticated, encrypted party channels for ceremonies (docs/architecture.md).

Every party holds a static X25519 key (``StaticKey``); its party id derives from
the public key (``party_id``). Each peer message is sealed on its own with HPKE
(RFC 9180) in Auth mode, suite DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
ChaCha20-Poly1305, one-shot (§6.1): only the holder of the sender's or the
recipient's static private key can produce a ciphertext that opens, so neither
the relay nor the host can read, forge or re-address messages. The HPKE ``info``
is a label and the envelope header (version, room, ceremony, round, sender,
recipient, sequence number), so every header field is bound into the key
schedule (§5.1); the header itself travels in the clear for routing.

Why these choices:

- ``cryptography`` 50.0.2 ships HPKE (``hazmat.primitives.hpke``) in Base mode
  only, with the ephemeral key drawn from OS randomness: no Auth mode and no
  way to pass randomness in. The Auth-mode construction is therefore composed
  here from ``cryptography``'s X25519, HKDF and ChaCha20-Poly1305, step by step
  after RFC 9180 §4.1 (DHKEM ``AuthEncap``/``AuthDecap``), §5.1 (``KeySchedule``)
  and §7.1.3 (``DeriveKeyPair``), and pinned by the RFC's Appendix A.2.3 vector
  in tests/test_channel.py.
- One-shot per message, rather than one long-lived HPKE context per pair: each
  message gets its own ephemeral key, so no AEAD key/nonce state outlives a
  call and a rolled-back or copied channel object cannot reuse a nonce. The
  static-static DH ``DH(skS, pkR)``, the same for every message of a pair, is
  computed once per peer by the ``StaticKey`` (and a peer's key is checked for
  low order once per process), leaving 2 X25519 operations per seal and 1 per
  open.
- The ephemeral ``ikmE`` is hedged (as BIP-340 hedges its nonce): a tagged hash
  of a secret only the two parties know (the static-static DH), the caller's 32
  random bytes, the header and a hash of the plaintext. Reused or weak
  randomness then cannot repeat a (key, nonce) pair for two different messages,
  and an outsider who knows the randomness cannot test plaintext guesses against
  ``enc``. With good randomness it is simply a fresh ephemeral key, as in RFC
  9180 ``Encap``.
- Broadcasts are sealed once per recipient (``ChannelSender.seal_broadcast``):
  Auth-mode HPKE authenticates a sender to one recipient, and one shared group
  key would let any recipient forge the sender's broadcast to the others. What
  per-recipient copies cannot stop is a malicious *sender* sending different
  content to different recipients; the relay cannot create such differences
  (it cannot seal), and sender equivocation is caught by the protocols' own
  echo / CertEq checks, as in ChillDKG.
- Auth mode gives no key-compromise-impersonation resistance (RFC 9180 §9.1.1):
  whoever steals a party's static private key can impersonate anyone *to that
  party*. The static keys live in the enclave (sealed) and on client devices.

Ordering: every (sender, recipient, ceremony) stream carries a sequence number
from 0, bound into the key schedule; ``ChannelReceiver`` accepts each sequence
number of a stream at most once, in any order, so a replayed envelope never
opens twice (RFC 9180 §9.7.1-9.7.3 leaves replay protection to the
application). Order between rounds is the ceremony's business (it buffers a
later round's message until its round runs), so a relay that reorders delays
nothing, and a dropped message is noticed as non-delivery: the ceremony's
deadline runs out. A ceremony id must never be reused within a room: the
binding is (room, ceremony, round, sender, recipient, seq), and a fresh
receiver for a reused ceremony id would accept the old ceremony's messages again.
Against a room and ceremony id that are reused anyway (by a relay or
coordinator replaying an old request), sender and receiver may bind a
``context`` as the HPKE ``aad`` (§5.2): the service passes the enclave's
single-use request challenge (``shardkeep.lifecycle.channel_context``), so an
envelope of an earlier session with the same ids does not authenticate in a
new one and is dropped, never taken as the sender's word.

Error policy (checks in the order of taurus ``CanAccept``: routing before any
cryptography). No channel error blames a party: the header travels in the
clear, so the relay can put any sender id on any bytes, and only an envelope
that opens is the sender's word (``tss.session`` drops rejected envelopes and
keeps waiting).

- ``MisroutedEnvelopeError`` (a ``FaultyCoordinatorError``): the envelope is
  not for this channel: it does not decode, or names another room, ceremony or
  recipient, or a sender outside the ceremony.
- ``ChannelStreamError`` (a ``FaultyCoordinatorError``): the envelope is
  addressed to this party in this ceremony, claiming a known peer as its
  sender, but its round is out of range, its sequence number was already
  accepted (``replay``), or it does not authenticate (``authentication``).
  ``claimed_sender`` is the header's sender, which is *not* blamed: a forging
  or replaying relay produces exactly these envelopes.
- ``InputError`` for bad arguments, ``InvalidEncodingError`` from decoders,
  ``SessionStateError`` if a stream's sequence numbers run out.

A rejected envelope never changes the receiver's state.

Wire format, version 1 (``ChannelEnvelope.to_bytes``; integers big-endian)::

    offset  size  field
    0       1     version = 0x01
    1       1     r = length of room_id (1..128)
    2       r     room_id, ASCII [A-Za-z0-9._:@+/=-] (the relay's id alphabet)
    2+r     1     c = length of ceremony_id (1..128)
    3+r     c     ceremony_id, same alphabet
    3+r+c   4     round (1..2**32-1)
    7+r+c   20    sender party id (raw bytes of the 40-hex-digit id)
    27+r+c  20    recipient party id
    47+r+c  8     seq (per sender, recipient and ceremony, from 0)
    55+r+c  32    enc: the HPKE encapsulated key (ephemeral X25519 public key)
    87+r+c  4     L = length of the ciphertext (16..2**31-1)
    91+r+c  L     ChaCha20-Poly1305 ciphertext || 16-byte tag

The header is bytes 0 .. 55+r+c; HPKE ``info`` = ``CHANNEL_HPKE_INFO_LABEL`` ||
header, ``aad`` is empty. The encoding is canonical: ``from_bytes`` accepts
exactly the bytes ``to_bytes`` produces.

Side channels: X25519, HKDF and ChaCha20-Poly1305 run in OpenSSL through
``cryptography``; Python only moves bytes and compares public header fields.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple, NewType, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from tss.curve import tagged_hash
from tss.errors import (
    FaultyCoordinatorError,
    InputError,
    InternalError,
    InvalidEncodingError,
    SessionStateError,
)
from tss.tags import CHANNEL_HPKE_INFO_LABEL, CHANNEL_TAG_EPHEMERAL, CHANNEL_TAG_PARTY_ID

__all__ = [
    # Functions
    "party_id",
    "validate_public_key",
    # Exceptions
    "ChannelStreamError",
    "MisroutedEnvelopeError",
    # Types
    "PartyId",
    "StaticPk",
    "EnvelopeBytes",
    "StreamFault",
    "MisrouteReason",
    "StaticKey",
    "Roster",
    "ChannelHeader",
    "ChannelEnvelope",
    "ChannelMessage",
    "ChannelSender",
    "ChannelReceiver",
]

PartyId = NewType("PartyId", str)
"""A party's id: 40 lowercase hex digits derived from its static public key."""
StaticPk = NewType("StaticPk", bytes)
"""A 32-byte X25519 public key, validated by ``validate_public_key``."""
EnvelopeBytes = NewType("EnvelopeBytes", bytes)
"""An encoded ``ChannelEnvelope`` (the relay envelope's opaque payload)."""

StreamFault = Literal["round", "replay", "authentication"]
MisrouteReason = Literal["malformed", "room", "ceremony", "recipient", "sender"]

CHANNEL_VERSION: Final = 1
PARTY_ID_BYTES: Final = 20
"""Party ids are the first 20 bytes (160 bits) of a tagged SHA-256 of the public key.

The channel itself does not rely on ids being collision-free: the HPKE key
schedule binds the full static public keys (``kem_context`` = enc || pkR || pkS).
Ids must still name one key each wherever they are stored or pinned (keyrings,
rooms, authorisation), so a party must not be able to make two keys with one
id: a birthday search costs about 2**80 key generations and hashes, out of
reach; hitting a given party's id (second preimage) about 2**160. 128 bits would
leave the self-collision at 2**64, within reach of a large attacker; the full 32
bytes would only make ids longer.
"""
MAX_ID_LENGTH: Final = 128
MAX_ROUND: Final = 2**32 - 1
MAX_SEQ: Final = 2**64 - 1
_TAG_BYTES: Final = 16
MAX_PLAINTEXT: Final = 2**31 - 1 - _TAG_BYTES
"""cryptography's AEADs take at most 2**31-1 bytes, the tag included."""

_ID_RE: Final = re.compile(r"[A-Za-z0-9._:@+/=-]{1,128}")
_PARTY_ID_RE: Final = re.compile(r"[0-9a-f]{40}")
_P25519: Final = 2**255 - 19


### RFC 9180 HPKE, Auth mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305
#
# Spelled as in the RFC; its labels are fixed by the spec, so they stay here
# rather than in tss.tags (the Appendix A.2.3 vector checks every one).

_KEM_ID: Final = 0x0020  # DHKEM(X25519, HKDF-SHA256), §7.1
_KDF_ID: Final = 0x0001  # HKDF-SHA256, §7.2
_AEAD_ID: Final = 0x0003  # ChaCha20Poly1305, §7.3
_MODE_AUTH: Final = 0x02  # §5 Table 1
_KEM_SUITE_ID: Final = b"KEM" + _KEM_ID.to_bytes(2, "big")  # §4.1
_HPKE_SUITE_ID: Final = (
    b"HPKE" + _KEM_ID.to_bytes(2, "big") + _KDF_ID.to_bytes(2, "big") + _AEAD_ID.to_bytes(2, "big")
)  # §5.1
_N_SECRET: Final = 32
_N_SK: Final = 32
_N_K: Final = 32
_N_N: Final = 12
_SHA256: Final = hashes.SHA256()


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    """LabeledExtract, RFC 9180 §4."""
    return HKDF.extract(_SHA256, salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    """LabeledExpand, RFC 9180 §4."""
    labeled_info = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    return HKDFExpand(_SHA256, length, labeled_info).derive(prk)


def _derive_key_pair(ikm: bytes) -> X25519PrivateKey:
    """DeriveKeyPair for X25519, RFC 9180 §7.1.3 (X25519 clamps the scalar itself)."""
    dkp_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"dkp_prk", ikm)
    sk = _labeled_expand(_KEM_SUITE_ID, dkp_prk, b"sk", b"", _N_SK)
    return X25519PrivateKey.from_private_bytes(sk)


def _extract_and_expand(dh: bytes, kem_context: bytes) -> bytes:
    """ExtractAndExpand, RFC 9180 §4.1."""
    eae_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"eae_prk", dh)
    return _labeled_expand(_KEM_SUITE_ID, eae_prk, b"shared_secret", kem_context, _N_SECRET)


# psk_id_hash of the empty psk_id, the same for every Auth-mode key schedule (§5.1).
_PSK_ID_HASH: Final = _labeled_extract(_HPKE_SUITE_ID, b"", b"psk_id_hash", b"")


def _key_schedule_auth(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    """KeyScheduleS/R in mode_auth (psk = psk_id = ""), RFC 9180 §5.1: (key, base_nonce).

    The exporter secret is not derived: nothing here exports secrets (§5.3).
    """
    info_hash = _labeled_extract(_HPKE_SUITE_ID, b"", b"info_hash", info)
    key_schedule_context = bytes([_MODE_AUTH]) + _PSK_ID_HASH + info_hash
    secret = _labeled_extract(_HPKE_SUITE_ID, shared_secret, b"secret", b"")
    key = _labeled_expand(_HPKE_SUITE_ID, secret, b"key", key_schedule_context, _N_K)
    base_nonce = _labeled_expand(_HPKE_SUITE_ID, secret, b"base_nonce", key_schedule_context, _N_N)
    return key, base_nonce


def _hpke_seal_auth(
    pk_r: X25519PublicKey,
    pk_rm: bytes,
    pk_sm: bytes,
    dh_static: bytes,
    ikm_e: bytes,
    info: bytes,
    aad: bytes,
    pt: bytes,
) -> tuple[bytes, bytes]:
    """One-shot SealAuth (RFC 9180 §6.1) with the ephemeral key DeriveKeyPair(ikm_e).

    ``dh_static`` is DH(skS, pkR), which AuthEncap (§4.1) computes second. The
    sequence number of a one-shot context is 0, so the nonce is ``base_nonce``
    (§5.2 ComputeNonce). Returns (enc, ct).
    """
    sk_e = _derive_key_pair(ikm_e)
    enc = sk_e.public_key().public_bytes_raw()
    # AuthEncap: dh = DH(skE, pkR) || DH(skS, pkR); kem_context = enc || pkRm || pkSm.
    shared_secret = _extract_and_expand(sk_e.exchange(pk_r) + dh_static, enc + pk_rm + pk_sm)
    key, base_nonce = _key_schedule_auth(shared_secret, info)
    return enc, ChaCha20Poly1305(key).encrypt(base_nonce, pt, aad)


def _hpke_open_auth(
    sk_r: X25519PrivateKey,
    pk_rm: bytes,
    pk_sm: bytes,
    dh_static: bytes,
    enc: bytes,
    info: bytes,
    aad: bytes,
    ct: bytes,
) -> bytes:
    """One-shot OpenAuth (RFC 9180 §6.1); ``dh_static`` is DH(skR, pkS).

    Raises:
        ValueError: DH(skR, pkE) is all-zero (a low-order ``enc``, §7.1.4).
        InvalidTag: the ciphertext does not authenticate.
    """
    pk_e = X25519PublicKey.from_public_bytes(enc)
    # AuthDecap: dh = DH(skR, pkE) || DH(skR, pkS); cryptography raises ValueError on
    # an all-zero X25519 output, the check §7.1.4 requires.
    shared_secret = _extract_and_expand(sk_r.exchange(pk_e) + dh_static, enc + pk_rm + pk_sm)
    key, base_nonce = _key_schedule_auth(shared_secret, info)
    return ChaCha20Poly1305(key).decrypt(base_nonce, ct, aad)


### Static keys and party ids

# Any fixed private key works: every clamped X25519 scalar is a multiple of the
# cofactor 8, so DH with it is all-zero exactly for the low-order points.
_PROBE_KEY: Final = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
_STATIC_DH_MEMO: Final = 4096
"""Peers whose static-static DH a ``StaticKey`` keeps (about 100 bytes each)."""


def validate_public_key(data: bytes) -> StaticPk:
    """Check a static X25519 public key received from elsewhere.

    Arguments:
        data: the 32-byte little-endian u-coordinate (RFC 7748 §5).

    Returns:
        ``data`` as a ``StaticPk``.

    Raises:
        InvalidEncodingError: not 32 bytes; not canonical (u >= 2**255 - 19 or
            the top bit set, so one key has one encoding and one party id); or a
            low-order point, with which every DH is all-zero (RFC 9180 §7.1.4).
    """
    if not isinstance(data, bytes) or len(data) != 32:
        raise InvalidEncodingError("an X25519 public key is 32 bytes")
    if int.from_bytes(data, "little") >= _P25519:
        raise InvalidEncodingError("X25519 public key not canonically encoded")
    if _low_order(data):
        raise InvalidEncodingError("X25519 public key of low order")
    return StaticPk(data)


@functools.lru_cache(maxsize=4096)
def _low_order(data: bytes) -> bool:
    """Whether DH with ``data`` is all-zero. Remembered per key: the answer never
    changes, and a party meets the same few keys in every ceremony's roster."""
    try:
        _PROBE_KEY.exchange(X25519PublicKey.from_public_bytes(data))
    except ValueError:
        return True
    return False


def party_id(public_key: bytes) -> PartyId:
    """The party id of a static public key: hex of the first 20 bytes of
    tagged_hash(CHANNEL_TAG_PARTY_ID, public_key) (see ``PARTY_ID_BYTES``).

    Arguments:
        public_key: a 32-byte X25519 public key.

    Returns:
        40 lowercase hex digits.

    Raises:
        InvalidEncodingError: ``public_key`` is not a valid key (``validate_public_key``).
    """
    pk = validate_public_key(public_key)
    return PartyId(tagged_hash(CHANNEL_TAG_PARTY_ID, pk)[:PARTY_ID_BYTES].hex())


class StaticKey:
    """A party's static X25519 key pair. The private part never prints.

    Build with ``generate`` (fresh) or ``from_private_bytes`` (unsealed); the
    private key stays inside an OpenSSL object.
    """

    __slots__ = ("_party_id", "_pk", "_shared", "_sk")

    def __init__(self, sk: X25519PrivateKey) -> None:
        # Internal: use generate / from_private_bytes.
        self._sk = sk
        self._pk = StaticPk(sk.public_key().public_bytes_raw())
        self._party_id = party_id(self._pk)
        self._shared: dict[bytes, bytes] = {}  # peer's static key -> static-static DH

    def _static_dh(self, peer: StaticPk) -> bytes:
        """DH(this static key, ``peer``): the same for every message and ceremony of the
        pair, so computed once per peer (a bounded memo, emptied when full) rather than
        by each sender and receiver of every ceremony."""
        shared = self._shared.get(peer)
        if shared is None:
            shared = self._sk.exchange(X25519PublicKey.from_public_bytes(peer))
            if len(self._shared) >= _STATIC_DH_MEMO:
                self._shared.clear()
            self._shared[peer] = shared
        return shared

    @staticmethod
    def generate(rand32: bytes) -> StaticKey:
        """Make a static key from 32 fresh random bytes (RFC 9180 §7.1.3 DeriveKeyPair).

        Arguments:
            rand32: 32 bytes from a CSPRNG (the shell's ``secrets.token_bytes(32)``).

        Raises:
            InputError: ``rand32`` is not 32 bytes.
        """
        if len(rand32) != 32:
            raise InputError("rand32 must be 32 bytes")
        return StaticKey(_derive_key_pair(bytes(rand32)))

    @staticmethod
    def from_private_bytes(data: bytes) -> StaticKey:
        """Rebuild a static key from ``private_bytes()`` output (e.g. after unsealing).

        Raises:
            InputError: ``data`` is not 32 bytes.
        """
        if len(data) != 32:
            raise InputError("an X25519 private key is 32 bytes")
        return StaticKey(X25519PrivateKey.from_private_bytes(bytes(data)))

    def private_bytes(self) -> bytes:
        """The 32-byte private key, for sealing only: never log or send it."""
        return self._sk.private_bytes_raw()

    @property
    def public_key(self) -> StaticPk:
        """The 32-byte X25519 public key."""
        return self._pk

    @property
    def party_id(self) -> PartyId:
        """``party_id(self.public_key)``."""
        return self._party_id

    def __repr__(self) -> str:
        return f"StaticKey(party_id={self._party_id!r}, private_key=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Pickling would copy the private key out of OpenSSL into a byte string.
        raise TypeError("StaticKey cannot be pickled; seal private_bytes() instead")


### Ceremony roster


@dataclass(frozen=True)
class Roster:
    """The parties of one ceremony: index <-> party id <-> static public key.

    Attributes:
        indices: each party's 0-based participant index (a signing ceremony
            may use a subset of a keyring, e.g. (0, 2)), ascending.
        party_ids: the party id of each entry.
        public_keys: the 32-byte static public key of each entry.

    Raises (on construction):
        InputError: fewer than 2 parties, lengths differ, indices not distinct,
            negative or not ascending, a party id that does not derive from its
            key, or two equal ids.
        InvalidEncodingError: an invalid public key.
    """

    indices: tuple[int, ...]
    party_ids: tuple[PartyId, ...]
    public_keys: tuple[StaticPk, ...]
    _by_id: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.indices)
        if n < 2 or len(self.party_ids) != n or len(self.public_keys) != n:
            raise InputError("a roster needs 2 or more parties, each with an id and a key")
        if any(i < 0 for i in self.indices) or list(self.indices) != sorted(set(self.indices)):
            raise InputError("roster indices must be distinct, non-negative and ascending")
        for index, pid, pk in zip(self.indices, self.party_ids, self.public_keys, strict=True):
            if party_id(pk) != pid:
                raise InputError(f"party {index}: id does not derive from its static key")
        by_id = {pid: index for index, pid in zip(self.indices, self.party_ids, strict=True)}
        if len(by_id) != n:
            raise InputError("party ids must be distinct")
        object.__setattr__(self, "_by_id", by_id)

    @staticmethod
    def from_parties(
        parties: Sequence[tuple[str, bytes]], indices: Iterable[int] | None = None
    ) -> Roster:
        """Build a roster from a ceremony's (party_id, static_key) pairs, in index order.

        Arguments:
            parties: (party id, 32-byte static X25519 public key) per party.
            indices: each party's participant index; default 0, 1, ..., n-1.

        Raises:
            InputError, InvalidEncodingError: as the constructor.
        """
        idx = tuple(range(len(parties))) if indices is None else tuple(indices)
        return Roster(
            idx,
            tuple(PartyId(pid) for pid, _ in parties),
            tuple(StaticPk(pk) for _, pk in parties),
        )

    def __len__(self) -> int:
        return len(self.indices)

    def find(self, pid: str) -> int | None:
        """The index of party ``pid``, or None if it is not in the roster."""
        return self._by_id.get(pid)

    def index_of(self, pid: str) -> int:
        """The index of party ``pid``.

        Raises:
            InputError: ``pid`` is not in the roster.
        """
        index = self._by_id.get(pid)
        if index is None:
            raise InputError("party not in the roster")
        return index

    def party_id_of(self, index: int) -> PartyId:
        """The party id at participant index ``index`` (InputError if absent)."""
        return self.party_ids[self._position(index)]

    def public_key_of(self, index: int) -> StaticPk:
        """The static public key at participant index ``index`` (InputError if absent)."""
        return self.public_keys[self._position(index)]

    def _position(self, index: int) -> int:
        try:
            return self.indices.index(index)
        except ValueError:
            raise InputError(f"no party {index} in the roster") from None


### Wire format


def _check_id(kind: str, value: object, error: type[InputError]) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise error(f"{kind} must be 1-{MAX_ID_LENGTH} characters of [A-Za-z0-9._:@+/=-]")
    return value


def _check_party_id(kind: str, value: object, error: type[InputError]) -> PartyId:
    if not isinstance(value, str) or not _PARTY_ID_RE.fullmatch(value):
        raise error(f"{kind} must be a party id (40 lowercase hex digits)")
    return PartyId(value)


@dataclass(frozen=True)
class ChannelHeader:
    """The routing fields of an envelope: in the clear, bound into the HPKE key schedule.

    Attributes:
        room_id: the room (1-128 characters of [A-Za-z0-9._:@+/=-]).
        ceremony_id: the ceremony within the room (same alphabet).
        round: the protocol round, 1..2**32-1.
        sender: the sender's party id.
        recipient: the recipient's party id.
        seq: position of this message in the (sender, recipient, ceremony)
            stream, from 0, < 2**64.
    """

    room_id: str
    ceremony_id: str
    round: int
    sender: PartyId
    recipient: PartyId
    seq: int

    def __post_init__(self) -> None:
        _check_id("room_id", self.room_id, InputError)
        _check_id("ceremony_id", self.ceremony_id, InputError)
        _check_party_id("sender", self.sender, InputError)
        _check_party_id("recipient", self.recipient, InputError)
        if not isinstance(self.round, int) or not 1 <= self.round <= MAX_ROUND:
            raise InputError("round must be in 1..2**32-1")
        if not isinstance(self.seq, int) or not 0 <= self.seq <= MAX_SEQ:
            raise InputError("seq must be in 0..2**64-1")

    def to_bytes(self) -> bytes:
        """The header's bytes (version byte first), as laid out in the module docstring."""
        room = self.room_id.encode("ascii")
        ceremony = self.ceremony_id.encode("ascii")
        return b"".join(
            (
                bytes((CHANNEL_VERSION, len(room))),
                room,
                bytes((len(ceremony),)),
                ceremony,
                self.round.to_bytes(4, "big"),
                bytes.fromhex(self.sender),
                bytes.fromhex(self.recipient),
                self.seq.to_bytes(8, "big"),
            )
        )

    def hpke_info(self) -> bytes:
        """The HPKE ``info`` of the message this header heads."""
        return CHANNEL_HPKE_INFO_LABEL + self.to_bytes()


class _Reader:
    """Reads a byte string front to back; running short is an ``InvalidEncodingError``."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise InvalidEncodingError("channel envelope truncated")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def ascii_id(self, kind: str) -> str:
        raw = self.take(self.uint(1))
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as e:
            raise InvalidEncodingError(f"{kind} is not ASCII") from e
        return _check_id(kind, text, InvalidEncodingError)

    def at_end(self) -> bool:
        return self._pos == len(self._data)


@dataclass(frozen=True)
class ChannelEnvelope:
    """A sealed message: header, HPKE ``enc`` and ciphertext (layout in the module docstring).

    Decoding authenticates nothing; only ``ChannelReceiver.open`` does. The shell
    may read ``ChannelEnvelope.from_bytes(b).header`` to route an envelope.

    Attributes:
        header: the routing fields.
        enc: 32-byte HPKE encapsulated key.
        ciphertext: ChaCha20-Poly1305 ciphertext with its 16-byte tag.
    """

    header: ChannelHeader
    enc: bytes
    ciphertext: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.enc) != 32:
            raise InputError("enc must be 32 bytes")
        if not _TAG_BYTES <= len(self.ciphertext) <= MAX_PLAINTEXT + _TAG_BYTES:
            raise InputError("ciphertext length out of range")

    def to_bytes(self) -> EnvelopeBytes:
        """Encode the envelope."""
        return EnvelopeBytes(
            self.header.to_bytes()
            + self.enc
            + len(self.ciphertext).to_bytes(4, "big")
            + self.ciphertext
        )

    @staticmethod
    def from_bytes(data: bytes) -> ChannelEnvelope:
        """Decode an envelope, checking every length and field.

        Raises:
            InvalidEncodingError: unknown version, a length that does not add
                up, trailing bytes, or a field out of range.
        """
        r = _Reader(bytes(data))
        if r.uint(1) != CHANNEL_VERSION:
            raise InvalidEncodingError("unknown channel envelope version")
        room_id = r.ascii_id("room_id")
        ceremony_id = r.ascii_id("ceremony_id")
        round_ = r.uint(4)
        sender = PartyId(r.take(PARTY_ID_BYTES).hex())
        recipient = PartyId(r.take(PARTY_ID_BYTES).hex())
        seq = r.uint(8)
        enc = r.take(32)
        ct_len = r.uint(4)
        if not _TAG_BYTES <= ct_len <= MAX_PLAINTEXT + _TAG_BYTES:
            raise InvalidEncodingError("ciphertext length out of range")
        ciphertext = r.take(ct_len)
        if not r.at_end():
            raise InvalidEncodingError("trailing bytes after the channel envelope")
        try:
            header = ChannelHeader(room_id, ceremony_id, round_, sender, recipient, seq)
        except InputError as e:  # round 0: every other field is checked above
            raise InvalidEncodingError(f"channel header: {e}") from e
        return ChannelEnvelope(header, enc, ciphertext)


### Errors


class MisroutedEnvelopeError(FaultyCoordinatorError):
    """An envelope that is not for this channel; no party is blamed (see module docstring).

    Attributes:
        reason: "malformed", "room", "ceremony", "recipient" or "sender".
    """

    def __init__(self, reason: MisrouteReason, message: str) -> None:
        self.reason: MisrouteReason = reason
        super().__init__(message)


class ChannelStreamError(FaultyCoordinatorError):
    """An envelope claiming to come from ``claimed_sender`` is not its next word; no one is blamed.

    Attributes:
        claimed_sender: the participant index the (unauthenticated) header names.
        reason: "round" (out of range), "replay" (a sequence number already
            accepted) or "authentication" (HPKE open failed: forged or corrupted).
    """

    def __init__(self, claimed_sender: int, reason: StreamFault, message: str) -> None:
        self.claimed_sender = claimed_sender
        self.reason: StreamFault = reason
        super().__init__(f"envelope claiming sender {claimed_sender}: {message}")


### Sender and receiver


class ChannelMessage(NamedTuple):
    """An opened message: the sender's participant index, the header and the plaintext."""

    sender: int
    header: ChannelHeader
    plaintext: bytes


@dataclass(frozen=True)
class _Peer:
    index: int
    party_id: PartyId
    public_key: StaticPk
    key: X25519PublicKey = field(repr=False)
    dh_static: bytes = field(repr=False)  # DH(own static key, peer's static key)


MAX_CONTEXT: Final = 1024


def _check_context(context: bytes) -> bytes:
    if not isinstance(context, bytes | bytearray) or len(context) > MAX_CONTEXT:
        raise InputError(f"context must be at most {MAX_CONTEXT} bytes")
    return bytes(context)


def _bind(
    key: StaticKey, roster: Roster, room_id: str, ceremony_id: str
) -> tuple[int, dict[int, _Peer]]:
    """This party's index and its peers, with their static-static DH precomputed."""
    _check_id("room_id", room_id, InputError)
    _check_id("ceremony_id", ceremony_id, InputError)
    me = roster.find(key.party_id)
    if me is None or roster.public_key_of(me) != key.public_key:
        raise InputError("the static key is not in the roster")
    peers = {}
    for index, pid, pk in zip(roster.indices, roster.party_ids, roster.public_keys, strict=True):
        if index != me:
            peer_key = X25519PublicKey.from_public_bytes(pk)
            peers[index] = _Peer(index, pid, pk, peer_key, key._static_dh(pk))
    return me, peers


class ChannelSender:
    """Seals this party's messages of one ceremony, one stream per recipient.

    A mutable state machine (as h11's ``Connection``): it counts each stream's
    sequence number, which must never go back, so it is not a frozen value
    that a caller could copy and reuse.
    """

    def __init__(
        self,
        key: StaticKey,
        roster: Roster,
        room_id: str,
        ceremony_id: str,
        *,
        context: bytes = b"",
    ) -> None:
        """Arguments:
            key: this party's static key; its id must be in ``roster``.
            roster: the ceremony's parties.
            room_id, ceremony_id: where the messages belong (1-128 characters of
                [A-Za-z0-9._:@+/=-]); the ceremony id must be unique in the room.
            context: at most 1024 bytes every party of this session binds (the
                HPKE ``aad``): a fresh value per session makes its envelopes
                open in it only, whatever the ids.

        Raises:
            InputError: a bad id or context, or ``key`` not in ``roster``.
        """
        self._context = _check_context(context)
        self._key = key
        self._room_id = room_id
        self._ceremony_id = ceremony_id
        self._me, self._peers = _bind(key, roster, room_id, ceremony_id)
        self._next_seq = dict.fromkeys(self._peers, 0)

    @property
    def me(self) -> int:
        """This party's participant index."""
        return self._me

    def next_seq(self, recipient: int) -> int:
        """The sequence number the next message to ``recipient`` will carry."""
        return self._next_seq[self._peer(recipient).index]

    def seal(self, recipient: int, round: int, plaintext: bytes, rand32: bytes) -> EnvelopeBytes:
        """Seal one message to one peer.

        Arguments:
            recipient: the peer's participant index.
            round: the protocol round, 1..2**32-1.
            plaintext: at most 2**31-17 bytes.
            rand32: 32 fresh random bytes (hedged: see the module docstring).

        Returns:
            The encoded envelope: 91 + len(room_id) + len(ceremony_id) +
            len(plaintext) + 16 bytes.

        Raises:
            InputError: unknown recipient or this party, bad round, plaintext
                too long or ``rand32`` not 32 bytes.
            SessionStateError: the stream to ``recipient`` has used every seq.
        """
        peer = self._peer(recipient)
        if len(rand32) != 32:
            raise InputError("rand32 must be 32 bytes")
        if len(plaintext) > MAX_PLAINTEXT:
            raise InputError("plaintext too long")
        seq = self._next_seq[peer.index]
        if seq > MAX_SEQ:
            raise SessionStateError("the stream to this recipient has no sequence numbers left")
        header = ChannelHeader(
            self._room_id, self._ceremony_id, round, self._key.party_id, peer.party_id, seq
        )
        info = header.hpke_info()
        pt = bytes(plaintext)
        ikm_e = tagged_hash(
            CHANNEL_TAG_EPHEMERAL,
            peer.dh_static
            + bytes(rand32)
            + len(info).to_bytes(4, "big")
            + info
            + hashlib.sha256(pt).digest()
            # The context too, so one key and nonce never serve two contexts.
            + (len(self._context).to_bytes(4, "big") + self._context if self._context else b""),
        )
        enc, ct = _hpke_seal_auth(
            peer.key, peer.public_key, self._key.public_key, peer.dh_static, ikm_e, info,
            self._context, pt,
        )  # fmt: skip
        out = ChannelEnvelope(header, enc, ct).to_bytes()
        # Self-check: the bytes decode back to what was sealed.
        if ChannelEnvelope.from_bytes(out) != ChannelEnvelope(header, enc, ct):
            raise InternalError("channel envelope does not round-trip")
        self._next_seq[peer.index] = seq + 1
        return out

    def seal_broadcast(
        self, round: int, plaintext: bytes, rand32: bytes
    ) -> dict[int, EnvelopeBytes]:
        """Seal one copy of a broadcast to every peer (see the module docstring for why).

        One ``rand32`` serves every copy: the hedged ephemeral also hashes the
        header, which differs per recipient.

        Returns:
            Recipient participant index -> envelope, in index order.

        Raises:
            InputError, SessionStateError: as ``seal``.
        """
        return {index: self.seal(index, round, plaintext, rand32) for index in self._peers}

    def _peer(self, index: int) -> _Peer:
        peer = self._peers.get(index)
        if peer is None:
            raise InputError(f"party {index} is not a peer in this ceremony")
        return peer

    def __repr__(self) -> str:
        return (
            f"ChannelSender(me={self._me}, room_id={self._room_id!r}, "
            f"ceremony_id={self._ceremony_id!r}, next_seq={self._next_seq})"
        )


class ChannelReceiver:
    """Opens the messages addressed to this party in one ceremony, each at most once.

    A mutable state machine like ``ChannelSender``: it keeps the sequence
    numbers it accepted from each peer, added to only by an envelope that
    authenticates.
    """

    def __init__(
        self,
        key: StaticKey,
        roster: Roster,
        room_id: str,
        ceremony_id: str,
        *,
        max_round: int,
        context: bytes = b"",
    ) -> None:
        """Arguments:
            key: this party's static key; its id must be in ``roster``.
            roster: the ceremony's parties.
            room_id, ceremony_id: the only room and ceremony accepted.
            max_round: the ceremony's last round; rounds 1..max_round are accepted.
            context: the session's context, as the senders bound it (``ChannelSender``).

        Raises:
            InputError: a bad id, context or round bound, or ``key`` not in ``roster``.
        """
        if not 1 <= max_round <= MAX_ROUND:
            raise InputError("max_round must be in 1..2**32-1")
        self._context = _check_context(context)
        self._key = key
        self._room_id = room_id
        self._ceremony_id = ceremony_id
        self._max_round = max_round
        self._me, self._peers = _bind(key, roster, room_id, ceremony_id)
        self._by_id = {peer.party_id: peer for peer in self._peers.values()}
        self._accepted: dict[int, set[int]] = {index: set() for index in self._peers}

    @property
    def me(self) -> int:
        """This party's participant index."""
        return self._me

    def accepted(self, sender: int) -> frozenset[int]:
        """The sequence numbers accepted so far from ``sender``."""
        if sender not in self._accepted:
            raise InputError(f"party {sender} is not a peer in this ceremony")
        return frozenset(self._accepted[sender])

    def open(self, envelope: bytes) -> ChannelMessage:
        """Check, authenticate and decrypt one envelope.

        Routing checks (room, ceremony, recipient, known sender, round range,
        sequence number not yet accepted) come before any cryptography.

        Arguments:
            envelope: bytes from ``ChannelSender.seal``, as the relay delivered them.

        Returns:
            (sender index, header, plaintext).

        Raises:
            MisroutedEnvelopeError: not for this channel.
            ChannelStreamError: bad round, replay or failed authentication.
            Neither blames a party (see the module docstring).
        """
        try:
            env = ChannelEnvelope.from_bytes(envelope)
        except InvalidEncodingError as e:
            raise MisroutedEnvelopeError("malformed", f"undecodable channel envelope: {e}") from e
        h = env.header
        if h.room_id != self._room_id:
            raise MisroutedEnvelopeError("room", "envelope for another room")
        if h.ceremony_id != self._ceremony_id:
            raise MisroutedEnvelopeError("ceremony", "envelope for another ceremony")
        if h.recipient != self._key.party_id:
            raise MisroutedEnvelopeError("recipient", "envelope for another party")
        peer = self._by_id.get(h.sender)
        if peer is None:
            raise MisroutedEnvelopeError("sender", "envelope from a party outside the ceremony")
        if h.round > self._max_round:
            raise ChannelStreamError(peer.index, "round", f"round {h.round} out of range")
        accepted = self._accepted[peer.index]
        if h.seq in accepted:
            raise ChannelStreamError(peer.index, "replay", f"seq {h.seq} already accepted")
        try:
            plaintext = _hpke_open_auth(
                self._key._sk,
                self._key.public_key,
                peer.public_key,
                peer.dh_static,
                env.enc,
                h.hpke_info(),
                self._context,
                env.ciphertext,
            )
        except (InvalidTag, ValueError) as e:
            raise ChannelStreamError(
                peer.index, "authentication", f"seq {h.seq} does not authenticate"
            ) from e
        accepted.add(h.seq)
        return ChannelMessage(peer.index, h, plaintext)

    def __repr__(self) -> str:
        counts = {index: len(seqs) for index, seqs in self._accepted.items()}
        return (
            f"ChannelReceiver(me={self._me}, room_id={self._room_id!r}, "
            f"ceremony_id={self._ceremony_id!r}, accepted={counts})"
        )
