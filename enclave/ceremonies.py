"""Turning an authorised request into the server party's ceremony (sans-IO).

``plan`` checks that the request fits the enclave's identity and the wallet's
sealed record, builds the ``tss`` ceremony and its ``SecureSession``, and says
how to turn the ceremony's result into what the enclave seals and reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from enclave.errors import BadRequest
from enclave.identity import Identity, ServerShare
from shardkeep.v1 import ceremony_pb2
from tss.ceremony import Ceremony, Random
from tss.channel import Roster
from tss.keygen import Keygen
from tss.keyshare import KeyShare, Scheme
from tss.session import SecureSession
from tss.signing import Bip340Signing, EcdsaSigning, RecoverableSignature, SigningOptions

KIND = ceremony_pb2.CeremonyKind
SCHEMES: dict[int, Scheme] = {
    ceremony_pb2.SCHEME_BIP340: "bip340",
    ceremony_pb2.SCHEME_ECDSA_SECP256K1: "ecdsa-secp256k1",
}


@dataclass(frozen=True)
class Outcome:
    """What a finished ceremony leaves: a record to seal (or None) and the result to report."""

    record: ServerShare | None
    result: ceremony_pb2.CeremonyResult


@dataclass
class Plan:
    """A ceremony ready to run, and how to conclude it."""

    session: SecureSession[Any]
    me: int
    finish: Callable[[Any], Outcome]


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
    if record is None:
        raise BadRequest("this ceremony needs the wallet's server share")
    if request.kind == KIND.CEREMONY_KIND_SIGN:
        return _sign(request, identity, record, rand)
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
        ceremony, identity.static_key, roster, request.room_id, request.ceremony_id, rand
    )


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
    roster = Roster.from_parties([(p.party_id, bytes(p.static_key)) for p in parties])
    ceremony = Keygen(
        scheme,
        identity.hostseckey,
        [bytes(p.host_pubkey) for p in parties],
        request.threshold,
        rand,
    )
    party_ids = tuple(p.party_id for p in parties)

    def finish(share: KeyShare) -> Outcome:
        record = ServerShare(share, bytes(request.owner_key), party_ids)
        result = ceremony_pb2.CeremonyResult(
            ceremony_id=request.ceremony_id, wallet_id=request.wallet_id,
            public_key=share.public_key, epoch=share.epoch,
        )  # fmt: skip
        return Outcome(record, result)

    return Plan(_session(ceremony, identity, roster, request, rand), me, finish)


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
    session_id = f"{request.room_id}/{request.ceremony_id}".encode()
    digest = bytes(request.digest)
    if len(digest) != 32:
        raise BadRequest("the digest must be 32 bytes")
    ceremony: Ceremony[Any]
    if share.scheme == "bip340":
        ceremony = Bip340Signing(share, signers, digest, session_id, rand, options)
    else:
        ceremony = EcdsaSigning(share, signers, digest, session_id, rand, options)

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
