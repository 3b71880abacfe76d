"""What the host reads from a coordinator's ceremony request before forwarding it.

The serialised ``CeremonyRequest`` is not secret (docs/architecture.md), so the host
parses it for routing and bookkeeping: which method it belongs to, the room and
the enclave's party id there, and the keyring it must record next to the
sealed share. These checks only save a doomed round trip: the enclave verifies
the signed bytes itself and decides (docs/architecture.md); a host that skipped them
could not make the enclave act.

An import (docs/architecture.md) reaches the host as a reshare from the importing
party's 1-of-1 keyring, in which the server party is a new holder only: it
holds no share of the current keyring, which the request carries, with the
owner key it registers. Such a reshare may name a wallet the store does not
know (``CeremonyPlan.may_open_wallet``); the enclave's new share then opens it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

import grpc
from google.protobuf.message import DecodeError

from host.errors import HostError
from host.store_errors import StoreInputError
from host.store_records import MAX_OWNER_KEY_BYTES, Keyring, Party, Scheme, StaticKey, check_id
from shardkeep.v1 import ceremony_pb2, host_pb2

__all__ = [
    # Functions
    "plan_ceremony",
    "scheme_name",
    "scheme_enum",
    # Types
    "CeremonyPlan",
    "KEY_CHANGING_KINDS",
    "KIND_NAMES",
]

_K = ceremony_pb2.CeremonyKind

KIND_NAMES: Final[dict[int, str]] = {
    _K.CEREMONY_KIND_KEYGEN: "keygen",
    _K.CEREMONY_KIND_SIGN: "sign",
    _K.CEREMONY_KIND_RESHARE: "reshare",
    _K.CEREMONY_KIND_REFRESH: "refresh",
    _K.CEREMONY_KIND_EXPORT: "export",
    _K.CEREMONY_KIND_PAIR_SETUP: "pair-setup",
}
KEY_CHANGING_KINDS: Final = frozenset(
    {_K.CEREMONY_KIND_KEYGEN, _K.CEREMONY_KIND_RESHARE, _K.CEREMONY_KIND_REFRESH}
)
"""Ceremonies that write a new epoch of sealed shares."""

_SCHEMES: Final[dict[int, Scheme]] = {
    ceremony_pb2.SCHEME_ECDSA_SECP256K1: "ecdsa-secp256k1",
    ceremony_pb2.SCHEME_BIP340: "bip340",
    ceremony_pb2.SCHEME_ED25519: "ed25519",
}
_SCHEME_ENUMS: Final[dict[Scheme, ceremony_pb2.Scheme]] = {
    "ecdsa-secp256k1": ceremony_pb2.SCHEME_ECDSA_SECP256K1,
    "bip340": ceremony_pb2.SCHEME_BIP340,
    "ed25519": ceremony_pb2.SCHEME_ED25519,
}


def scheme_name(value: int) -> Scheme | None:
    """The store's name of a proto ``Scheme`` (None for an unknown value)."""
    return _SCHEMES.get(value)


def scheme_enum(name: Scheme) -> ceremony_pb2.Scheme:
    """The proto ``Scheme`` of a store scheme name."""
    return _SCHEME_ENUMS[name]


@dataclass(frozen=True)
class CeremonyPlan:
    """A ceremony request as the host understood it.

    Attributes:
        signed: the signed request, forwarded to the enclave unchanged.
        request: its parsed ``CeremonyRequest``.
        kind: the ceremony kind (matches the called method).
        kind_name: "keygen", "sign", "reshare", "refresh", "export" or "pair-setup".
        party_id: the enclave's party id in the room (its static key's party).
        scheme: the store's scheme name (keygen, and a reshare that may open a
            wallet; None otherwise).
        keyring: what the new epoch records: keygen's keyring, reshare's new
            keyring; None for refresh (keeps the current one), sign and export.
        may_open_wallet: a reshare that adds the server party with the current
            keyring and an owner key (an import): if the wallet is unknown, the
            server party's new share opens it at the reshare's epoch.
    """

    signed: ceremony_pb2.SignedCeremonyRequest
    request: ceremony_pb2.CeremonyRequest
    kind: int
    kind_name: str
    party_id: str
    scheme: Scheme | None
    keyring: Keyring | None
    may_open_wallet: bool = False

    @property
    def wallet_id(self) -> str:
        """The wallet the ceremony acts on."""
        return self.request.wallet_id

    @property
    def room_id(self) -> str:
        """The relay room of the ceremony."""
        return self.request.room_id

    @property
    def ceremony_id(self) -> str:
        """The ceremony's id (one room may carry several in turn)."""
        return self.request.ceremony_id

    @property
    def changes_keys(self) -> bool:
        """Whether the ceremony writes a new epoch (keygen, reshare, refresh)."""
        return self.kind in KEY_CHANGING_KINDS


