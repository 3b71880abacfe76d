"""The per-pair DKLs23 setup stored in an ECDSA key share: ``EcdsaSetup``.

For every other party j, party i keeps (DKLs23 §3, Protocol 3.6 "Setup"):

- its OT-extension *sender* material toward j (i is Alice, j is Bob): Delta and
  k^{Delta} from the kappa base OTs in which i was the receiver;
- its OT-extension *receiver* material toward j (i is Bob): both seeds of the
  kappa base OTs in which i was the sender;
- the pair's zero-sharing seed (``tss.ecdsa.zero_share``).

A pair is **burned** once any check involving it failed (OT-extension
consistency, RVOLE correlation check, the checks of Protocol 3.6, or a
malformed message): a burned pair is never used again (selective-failure /
OT-reuse attack, Taurus GHSA-7f6p-phw2-8253) until a new setup ceremony
replaces the whole ``EcdsaSetup``. Burning is the one mutable part of this
object and is serialised, so the caller must persist the setup again after a
signing session fails.

Serialisation (``to_bytes``, version 1): magic "SKDKLS23" || version (1) ||
index (1) || parties (1) || key_id (32) || burned bitmap (4 bytes, big-endian,
bit j = party j) || for each peer in increasing order: peer (1) || delta (32) ||
k^Delta (kappa * 32) || k^0 (kappa * 32) || k^1 (kappa * 32) || zero seed (32):
24,673 bytes per peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tss.curve import N, Point, point_sum, tagged_hash
from tss.ecdsa.ote import OteReceiverSetup, OteSenderSetup
from tss.ecdsa.params import KAPPA, KAPPA_BYTES, MAX_PARTIES
from tss.errors import InputError, InvalidEncodingError, SessionStateError
from tss.shamir import lagrange_coefficient
from tss.tags import DKLS_TAG_KEY_ID

__all__ = ["KeyMaterial", "PeerSetup", "EcdsaSetup", "key_id", "check_key_material"]

_MAGIC = b"SKDKLS23"
_VERSION = 1
_PEER_BYTES = 1 + KAPPA_BYTES + 3 * KAPPA * 32 + 32


class KeyMaterial(Protocol):
    """What the ECDSA layer needs from a DKG output (``tss.keyshare.KeyShare`` fits).

    ``party_id`` is the 0-based index (Shamir point party_id + 1); ``public_shares``
    the 33-byte X_j = x_j * G of every party; ``public_key`` the 33-byte threshold key.
    """

    @property
    def party_id(self) -> int: ...
    @property
    def threshold(self) -> int: ...
    @property
    def public_key(self) -> bytes: ...
    @property
    def public_shares(self) -> tuple[bytes, ...]: ...
    @property
    def secret_share(self) -> int: ...


def key_id(key: KeyMaterial) -> bytes:
    """32-byte id of the keyring: hash of threshold, public key and all public shares."""
    data = bytes([key.threshold, len(key.public_shares)]) + key.public_key
    return tagged_hash(DKLS_TAG_KEY_ID, data + b"".join(key.public_shares))


def check_key_material(key: KeyMaterial) -> None:
    """Validate a DKG output before it is used (InputError if inconsistent).

    Checks 2 <= t <= n <= 32, the index, x_i * G == X_i, and that the first t
    public shares interpolate to the public key.
    """
    n = len(key.public_shares)
    if not 2 <= key.threshold <= n <= MAX_PARTIES:
        raise InputError("need 2 <= threshold <= parties <= 32")
    if not 0 <= key.party_id < n:
        raise InputError("party index out of range")
    if not 0 < key.secret_share < N:
        raise InputError("secret share out of range")
    try:
        shares = [Point.from_bytes(x) for x in key.public_shares]
        public_key = Point.from_bytes(key.public_key)
    except InvalidEncodingError as e:
        raise InputError("invalid public share or public key") from e
    if Point.base_mul(key.secret_share) != shares[key.party_id]:
        raise InputError("secret share does not match the public share")
    ids = list(range(key.threshold))
    if point_sum(shares[j] * lagrange_coefficient(ids, j) for j in ids) != public_key:
        raise InputError("public shares do not interpolate to the public key")


@dataclass(frozen=True)
class PeerSetup:
    """This party's material for the pair with ``peer`` (see the module docstring)."""

    peer: int
    ote_sender: OteSenderSetup = field(repr=False)
    ote_receiver: OteReceiverSetup = field(repr=False)
    zero_seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.zero_seed) != 32:
            raise InputError("zero seed must be 32 bytes")


