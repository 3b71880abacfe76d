"""The per-pair DKLs23 setups a party holds: ``PeerSetup`` and ``EcdsaSetup``.

For every other party j, party i keeps (DKLs23 §3, Protocol 3.6 "Setup"):

- its OT-extension *sender* material toward j (i is Alice, j is Bob): Delta and
  k^{Delta} from the kappa base OTs in which i was the receiver;
- its OT-extension *receiver* material toward j (i is Bob): both seeds of the
  kappa base OTs in which i was the sender;
- the pair's zero-sharing seed (``tss.ecdsa.zero_share``);
- the pair's ``setup_id``: a hash of the setup's session and transcript that both
  parties of the pair derive (``tss.ecdsa.keygen``), so two parties can tell that
  they hold the two halves of the same setup.

A pair is **burned** once any check involving it failed (OT-extension
consistency, RVOLE correlation check, the checks of Protocol 3.6, or a
malformed message): a burned pair is never used again (selective-failure /
OT-reuse attack, Taurus GHSA-7f6p-phw2-8253) until a new setup replaces it.
The burn state lives on the ``PeerSetup`` object itself, so every signing
session that shares the object sees a burn at once; ``PeerSetup`` refuses to be
copied or pickled, so a copy can never carry an unburned duplicate.

An ``EcdsaSetup`` may hold setups for only some of its peers: a party whose pair
setups live outside its key share (the enclave keeps the server party's in
memory only, ``enclave.pair_setups``) stores its share with none, and signing
with a peer whose setup is missing or burned raises ``PairSetupError``.

Serialisation (``to_bytes``, version 2): magic "SKDKLS23" || version (1) ||
index (1) || parties (1) || key_id (32) || burned bitmap (4 bytes, big-endian,
bit j = party j) || count (1) || for each held peer in increasing order: peer (1) ||
setup_id (32) || delta (32) || k^Delta (kappa * 32) || k^0 (kappa * 32) ||
k^1 (kappa * 32) || zero seed (32): 24,673 bytes per peer. Version 1 (every peer,
no count, no setup_id) still decodes; its pairs get ``UNKNOWN_SETUP_ID``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from tss.curve import N, Point, point_sum, tagged_hash
from tss.ecdsa.ote import OteReceiverSetup, OteSenderSetup
from tss.ecdsa.params import KAPPA, KAPPA_BYTES, MAX_PARTIES
from tss.errors import InputError, InvalidEncodingError, PairSetupError
from tss.shamir import lagrange_coefficient
from tss.single_use import SingleUse
from tss.tags import DKLS_TAG_KEY_ID

__all__ = [
    "KeyMaterial",
    "PeerSetup",
    "EcdsaSetup",
    "UNKNOWN_SETUP_ID",
    "key_id",
    "check_key_material",
]

_MAGIC = b"SKDKLS23"
_VERSION = 2
UNKNOWN_SETUP_ID = bytes(32)
"""The setup id of a pair decoded from a version-1 encoding (no id was kept then)."""
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


class PeerSetup(SingleUse):
    """This party's material for the pair with ``peer`` (see the module docstring).

    Mutable in one way only: ``burn``. Never copied (``SingleUse``): every session
    on the pair must share this one object, and with it the burn state.
    """

    __slots__ = ("_burned", "ote_receiver", "ote_sender", "peer", "setup_id", "zero_seed")

    def __init__(
        self,
        peer: int,
        ote_sender: OteSenderSetup,
        ote_receiver: OteReceiverSetup,
        zero_seed: bytes,
        setup_id: bytes = UNKNOWN_SETUP_ID,
        burned: bool = False,
    ) -> None:
        if len(zero_seed) != 32 or len(setup_id) != 32:
            raise InputError("zero seed and setup id must be 32 bytes")
        self.peer = peer
        self.ote_sender = ote_sender
        self.ote_receiver = ote_receiver
        self.zero_seed = zero_seed
        self.setup_id = setup_id
        self._burned = burned

    def __repr__(self) -> str:
        return f"PeerSetup(peer={self.peer}, burned={self._burned}, <redacted>)"

    @property
    def burned(self) -> bool:
        return self._burned

    def burn(self) -> None:
        """Never use this setup again (a check involving it failed)."""
        self._burned = True


class EcdsaSetup:
    """This party's DKLs23 setups with (some of) the other parties of the keyring.

    Attributes:
        index: this party's index.
        parties: n.
        key_id: ``key_id(key)`` of the keyring the setup belongs to.
    """

    __slots__ = ("_peers", "index", "key_id", "parties")

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
        if not set(peers) <= {j for j in range(parties) if j != index}:
            raise InputError("setups only for other parties of the keyring")
        if any(peers[j].peer != j for j in peers):
            raise InputError("peer setup filed under the wrong index")
        burned = set(burned)
        if not burned <= set(peers):
            raise InputError("burned peers must be peers")
        self.index = index
        self.parties = parties
        self.key_id = key_id
        self._peers = dict(peers)
        for j in burned:
            self._peers[j].burn()

    def __repr__(self) -> str:
        return (
            f"EcdsaSetup(index={self.index}, parties={self.parties}, "
            f"peers={sorted(self._peers)}, burned={sorted(self.burned)}, <redacted>)"
        )

    @property
    def burned(self) -> frozenset[int]:
        """The peers whose pair setup is burned."""
        return frozenset(j for j, p in self._peers.items() if p.burned)

    @property
    def held(self) -> frozenset[int]:
        """The peers this object holds a setup for (burned or not)."""
        return frozenset(self._peers)

    def is_burned(self, peer: int) -> bool:
        held = self._peers.get(peer)
        return held is not None and held.burned

    def mark_burned(self, peer: int) -> None:
        """Never use the pair with ``peer`` again (until a new setup replaces it)."""
        held = self._peers.get(peer)
        if held is not None:
            held.burn()

    def peer(self, peer: int) -> PeerSetup:
        """The usable material for ``peer``: consulted before every use and every check.

        Raises:
            InputError: not another party of the keyring.
            PairSetupError: no setup is held for the pair, or it is burned.
        """
        if not 0 <= peer < self.parties or peer == self.index:
            raise InputError(f"party {peer} is not a peer of this setup")
        held = self._peers.get(peer)
        if held is None:
            raise PairSetupError(peer, f"no OT setup with party {peer}: run a pair setup")
        if held.burned:
            raise PairSetupError(
                peer,
                f"the OT setup with party {peer} is burned after a failed check: "
                "run a new pair setup",
            )
        return held

    def check_signers(self, signers: Sequence[int]) -> None:
        """Raise PairSetupError if any other signer's pair is missing or burned."""
        for j in signers:
            if j != self.index:
                self.peer(j)

    def with_peer(self, setup: PeerSetup) -> EcdsaSetup:
        """A new ``EcdsaSetup`` with ``setup`` in place of the pair's current one."""
        return EcdsaSetup(self.index, self.parties, self.key_id, {**self._peers, setup.peer: setup})

    def restricted(self, peers: Iterable[int]) -> EcdsaSetup:
        """A new ``EcdsaSetup`` holding only the setups of ``peers`` (the same objects)."""
        keep = set(peers)
        return EcdsaSetup(
            self.index,
            self.parties,
            self.key_id,
            {j: p for j, p in self._peers.items() if j in keep},
        )

    def to_bytes(self) -> bytes:
        """Versioned encoding (see the module docstring)."""
        bitmap = sum(1 << j for j in self.burned).to_bytes(4, "big")
        out = bytearray(_MAGIC + bytes([_VERSION, self.index, self.parties]) + self.key_id + bitmap)
        out.append(len(self._peers))
        for j in sorted(self._peers):
            p = self._peers[j]
            out += bytes([j]) + p.setup_id + p.ote_sender.delta + p.ote_sender.seeds
            out += p.ote_receiver.seeds0 + p.ote_receiver.seeds1 + p.zero_seed
        return bytes(out)

    @staticmethod
    def from_bytes(data: bytes) -> EcdsaSetup:
        """Decode ``to_bytes`` output (version 2, or version 1 of earlier releases).

        Raises:
            InvalidEncodingError: bad magic, unknown version or malformed content.
        """
        head = len(_MAGIC) + 3 + 32 + 4
        if len(data) < head or data[: len(_MAGIC)] != _MAGIC:
            raise InvalidEncodingError("not an EcdsaSetup encoding")
        version, index, parties = data[len(_MAGIC) : len(_MAGIC) + 3]
        kid = data[len(_MAGIC) + 3 : len(_MAGIC) + 35]
        bitmap = int.from_bytes(data[head - 4 : head], "big")
        if version == 1:  # every peer, without setup ids
            count, pos, with_id = parties - 1, head, False
        elif version == _VERSION and len(data) > head:
            count, pos, with_id = data[head], head + 1, True
        else:
            raise InvalidEncodingError(f"unknown or truncated EcdsaSetup version {version}")
        size = _PEER_BYTES + (32 if with_id else 0)
        if len(data) != pos + count * size:
            raise InvalidEncodingError("EcdsaSetup has the wrong length")
        peers = {}
        for _ in range(count):
            j = data[pos]
            pos += 1
            setup_id = UNKNOWN_SETUP_ID
            if with_id:
                setup_id = data[pos : pos + 32]
                pos += 32
            delta = data[pos : pos + KAPPA_BYTES]
            pos += KAPPA_BYTES
            chunks = [data[pos + k * KAPPA * 32 : pos + (k + 1) * KAPPA * 32] for k in range(3)]
            pos += 3 * KAPPA * 32
            seed = data[pos : pos + 32]
            pos += 32
            if j in peers:
                raise InvalidEncodingError("EcdsaSetup lists a peer twice")
            peers[j] = PeerSetup(
                j,
                OteSenderSetup(delta, chunks[0]),
                OteReceiverSetup(chunks[1], chunks[2]),
                seed,
                setup_id,
            )
        burned = [j for j in range(MAX_PARTIES) if bitmap >> j & 1]
        try:
            return EcdsaSetup(index, parties, kid, peers, burned)
        except InputError as e:
            raise InvalidEncodingError(f"malformed EcdsaSetup: {e}") from e
