"""Turning an authorised request into the server party's ceremony (sans-IO).

``plan`` checks that the request fits the enclave's identity and the wallet's
sealed record, builds the ``tss`` ceremony and its ``SecureSession``, and says
how to turn the ceremony's result into what the enclave seals and reports.

The key-lifecycle ceremonies (docs/architecture.md) take their plans and seats from
``shardkeep.lifecycle``, the mapping the client SDK uses too:

- refresh: every party; the record becomes the new share at epoch + 1 (same
  owner key and party ids).
- keygen, refresh and reshare (an import too) seal their new record while it
  is still *pending* (``Plan.pending``), before the server party signs the
  certificate (keygen: ChillDKG's CertEq); the record carries what the certificate must complete
  (``KeyChangeProof``), and the result the complete certificate.
- reshare: the server party may deal and stay (new share at its new index,
  party ids = the new parties), deal and leave (no record: the result only), or
  join without a share (it learns the keyring from the request, and the owner
  key the request registers, as at keygen).
- export: the server party contributes its share, sealed to the recipient's
  key; it is never the recipient, and nothing secret comes back in the result.

A pair setup (ECDSA) runs the DKLs23 setup between the server party and one
other party; its outcome is the server's new ``PeerSetup``, which the enclave
keeps in memory only (``enclave.pair_setups``), never in a sealed record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from enclave.errors import BadRequest
from enclave.identity import Identity, KeyChangeProof, ServerShare
from enclave.policy.gate import carried_policy_set, registered_policy_set, replaced_policy_set
from shardkeep.lifecycle import (
    SCHEMES,
    channel_context,
    check_server_threshold,
    export_layout,
    lifecycle_session_id,
    refresh_layout,
    request_keyring,
    reshare_layout,
)
from shardkeep.requests import MAX_ED25519_MESSAGE
from shardkeep.v1 import ceremony_pb2
from tss.ceremony import Ceremony, Random
from tss.certificate import Pending, PendingKeyChange
from tss.channel import Roster
from tss.ecdsa.setup import PeerSetup
from tss.errors import InternalError
from tss.export import Export, ExportOutput
from tss.keygen import Keygen, PairSetup
from tss.keyshare import KeyShare, Scheme
from tss.reshare import PublicKeyring, Reshare, ReshareOutput
from tss.session import SecureSession
from tss.signing import HostKeys, RecoverableSignature, SigningOptions, signing_ceremony

KIND = ceremony_pb2.CeremonyKind


@dataclass(frozen=True)
class Outcome:
    """What a finished ceremony leaves: a record to seal (or None), the result to report,
    for a pair setup the server party's new setup, and for an ECDSA keygen the
    record (sealed already, as pending) whose pair setups to keep (both kept in
    enclave memory only)."""

    record: ServerShare | None
    result: ceremony_pb2.CeremonyResult
    pair_setup: PeerSetup | None = None
    pair_setups_of: ServerShare | None = None


def _no_pending(_: Pending) -> ServerShare | None:
    raise InternalError("this ceremony changes no keys")


@dataclass
class Plan:
    """A ceremony ready to run, and how to conclude it.

    ``pending`` turns a key change's pending share into the record to seal and
    store before the server party signs the certificate (None: nothing to
    store, a dealer that leaves).
    """

    session: SecureSession[Any]
    me: int
    finish: Callable[[Any], Outcome]
    pending: Callable[[Pending], ServerShare | None] = _no_pending


def scheme_of(request: ceremony_pb2.CeremonyRequest) -> Scheme:
    scheme = SCHEMES.get(request.scheme)
    if scheme is None:
        raise BadRequest("unknown or missing scheme")
    return scheme


def plan(
    request: ceremony_pb2.CeremonyRequest,
    identity: Identity,
    record: ServerShare | None,
    rand: Random,
) -> Plan:
    """Build the server party's side of ``request``.

    Raises:
        BadRequest: the request does not fit this enclave or the wallet's keyring.
    """
    if request.kind == KIND.CEREMONY_KIND_KEYGEN:
        return _keygen(request, identity, rand)
    if request.kind == KIND.CEREMONY_KIND_RESHARE:  # the one that may run without a record
        return _reshare(request, identity, record, rand)
    if record is None:
        raise BadRequest("this ceremony needs the wallet's server share")
    if request.kind == KIND.CEREMONY_KIND_SIGN:
        return _sign(request, identity, record, rand)
    if request.kind == KIND.CEREMONY_KIND_REFRESH:
        return _refresh(request, identity, record, rand)
    if request.kind == KIND.CEREMONY_KIND_EXPORT:
        return _export(request, identity, record, rand)
    if request.kind == KIND.CEREMONY_KIND_PAIR_SETUP:
        return _pair_setup(request, identity, record, rand)
    raise BadRequest(f"ceremony kind {KIND.Name(request.kind)} is not supported by this enclave")


def _my_index(parties: Sequence[ceremony_pb2.Party], identity: Identity) -> int:
    ids = [p.party_id for p in parties]
    if identity.party_id not in ids:
        raise BadRequest("the server party is not among the request's parties")
    return ids.index(identity.party_id)


def _session(
    ceremony: Ceremony[Any],
    identity: Identity,
    roster: Roster,
    request: ceremony_pb2.CeremonyRequest,
    rand: Random,
) -> SecureSession[Any]:
    return SecureSession(
        ceremony, identity.static_key, roster, request.room_id, request.ceremony_id, rand,
        context=channel_context(request),
    )  # fmt: skip


def _keygen(request: ceremony_pb2.CeremonyRequest, identity: Identity, rand: Random) -> Plan:
    parties = list(request.parties)
    me = _my_index(parties, identity)
    mine = parties[me]
    if (bytes(mine.static_key), bytes(mine.host_pubkey)) != (
        identity.static_public_key,
        identity.host_pubkey,
    ):
        raise BadRequest("the request lists other keys for the server party")
    if request.owner_key and len(request.owner_key) != 32:
        raise BadRequest("owner key must be a 32-byte Ed25519 public key")
    scheme = scheme_of(request)
    check_server_threshold(request.threshold)  # the server party always holds a share
    roster = Roster.from_parties([(p.party_id, bytes(p.static_key)) for p in parties])
    ceremony = Keygen(
        scheme,
        identity.hostseckey,
        [bytes(p.host_pubkey) for p in parties],
        request.threshold,
        rand,
        session_id=lifecycle_session_id(request),
    )
    party_ids = tuple(p.party_id for p in parties)
    policy_set = registered_policy_set(request, 0)
    stored: list[KeyShare] = []

    def pending(change: Pending) -> ServerShare:
        # Stored before our CertEq signature leaves (pending before agreement).
        if change.epoch != 0 or change.share is None:
            raise InternalError("a keygen must leave a share of epoch 0")
        stored.append(change.share)
        return ServerShare(change.share, bytes(request.owner_key), party_ids, policy_set=policy_set)

    def finish(share: KeyShare) -> Outcome:
        # Public fields suffice: the public share pins the secret one (KeyShare checks).
        if not stored or (stored[0].public_key, stored[0].public_shares) != (
            share.public_key,
            share.public_shares,
        ):
            raise InternalError("the keygen finished with another share than it stored")
        # ChillDKG's certificate (the last 64n bytes of the recovery data): the host
        # keeps it with epoch 0, so a party that missed the last message can finish
        # from it (``tss.keygen.Keygen.finish_from_certificate``). Public.
        recovery = ceremony.recovery_data or b""
        result = ceremony_pb2.CeremonyResult(
            ceremony_id=request.ceremony_id, wallet_id=request.wallet_id,
            public_key=share.public_key, epoch=share.epoch,
            certificate=recovery[len(recovery) - 64 * len(parties) :] if recovery else b"",
        )  # fmt: skip
        record = ServerShare(share, bytes(request.owner_key), party_ids, policy_set=policy_set)
        return Outcome(None, result, pair_setups_of=record if share.ecdsa is not None else None)

    return Plan(_session(ceremony, identity, roster, request, rand), me, finish, pending)


def _sign(
    request: ceremony_pb2.CeremonyRequest, identity: Identity, record: ServerShare, rand: Random
) -> Plan:
    share = record.key_share
    parties = list(request.parties)
    if tuple(p.party_id for p in parties) != record.party_ids:
        raise BadRequest("the request's parties are not the wallet's keyring")
    if scheme_of(request) != share.scheme or request.epoch != share.epoch:
        raise BadRequest("the request names another scheme or epoch than the wallet's")
    me = _my_index(parties, identity)
    signers = sorted(set(request.signers))
    if len(signers) != len(request.signers) or me not in signers or signers[-1] >= len(parties):
        raise BadRequest("signers must be distinct party indices including the server party")
    roster = Roster.from_parties(
        [(parties[i].party_id, bytes(parties[i].static_key)) for i in signers], signers
    )
    options = SigningOptions(
        derivation_path=tuple(request.derivation_path),
        taproot=request.taproot,
        taproot_merkle_root=bytes(request.taproot_merkle_root) or None,
    )
    session_id = lifecycle_session_id(request)
    signed = _what_to_sign(request, share.scheme)
    if bytes(parties[me].host_pubkey) != identity.host_pubkey:
        raise BadRequest("the request lists another host key for the server party")
    host_keys = HostKeys(identity.hostseckey, tuple(bytes(p.host_pubkey) for p in parties))
    ceremony = signing_ceremony(share, signers, signed, session_id, rand, options, host_keys)

    def finish(signature: bytes | RecoverableSignature) -> Outcome:
        result = ceremony_pb2.CeremonyResult(
            ceremony_id=request.ceremony_id, wallet_id=request.wallet_id,
            public_key=share.public_key, epoch=share.epoch,
        )  # fmt: skip
        if isinstance(signature, RecoverableSignature):
            result.signature, result.recovery_id = signature.signature, signature.recovery_id
        else:
            result.signature = signature
        return Outcome(None, result)

    return Plan(_session(ceremony, identity, roster, request, rand), me, finish)


def _what_to_sign(request: ceremony_pb2.CeremonyRequest, scheme: Scheme) -> bytes:
    """The bytes the scheme signs: the message itself for ed25519 (RFC 8032 hashes it
    with the nonce commitment; there is no digest to sign), else the 32-byte digest."""
    if scheme != "ed25519":
        if request.message:
            raise BadRequest(f"a {scheme} wallet signs a digest, not a message")
        if len(request.digest) != 32:
            raise BadRequest("the digest must be 32 bytes")
        return bytes(request.digest)
    if request.digest:
        raise BadRequest("an ed25519 wallet signs the message itself, not a digest")
    if not 1 <= len(request.message) <= MAX_ED25519_MESSAGE:
        raise BadRequest(f"the message must be 1 to {MAX_ED25519_MESSAGE} bytes")
    if request.derivation_path or request.taproot or request.taproot_merkle_root:
        raise BadRequest("an ed25519 wallet takes no derivation path or Taproot tweak")
    return bytes(request.message)


def _pair_setup(
    request: ceremony_pb2.CeremonyRequest, identity: Identity, record: ServerShare, rand: Random
) -> Plan:
    share = _check_record(request, record)
    if share.scheme != "ecdsa-secp256k1":
        raise BadRequest("pair setups exist for ecdsa-secp256k1 keyrings only")
    parties = list(request.parties)
    me = _my_index(parties, identity)
    pair = sorted(set(request.signers))
    if len(pair) != 2 or len(request.signers) != 2 or me not in pair or pair[-1] >= len(parties):
        raise BadRequest("a pair setup names the server party and one other party as signers")
    peer = pair[0] if pair[1] == me else pair[1]
    roster = Roster.from_parties(
        [(parties[i].party_id, bytes(parties[i].static_key)) for i in pair], pair
    )
    session_id = lifecycle_session_id(request)
    ceremony = PairSetup(share, peer, session_id, rand)

    def finish(setup: PeerSetup) -> Outcome:
        result = ceremony_pb2.CeremonyResult(
            ceremony_id=request.ceremony_id, wallet_id=request.wallet_id,
            public_key=share.public_key, epoch=share.epoch,
        )  # fmt: skip
        return Outcome(None, result, setup)

    return Plan(_session(ceremony, identity, roster, request, rand), me, finish)


### Key lifecycle: refresh, reshare, export


def _check_record(request: ceremony_pb2.CeremonyRequest, record: ServerShare) -> KeyShare:
    """The request acts on the sealed record's keyring: its parties, scheme and epoch."""
    share = record.key_share
    if tuple(p.party_id for p in request.parties) != record.party_ids:
        raise BadRequest("the request's parties are not the wallet's keyring")
    if scheme_of(request) != share.scheme or request.epoch != share.epoch:
        raise BadRequest("the request names another scheme or epoch than the wallet's")
    return share


