"""A wallet's policy set: its authenticators and policies, encoded canonically and hashed.

The enclave evaluates a policy set (``enclave.policy``); every approval signs
the set's hash (``shardkeep.approvals``), so the set in force is fixed by the
approvers, not by whoever stores it (docs/security/policy.md). This module
is shared by the enclave and by clients that compute the hash they approve
under; it checks structure only. Conditions are compiled by
``shardkeep.policy_conditions``: the enclave decides with it, a client may
check a set before submitting it.

Encoding: canonical CBOR (RFC 8949 §4.2.1, deterministic: shortest forms,
sorted map keys) of a map with fixed keys; the hash is
``SHA-256("shardkeep/v1/policy-set\\0" || encoding)``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, cast, get_args

import cbor2

from tss.errors import InputError

__all__ = [
    # Functions
    "encode",
    "decode",
    "policy_set_hash",
    "organisation_set",
    # Exceptions
    "InvalidPolicy",
    # Types
    "AuthenticatorKind",
    "Authenticator",
    "Consensus",
    "Policy",
    "PolicySet",
]

POLICY_SET_TAG: Final = b"shardkeep/v1/policy-set\x00"
MAX_AUTHENTICATORS: Final = 32
MAX_POLICIES: Final = 64
MAX_TAGS: Final = 8
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

AuthenticatorKind = Literal["ed25519", "p256", "webauthn-es256"]
Effect = Literal["allow", "deny"]
_KEY_LENGTHS: Final = {"ed25519": 32, "p256": 33, "webauthn-es256": 33}


class InvalidPolicy(InputError):
    """A policy set refused at submission; the policy or authenticator and the fault are named.

    Attributes:
        name: the policy or authenticator at fault ("" for the set as a whole).
    """

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}" if name else message)


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidPolicy(
            "", f"{what} name {name!r} must be 1-64 of a-z 0-9 . _ - (a letter or digit first)"
        )


@dataclass(frozen=True)
class Authenticator:
    """A key of the wallet owner that may approve activities.

    Attributes:
        name: unique within the set; approvals name it.
        kind: ``ed25519`` (32-byte key), ``p256`` (33-byte compressed SEC1
            key, ECDSA-SHA256) or ``webauthn-es256`` (a passkey's P-256 key,
            33 bytes compressed).
        public_key: as above.
        tags: labels policies count approvers by (e.g. ``admin``).
        rp_id, origin: passkeys only: the WebAuthn relying party id and the
            origin its assertions must come from.
    """

    name: str
    kind: AuthenticatorKind
    public_key: bytes
    tags: tuple[str, ...] = ()
    rp_id: str = ""
    origin: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "authenticator")
        if self.kind not in get_args(AuthenticatorKind):
            raise InvalidPolicy(self.name, f"unknown authenticator kind {self.kind!r}")
        if (
            not isinstance(self.public_key, bytes)
            or len(self.public_key) != _KEY_LENGTHS[self.kind]
        ):
            raise InvalidPolicy(
                self.name, f"a {self.kind} public key is {_KEY_LENGTHS[self.kind]} bytes"
            )
        if len(self.tags) > MAX_TAGS:
            raise InvalidPolicy(self.name, f"at most {MAX_TAGS} tags")
        for tag in self.tags:
            _check_name(tag, "tag")
        if (self.kind == "webauthn-es256") != bool(self.rp_id and self.origin):
            raise InvalidPolicy(self.name, "passkeys, and only passkeys, name an RP id and origin")


@dataclass(frozen=True)
class Consensus:
    """How many distinct authenticators must approve, all carrying ``tag`` if one is named."""

    min_approvals: int
    tag: str = ""


@dataclass(frozen=True)
class Policy:
    """One rule: when ``condition`` (CEL) holds, deny, or allow given the consensus.

    Attributes:
        name: unique within the set; denials name it.
        effect: ``allow`` or ``deny``.
        condition: a CEL expression over the activity and the parsed transaction.
        consensus: allow policies only: the approvals an allowed activity needs.
    """

    name: str
    effect: Effect
    condition: str
    consensus: Consensus | None = None


@dataclass(frozen=True)
class PolicySet:
    """A wallet's authenticators and policies at one version and keyring epoch."""

    wallet_id: str
    epoch: int
    version: int
    authenticators: tuple[Authenticator, ...]
    policies: tuple[Policy, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.wallet_id, str) or not self.wallet_id:
            raise InvalidPolicy("", "the policy set names its wallet")
        for number, what in ((self.epoch, "epoch"), (self.version, "version")):
            if type(number) is not int or not 0 <= number < 2**63:
                raise InvalidPolicy("", f"the {what} is an integer in [0, 2^63)")
        if not 1 <= len(self.authenticators) <= MAX_AUTHENTICATORS:
            raise InvalidPolicy("", f"1 to {MAX_AUTHENTICATORS} authenticators")
        if not 1 <= len(self.policies) <= MAX_POLICIES:
            raise InvalidPolicy("", f"1 to {MAX_POLICIES} policies")
        names = [a.name for a in self.authenticators]
        if len(set(names)) != len(names):
            raise InvalidPolicy("", "authenticator names repeat")
        keys = [a.public_key for a in self.authenticators]
        if len(set(keys)) != len(keys):
            raise InvalidPolicy("", "an authenticator key is registered twice")
        if len({p.name for p in self.policies}) != len(self.policies):
            raise InvalidPolicy("", "policy names repeat")
        for policy in self.policies:
            self._check_policy(policy)

    def _check_policy(self, policy: Policy) -> None:
        _check_name(policy.name, "policy")
        if policy.effect not in get_args(Effect):
            raise InvalidPolicy(policy.name, f"effect {policy.effect!r} is not allow or deny")
        if not isinstance(policy.condition, str):
            raise InvalidPolicy(policy.name, "the condition is CEL source text")
        if policy.effect == "deny":
            if policy.consensus is not None:
                raise InvalidPolicy(policy.name, "a deny policy takes no consensus")
            return
        consensus = policy.consensus
        # Every allowed activity carries an approval, so it signs the set's hash:
        # this is what makes serving an older set detectable (docs/security/policy.md).
        if consensus is None or type(consensus.min_approvals) is not int:
            raise InvalidPolicy(policy.name, "an allow policy needs a consensus")
        if consensus.min_approvals < 1:
            raise InvalidPolicy(policy.name, "an allow policy needs at least one approval")
        if consensus.tag:
            _check_name(consensus.tag, "tag")
        eligible = sum(
            1 for a in self.authenticators if not consensus.tag or consensus.tag in a.tags
        )
        if consensus.min_approvals > eligible:
            raise InvalidPolicy(
                policy.name,
                f"needs {consensus.min_approvals} approvals"
                + (f" tagged {consensus.tag!r}" if consensus.tag else "")
                + f" but only {eligible} authenticators can give one",
            )

    def authenticator(self, name: str) -> Authenticator | None:
        """The authenticator called ``name``, if the set has one."""
        return next((a for a in self.authenticators if a.name == name), None)