def _invalid(message: str) -> HostError:
    return HostError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _keyring(threshold: int, parties: list[ceremony_pb2.Party], what: str) -> Keyring:
    try:
        return Keyring(
            threshold,
            tuple(Party(p.party_id, StaticKey(bytes(p.static_key))) for p in parties),
        )
    except StoreInputError as e:
        raise _invalid(f"{what}: {e}") from e


def _enclave_party(request: ceremony_pb2.CeremonyRequest, enclave_static_key: bytes) -> str | None:
    # A reshare may add the server share (new_parties only) or keep it (both
    # lists); its party id derives from its static key, so it is the same in both.
    for party in (*request.parties, *request.new_parties):
        if hmac.compare_digest(bytes(party.static_key), enclave_static_key):
            return party.party_id
    return None


def plan_ceremony(
    host_request: host_pb2.HostCeremonyRequest, method_kind: int, enclave_static_key: bytes
) -> CeremonyPlan:
    """Parse and check a coordinator's request for the method ``method_kind``.

    Arguments:
        host_request: the call's request.
        method_kind: the ``CeremonyKind`` of the called method.
        enclave_static_key: the enclave's 32-byte X25519 key (from Provision).

    Returns:
        The plan.

    Raises:
        HostError: INVALID_ARGUMENT for a missing or unparsable request, a kind
            that does not match the method, missing ids or relay token, a
            malformed keyring, or a request that does not include the server
            party.
    """
    if not host_request.HasField("request") or not host_request.request.request:
        raise _invalid("the signed ceremony request is missing")
    if not host_request.relay_token:
        raise _invalid("relay_token is missing")
    signed = host_request.request
    request = ceremony_pb2.CeremonyRequest()
    try:
        request.ParseFromString(signed.request)
    except DecodeError as e:
        raise _invalid("the ceremony request does not parse") from e
    if request.kind != method_kind:
        raise _invalid(
            f"the request's kind ({KIND_NAMES.get(request.kind, 'unspecified')}) does not match "
            f"the method ({KIND_NAMES[method_kind]})"
        )
    try:
        check_id("wallet id", request.wallet_id)
        check_id("room id", request.room_id)
        check_id("ceremony id", request.ceremony_id)
    except StoreInputError as e:
        raise _invalid(str(e)) from e
    party_id = _enclave_party(request, enclave_static_key)
    if party_id is None:
        raise _invalid("the request does not include the server party (the enclave's static key)")
    scheme: Scheme | None = None
    keyring: Keyring | None = None
    may_open_wallet = False
    if method_kind == _K.CEREMONY_KIND_KEYGEN:
        scheme = scheme_name(request.scheme)
        if scheme is None:
            raise _invalid("keygen needs a scheme")
        keyring = _keyring(request.threshold, list(request.parties), "keygen keyring")
        if len(request.owner_key) > MAX_OWNER_KEY_BYTES:
            raise _invalid(f"owner_key is longer than {MAX_OWNER_KEY_BYTES} bytes")
    elif method_kind == _K.CEREMONY_KIND_RESHARE:
        keyring = _keyring(request.new_threshold, list(request.new_parties), "reshare keyring")
        joins = party_id not in (p.party_id for p in request.parties)
        if joins and request.HasField("keyring") and request.owner_key:
            scheme = scheme_name(request.scheme)
            if scheme is None:
                raise _invalid("a reshare that adds the server party needs a scheme")
            if len(request.owner_key) > MAX_OWNER_KEY_BYTES:
                raise _invalid(f"owner_key is longer than {MAX_OWNER_KEY_BYTES} bytes")
            may_open_wallet = True
    return CeremonyPlan(
        signed=signed,
        request=request,
        kind=method_kind,
        kind_name=KIND_NAMES[method_kind],
        party_id=party_id,
        scheme=scheme,
        keyring=keyring,
        may_open_wallet=may_open_wallet,
    )