def _lifecycle_result(
    request: ceremony_pb2.CeremonyRequest, keyring: PublicKeyring, certificate: bytes = b""
) -> ceremony_pb2.CeremonyResult:
    return ceremony_pb2.CeremonyResult(
        ceremony_id=request.ceremony_id, wallet_id=request.wallet_id,
        public_key=keyring.public_key, epoch=keyring.epoch, certificate=certificate,
    )  # fmt: skip


def _key_change(change: Pending) -> PendingKeyChange:
    if not isinstance(change, PendingKeyChange):
        raise InternalError("a key change left a keygen's pending share")
    return change


def _key_change_result(
    request: ceremony_pb2.CeremonyRequest, out: ReshareOutput
) -> ceremony_pb2.CeremonyResult:
    if not out.certificate:
        raise InternalError("a key change finished without its certificate")
    return _lifecycle_result(request, out.keyring, out.certificate)


def _refresh(
    request: ceremony_pb2.CeremonyRequest, identity: Identity, record: ServerShare, rand: Random
) -> Plan:
    share = _check_record(request, record)
    layout = refresh_layout(request, PublicKeyring.from_share(share))
    me = layout.seat_of(identity.party_id)
    if me != share.party_id:
        raise BadRequest("the server party is not at its share's index")
    ceremony = Reshare(layout.plan, me, share, rand, identity.hostseckey)
    # A refresh may replace the wallet's policy set (a SET_POLICY activity, approved
    # under the set in force): the new set lives at the new epoch only, so once the
    # devices hold that epoch the old set, its keys included, is of no use.
    policy_set = replaced_policy_set(request, record.policy_set, share.epoch + 1)

    def pending(change: Pending) -> ServerShare:
        change = _key_change(change)
        new = change.share
        if new is None or new.public_key != share.public_key or new.epoch != share.epoch + 1:
            raise InternalError("a refresh must leave a new share of the same key")
        return ServerShare(
            new,
            record.owner_key,
            record.party_ids,
            KeyChangeProof.of(change),
            policy_set or carried_policy_set(record.policy_set, new.epoch),
        )

    def finish(out: ReshareOutput) -> Outcome:  # the record is stored already (pending)
        return Outcome(None, _key_change_result(request, out))

    session = _session(ceremony, identity, layout.roster, request, rand)
    return Plan(session, me, finish, pending)