class EcdsaSetup:
    """This party's DKLs23 setup with every other party of the keyring.

    Attributes:
        index: this party's index.
        parties: n.
        key_id: ``key_id(key)`` of the keyring the setup belongs to.
    """

    __slots__ = ("_burned", "_peers", "index", "key_id", "parties")

    def __init__(
        self,
        index: int,
        parties: int,
        key_id: bytes,
        peers: Mapping[int, PeerSetup],
        burned: Iterable[int] = (),
    ) -> None:
        if not 2 <= parties <= MAX_PARTIES or not 0 <= index < parties or len(key_id) != 32:
            raise InputError("invalid setup header")
        if sorted(peers) != [j for j in range(parties) if j != index]:
            raise InputError("setup needs exactly one entry per other party")
        if any(peers[j].peer != j for j in peers):
            raise InputError("peer setup filed under the wrong index")
        self.index = index
        self.parties = parties
        self.key_id = key_id
        self._peers = dict(peers)
        self._burned = set(burned)
        if not self._burned <= set(peers):
            raise InputError("burned peers must be peers")

    def __repr__(self) -> str:
        return (
            f"EcdsaSetup(index={self.index}, parties={self.parties}, "
            f"burned={sorted(self._burned)}, <redacted>)"
        )

    @property
    def burned(self) -> frozenset[int]:
        """The peers whose pair setup is burned."""
        return frozenset(self._burned)

    def is_burned(self, peer: int) -> bool:
        return peer in self._burned

    def mark_burned(self, peer: int) -> None:
        """Never use the pair with ``peer`` again (until a new setup ceremony)."""
        if peer in self._peers:
            self._burned.add(peer)

    def peer(self, peer: int) -> PeerSetup:
        """The material for ``peer``.

        Raises:
            InputError: not a peer of this party.
            SessionStateError: the pair is burned.
        """
        if peer not in self._peers:
            raise InputError(f"party {peer} is not a peer of this setup")
        if peer in self._burned:
            raise SessionStateError(
                f"the OT setup with party {peer} is burned after a failed check; "
                "run the setup ceremony again (refresh)"
            )
        return self._peers[peer]

    def check_signers(self, signers: Sequence[int]) -> None:
        """Raise SessionStateError if any other signer's pair is burned."""
        for j in signers:
            if j != self.index:
                self.peer(j)

    def to_bytes(self) -> bytes:
        """Versioned encoding (see the module docstring)."""
        bitmap = sum(1 << j for j in self._burned).to_bytes(4, "big")
        out = bytearray(_MAGIC + bytes([_VERSION, self.index, self.parties]) + self.key_id + bitmap)
        for j in sorted(self._peers):
            p = self._peers[j]
            out += bytes([j]) + p.ote_sender.delta + p.ote_sender.seeds
            out += p.ote_receiver.seeds0 + p.ote_receiver.seeds1 + p.zero_seed
        return bytes(out)

    @staticmethod
    def from_bytes(data: bytes) -> EcdsaSetup:
        """Decode ``to_bytes`` output.

        Raises:
            InvalidEncodingError: bad magic, unknown version or malformed content.
        """
        head = len(_MAGIC) + 3 + 32 + 4
        if len(data) < head or data[: len(_MAGIC)] != _MAGIC:
            raise InvalidEncodingError("not an EcdsaSetup encoding")
        version, index, parties = data[len(_MAGIC) : len(_MAGIC) + 3]
        if version != _VERSION:
            raise InvalidEncodingError(f"unknown EcdsaSetup version {version}")
        kid = data[len(_MAGIC) + 3 : len(_MAGIC) + 35]
        bitmap = int.from_bytes(data[head - 4 : head], "big")
        if len(data) != head + (parties - 1) * _PEER_BYTES:
            raise InvalidEncodingError("EcdsaSetup has the wrong length")
        peers = {}
        pos = head
        for _ in range(parties - 1):
            j = data[pos]
            pos += 1
            delta = data[pos : pos + KAPPA_BYTES]
            pos += KAPPA_BYTES
            chunks = [data[pos + k * KAPPA * 32 : pos + (k + 1) * KAPPA * 32] for k in range(3)]
            pos += 3 * KAPPA * 32
            seed = data[pos : pos + 32]
            pos += 32
            peers[j] = PeerSetup(
                j, OteSenderSetup(delta, chunks[0]), OteReceiverSetup(chunks[1], chunks[2]), seed
            )
        burned = [j for j in range(MAX_PARTIES) if bitmap >> j & 1]
        try:
            return EcdsaSetup(index, parties, kid, peers, burned)
        except InputError as e:
            raise InvalidEncodingError(f"malformed EcdsaSetup: {e}") from e