def encode(policy_set: PolicySet) -> bytes:
    """The canonical CBOR encoding of a policy set (what its hash covers)."""
    return cbor2.dumps(
        {
            "v": 1,
            "wallet": policy_set.wallet_id,
            "epoch": policy_set.epoch,
            "version": policy_set.version,
            "authenticators": [
                {
                    "name": a.name,
                    "kind": a.kind,
                    "key": a.public_key,
                    "tags": list(a.tags),
                    "rp_id": a.rp_id,
                    "origin": a.origin,
                }
                for a in policy_set.authenticators
            ],
            "policies": [
                {
                    "name": p.name,
                    "effect": p.effect,
                    "condition": p.condition,
                    "consensus": None
                    if p.consensus is None
                    else [p.consensus.min_approvals, p.consensus.tag],
                }
                for p in policy_set.policies
            ],
        },
        canonical=True,
    )


def policy_set_hash(policy_set: PolicySet) -> bytes:
    """The 32-byte hash every approval under this set signs."""
    return hashlib.sha256(POLICY_SET_TAG + encode(policy_set)).digest()


ORGANISATION: Final = "_organisation"
"""The wallet id of the organisation's set (no wallet id starts with ``_``)."""


def organisation_set(
    authenticators: tuple[Authenticator, ...], allow_policies: tuple[Policy, ...]
) -> PolicySet:
    """The organisation's allow policies and authenticators as the set its approvals sign.

    An organisation authenticator approves under the hash of this set
    (wallet ``_organisation``, epoch 0, version 1): it spans every wallet, and
    the enclave's measured configuration, not a refresh, changes it.

    Raises:
        InvalidPolicy: as ``PolicySet``.
    """
    return PolicySet(ORGANISATION, 0, 1, authenticators, allow_policies)


_T = TypeVar("_T")


def _field(fields: dict[Any, Any], name: str, kind: type[_T]) -> _T:
    value = fields.get(name)
    if type(value) is not kind:  # exact: a bool is no int here
        raise InvalidPolicy("", f"the encoded policy set's {name!r} is not a {kind.__name__}")
    return value


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidPolicy("", f"{what} is not a list of strings")
    return tuple(value)


def decode(data: bytes) -> PolicySet:
    """Parse and check an encoded policy set; only the canonical encoding is accepted.

    Raises:
        InvalidPolicy: not CBOR, not the canonical encoding of a policy set,
            or a set that fails the checks of ``PolicySet``.
    """
    try:
        fields = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as e:
        raise InvalidPolicy("", "the policy set does not decode") from e
    if not isinstance(fields, dict) or fields.get("v") != 1:
        raise InvalidPolicy("", "not a version-1 policy set")
    authenticators = []
    for entry in _field(fields, "authenticators", list):
        if not isinstance(entry, dict):
            raise InvalidPolicy("", "an authenticator is not a map")
        authenticators.append(
            Authenticator(
                _field(entry, "name", str),
                cast(AuthenticatorKind, _field(entry, "kind", str)),  # checked by Authenticator
                _field(entry, "key", bytes),
                _strings(entry.get("tags"), "tags"),
                _field(entry, "rp_id", str),
                _field(entry, "origin", str),
            )
        )
    policies = []
    for entry in _field(fields, "policies", list):
        if not isinstance(entry, dict):
            raise InvalidPolicy("", "a policy is not a map")
        consensus = entry.get("consensus")
        if consensus is not None and not (
            isinstance(consensus, list)
            and len(consensus) == 2
            and type(consensus[0]) is int
            and isinstance(consensus[1], str)
        ):
            raise InvalidPolicy("", "a consensus is [min_approvals, tag]")
        policies.append(
            Policy(
                _field(entry, "name", str),
                cast(Effect, _field(entry, "effect", str)),  # checked by PolicySet
                _field(entry, "condition", str),
                None if consensus is None else Consensus(consensus[0], consensus[1]),
            )
        )
    policy_set = PolicySet(
        _field(fields, "wallet", str),
        _field(fields, "epoch", int),
        _field(fields, "version", int),
        tuple(authenticators),
        tuple(policies),
    )
    if encode(policy_set) != data:
        raise InvalidPolicy("", "not the canonical encoding of the policy set")
    return policy_set
