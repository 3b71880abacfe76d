"""Refresh, reshare and export requests as ``tss`` plans: the one mapping every party uses.

The enclave (``enclave.ceremonies``) and the client SDK must turn one signed
``CeremonyRequest`` into the same plan, the same seats and the same channel
roster, or the ceremony aborts: a reshare or refresh plan is hashed into every
party's agreement hash (``tss.reshare``), an export plan into every sealed
contribution's context (``tss.export``). So both sides call this module
instead of deriving plans themselves (as ``shardkeep.requests`` fixes how
requests are signed). It checks that the request is sane (``InputError``
otherwise); whether the server party may act on it is the enclave's decision.

Fields used (ceremony.proto):

- every kind: ``parties`` (the current keyring, in party-index order),
  ``epoch`` (the current keyring's epoch), ``scheme``;
- refresh and reshare: every seated party's ``host_pubkey``, which signs the
  ceremony's certificate (``tss.certificate``), in seat order in the plan;
- refresh: nothing else; every party deals and receives, seat = party index;
- reshare: ``signers`` are the dealers (indices into ``parties``, at least the
  threshold; the field names the acting quorum for every kind: signers,
  dealers, export contributors), ``new_parties`` and ``new_threshold`` the new
  keyring, ``keyring`` the current keyring's public side for new parties that
  hold no share of it. Seats follow ``tss.reshare.holder_seats``: a dealer sits
  at its old index (also as a new holder, if it stays); every other new party
  j at ``len(parties) + j``. So seat s names ``parties[s]`` below
  ``len(parties)`` and ``new_parties[s - len(parties)]`` above
  (``seat_party_ids``), which is how culprits map back to party ids;
- export: ``signers`` are the contributing quorum, ``export_recipient`` the
  party the key goes to (at its index if it is one of ``parties``, else at
  seat ``len(parties)``) and ``export_recipient_key`` the X25519 key the
  contributions are sealed to (a key of the recipient's choosing, ideally one
  made for this export alone; it need not be its channel key).

Session ids: every ceremony's session id (``lifecycle_session_id``; a plan
needs 32 bytes) is a tagged hash of the kind, wallet, room and ceremony ids and
the enclave's request challenge (each length-prefixed), and the parties'
channels bind the challenge too (``channel_context``). Signed statements
(FROST nonces, keygen's round-1 hashes, certificates) are evidence only within
one session, and neither the relay nor a coordinator can make a session
repeat: the enclave issues each challenge once and consumes it with the
request (docs/security/replay.md), so a replayed room and ceremony id still
makes a new session, whose channels drop the old session's envelopes instead
of letting them pass as a party's second, contradicting word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from shardkeep.v1 import ceremony_pb2
from tss.channel import Roster, party_id
from tss.curve import tagged_hash
from tss.errors import InputError, InvalidEncodingError
from tss.export import ExportPlan
from tss.keyshare import Scheme
from tss.reshare import PublicKeyring, ResharePlan, holder_seats
from tss.tags import LIFECYCLE_TAG_SESSION

__all__ = [
    # Functions
    "lifecycle_session_id",
    "channel_context",
    "request_scheme",
    "keyring_from_proto",
    "keyring_to_proto",
    "request_keyring",
    "refresh_layout",
    "reshare_layout",
    "export_layout",
    "seat_party_ids",
    "check_server_threshold",
    # Types
    "Layout",
    "SCHEMES",
]

KIND = ceremony_pb2.CeremonyKind
SCHEMES: dict[int, Scheme] = {
    ceremony_pb2.SCHEME_BIP340: "bip340",
    ceremony_pb2.SCHEME_ECDSA_SECP256K1: "ecdsa-secp256k1",
    ceremony_pb2.SCHEME_ED25519: "ed25519",
}
PlanT = TypeVar("PlanT", ResharePlan, ExportPlan)


@dataclass(frozen=True)
class Layout(Generic[PlanT]):
    """A lifecycle ceremony as ``tss`` runs it: the plan and who sits at which seat.

    Attributes:
        plan: the ``ResharePlan`` (refresh, reshare) or ``ExportPlan`` (export).
        roster: every seat of the plan with its party id and static key, for
            ``tss.session.SecureSession``.
    """

    plan: PlanT
    roster: Roster

    def seat_of(self, pid: str) -> int | None:
        """The seat of party ``pid``, None if it takes no part."""
        return self.roster.find(pid)


def lifecycle_session_id(request: ceremony_pb2.CeremonyRequest) -> bytes:
    """The 32-byte session id of any ceremony (keygen, signing, pair setup, key changes, export).

    Arguments:
        request: the ceremony request (its kind, wallet, room and ceremony ids,
            and the enclave's challenge: empty for a ceremony without the
            server party).

    Returns:
        tagged_hash(LIFECYCLE_TAG_SESSION, each field length-prefixed).
    """
    ids = (KIND.Name(request.kind), request.wallet_id, request.room_id, request.ceremony_id)
    parts = [p.encode() for p in ids] + [bytes(request.challenge)]
    data = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    return tagged_hash(LIFECYCLE_TAG_SESSION, data)


def channel_context(request: ceremony_pb2.CeremonyRequest) -> bytes:
    """What every party's channels bind besides the ids (``tss.session.SecureSession``):
    the enclave's single-use challenge, so that envelopes of an earlier session
    with the same room and ceremony ids do not open in this one."""
    return bytes(request.challenge)


def request_scheme(request: ceremony_pb2.CeremonyRequest) -> Scheme:
    """The request's scheme name.

    Raises:
        InputError: unknown or missing scheme.
    """
    scheme = SCHEMES.get(request.scheme)
    if scheme is None:
        raise InputError("unknown or missing scheme")
    return scheme


def keyring_from_proto(scheme: Scheme, proto: ceremony_pb2.PublicKeyring) -> PublicKeyring:
    """A ``PublicKeyring`` from its proto.

    Raises:
        InputError: a malformed keyring (bad sizes, points, threshold).
    """
    try:
        return PublicKeyring(
            scheme,
            proto.threshold,
            bytes(proto.public_key),
            tuple(bytes(s) for s in proto.public_shares),
            proto.epoch,
        )
    except InvalidEncodingError as e:
        raise InputError(f"malformed keyring: {e}") from e


def keyring_to_proto(keyring: PublicKeyring) -> ceremony_pb2.PublicKeyring:
    """The proto of a ``PublicKeyring`` (``CeremonyRequest.keyring``)."""
    return ceremony_pb2.PublicKeyring(
        threshold=keyring.threshold,
        public_key=keyring.public_key,
        public_shares=keyring.public_shares,
        epoch=keyring.epoch,
    )


def request_keyring(request: ceremony_pb2.CeremonyRequest) -> PublicKeyring | None:
    """The keyring a reshare request carries (None if it carries none).

    Raises:
        InputError: unknown scheme or a malformed keyring.
    """
    if not request.HasField("keyring"):
        return None
    return keyring_from_proto(request_scheme(request), request.keyring)


def _check_current(request: ceremony_pb2.CeremonyRequest, keyring: PublicKeyring) -> None:
    """The request names ``keyring``: its scheme, epoch and number of parties."""
    if request_scheme(request) != keyring.scheme:
        raise InputError("the request names another scheme than the keyring's")
    if request.epoch != keyring.epoch:
        raise InputError(
            f"the request expects epoch {request.epoch}, the keyring is at {keyring.epoch}"
        )
    if len(request.parties) != keyring.parties:
        raise InputError("the request's parties are not the keyring's")


def _indices(values: Sequence[int], n: int, what: str) -> tuple[int, ...]:
    out = tuple(sorted(values))
    if not out or len(set(out)) != len(out) or out[-1] >= n:
        raise InputError(f"{what} must be distinct indices into parties")
    return out


def _pairs(parties: Sequence[ceremony_pb2.Party]) -> list[tuple[str, bytes]]:
    return [(p.party_id, bytes(p.static_key)) for p in parties]


def check_server_threshold(threshold: int) -> None:
    """Refuse a keyring in which the server party's share alone would be the key.

    With t = 1 every share is the whole private key (Shamir degree 0), so a
    keygen, import or reshare that gives the server party a share of a 1-of-n
    keyring would put the whole key in the enclave (and in anything that opens
    its sealed record); only an explicit, owner-signed export may do that.

    Raises:
        InputError: ``threshold`` < 2.
    """
    if threshold < 2:
        raise InputError(
            f"threshold {threshold} refused: a keyring with the server share needs a threshold "
            "of at least 2 (with 1, the server party's share alone would be the whole key)"
        )


def refresh_layout(
    request: ceremony_pb2.CeremonyRequest, keyring: PublicKeyring
) -> Layout[ResharePlan]:
    """The plan and seats of a refresh: every party deals and receives at its index.

    Arguments:
        request: a refresh request.
        keyring: the current keyring (from a key share, or the wallet's metadata).

    Raises:
        InputError: the request does not fit the keyring, or sets reshare fields.
    """
    _check_current(request, keyring)
    n = keyring.parties
    if request.new_parties or request.new_threshold not in (0, keyring.threshold):
        raise InputError("a refresh keeps the parties and the threshold")
    if request.signers and sorted(request.signers) != list(range(n)):
        raise InputError("every party takes part in a refresh")
    plan = ResharePlan.refresh(
        keyring, lifecycle_session_id(request), [bytes(p.host_pubkey) for p in request.parties]
    )
    return Layout(plan, Roster.from_parties(_pairs(request.parties)))


def reshare_layout(
    request: ceremony_pb2.CeremonyRequest, keyring: PublicKeyring
) -> Layout[ResharePlan]:
    """The plan and seats of a reshare (see the module docstring for the seats).

    Arguments:
        request: a reshare request (``signers`` are the dealers).
        keyring: the current keyring.

    Raises:
        InputError: the request does not fit the keyring; bad dealers, new
            parties (a party id not derived from its key, a continuing party
            with another key, repeats) or new threshold.
    """
    _check_current(request, keyring)
    old, new = list(request.parties), list(request.new_parties)
    dealers = _indices(request.signers, len(old), "dealers (signers)")
    if not new:
        raise InputError("a reshare needs new parties")
    for p in new:
        if party_id(bytes(p.static_key)) != p.party_id:
            raise InputError("a new party's id does not derive from its static key")
    holders = holder_seats(
        len(old), {d: old[d].party_id for d in dealers}, [p.party_id for p in new]
    )
    seats = sorted(set(dealers) | set(holders))
    seated = []
    for seat in seats:
        party = old[seat] if seat in dealers else new[holders.index(seat)]
        new_id = holders.index(seat) if seat in holders else None
        if new_id is not None and (
            bytes(new[new_id].static_key),
            bytes(new[new_id].host_pubkey),
        ) != (bytes(party.static_key), bytes(party.host_pubkey)):
            raise InputError("a continuing party is listed with two static or host keys")
        seated.append(party)
    plan = ResharePlan(
        lifecycle_session_id(request), keyring, dealers, holders, request.new_threshold,
        "reshare", tuple(bytes(p.host_pubkey) for p in seated),
    )  # fmt: skip
    return Layout(plan, Roster.from_parties(_pairs(seated), plan.seats))


def export_layout(
    request: ceremony_pb2.CeremonyRequest, keyring: PublicKeyring
) -> Layout[ExportPlan]:
    """The plan and seats of an export: the quorum at its indices, the recipient at its seat.

    Arguments:
        request: an export request (``signers`` contribute).
        keyring: the current keyring.

    Raises:
        InputError: the request does not fit the keyring; a bad quorum,
            recipient or recipient key; reshare fields set.
    """
    _check_current(request, keyring)
    old = list(request.parties)
    if request.new_parties or request.new_threshold:
        raise InputError("an export keeps the keyring")
    quorum = _indices(request.signers, len(old), "contributors (signers)")
    if not request.HasField("export_recipient"):
        raise InputError("an export needs a recipient party")
    recipient = request.export_recipient
    ids = [p.party_id for p in old]
    if recipient.party_id in ids:
        seat = ids.index(recipient.party_id)
        if bytes(old[seat].static_key) != bytes(recipient.static_key):
            raise InputError("the recipient is listed with two static keys")
    else:
        seat = len(old)
    plan = ExportPlan(
        lifecycle_session_id(request),
        keyring,
        quorum,
        seat,
        bytes(request.export_recipient_key),
    )
    seated = [_pairs([old[s] if s < len(old) else recipient])[0] for s in plan.seats]
    return Layout(plan, Roster.from_parties(seated, plan.seats))


def seat_party_ids(request: ceremony_pb2.CeremonyRequest) -> list[str]:
    """Party ids by ceremony seat: where a culprit's seat (or signer index) points.

    Seats below ``len(parties)`` are ``parties``; a reshare's new parties
    follow at ``len(parties) + j``, an export's outside recipient at
    ``len(parties)``.
    """
    ids = [p.party_id for p in request.parties]
    if request.kind == KIND.CEREMONY_KIND_RESHARE:
        ids += [p.party_id for p in request.new_parties]
    elif request.kind == KIND.CEREMONY_KIND_EXPORT and request.HasField("export_recipient"):
        ids.append(request.export_recipient.party_id)
    return ids