def _reshare(
    request: ceremony_pb2.CeremonyRequest,
    identity: Identity,
    record: ServerShare | None,
    rand: Random,
) -> Plan:
    given = request_keyring(request)
    share: KeyShare | None = None
    if record is not None:  # the server party holds a share of the current keyring
        share = _check_record(request, record)
        keyring = PublicKeyring.from_share(share)
        if given is not None and given != keyring:
            raise BadRequest("the request's keyring is not the wallet's")
        if request.owner_key and bytes(request.owner_key) != record.owner_key:
            raise BadRequest("a reshare cannot change the wallet's owner key")
        owner_key = record.owner_key
        if request.policy_set:
            raise BadRequest("a reshare cannot replace the wallet's policy set")
        policy_set = record.policy_set
    else:  # it joins: the keyring, owner key and policy set come from the authorised request
        if identity.party_id in (p.party_id for p in request.parties):
            raise BadRequest("the server party's share of the current keyring is missing")
        if given is None:
            raise BadRequest("a reshare that adds the server party must carry the keyring")
        if len(request.owner_key) != 32:
            raise BadRequest("a reshare that adds the server party registers the owner key")
        keyring, owner_key = given, bytes(request.owner_key)
        policy_set = registered_policy_set(request, keyring.epoch + 1)
    if identity.party_id in (p.party_id for p in request.new_parties):
        check_server_threshold(request.new_threshold)  # also an import (it joins a 1-of-1)
    layout = reshare_layout(request, keyring)
    reshare_plan = layout.plan
    me = layout.seat_of(identity.party_id)
    if me is None:
        raise BadRequest("the server party neither deals nor receives in this reshare")
    # An old party that does not deal brings no share (it may still receive a new one).
    dealing = share if me in reshare_plan.dealers else None
    ceremony = Reshare(reshare_plan, me, dealing, rand, identity.hostseckey)
    new_party_ids = tuple(p.party_id for p in request.new_parties)
    stays = reshare_plan.new_id(me) is not None

    def pending(change: Pending) -> ServerShare | None:
        change = _key_change(change)
        new = change.share
        if change.public_key != keyring.public_key or (new is not None) != stays:
            raise InternalError("the reshare's outcome does not fit its plan")
        # A leaving server party stores nothing: its old share stays sealed at
        # the old epoch until the host retires it with that epoch (docs/key-changes.md).
        if new is None:
            return None
        return ServerShare(
            new,
            owner_key,
            new_party_ids,
            KeyChangeProof.of(change),
            carried_policy_set(policy_set, new.epoch),
        )

    def finish(out: ReshareOutput) -> Outcome:  # a new record is stored already (pending)
        return Outcome(None, _key_change_result(request, out))

    session = _session(ceremony, identity, layout.roster, request, rand)
    return Plan(session, me, finish, pending)


def _export(
    request: ceremony_pb2.CeremonyRequest, identity: Identity, record: ServerShare, rand: Random
) -> Plan:
    share = _check_record(request, record)
    # The recipient learns the whole key: never the server party, nor anyone
    # holding its static key (defence in depth: the enclave never opens a
    # contribution, but nothing should be sealed to a key it holds).
    if (
        request.export_recipient.party_id == identity.party_id
        or bytes(request.export_recipient_key) == identity.static_public_key
    ):
        raise BadRequest("the server party is never the export recipient")
    layout = export_layout(request, PublicKeyring.from_share(share))
    me = layout.seat_of(identity.party_id)
    if me is None or me not in layout.plan.quorum or me == layout.plan.recipient:
        raise BadRequest("the server party must contribute to the export, never receive it")
    ceremony = Export(layout.plan, me, share, rand)

    def finish(out: ExportOutput) -> Outcome:
        if out.private_key is not None:
            raise InternalError("the server party obtained an exported key")
        return Outcome(None, _lifecycle_result(request, layout.plan.keyring))

    return Plan(_session(ceremony, identity, layout.roster, request, rand), me, finish)
