"""The policy gate of the enclave: the server share acts only with the approvals a policy requires.

Called once the coordinator's (and owner's) signatures and the challenge
have been checked (``enclave.auth``), with the wallet's sealed record
(docs/security/policy.md). The coordinator's signature alone never suffices:

- a keygen, or a reshare that adds the server party (an import), registers
  a policy set, unless the organisation has allow policies to govern the
  wallet (``PolicyRequired`` otherwise);
- every other ceremony but a pair setup is an activity: its transaction or
  message is parsed here (an EVM transaction, a Solana message, a PSBT input,
  an EIP-191 or EIP-712 message; a digest that is not the one the enclave
  computes from it is refused), the approvals are verified against the
  authenticators of the wallet's set (and the organisation's, for approvals
  named ``organisation/NAME``) over ``approval_challenge(activity_hash(request
  bytes), policy_set_hash)``, and the engines decide: a deny of the
  organisation or of the wallet wins; then an allow of the wallet's set or of
  the organisation's allows;
- a record without a set of its own (sealed before sets existed, or made
  under an organisation allow policy) is governed by the organisation's
  policies alone; without any, it may only adopt a set: a refresh carrying
  one (``SET_POLICY``), approved under that new set;
- a raw digest (``SIGN_RAW_DIGEST``) or an Ed25519 message not declared a
  Solana message (``SIGN_RAW_MESSAGE``) needs an allow policy naming its kind.

Pair setups are not gated: they sign nothing and move no key.

``registered_policy_set`` checks the set a keygen (or a reshare that adds
the server party) registers, ``replaced_policy_set`` the set a refresh puts
in place of the current one (the ``SET_POLICY`` activity), and
``carried_policy_set`` re-binds a wallet's set to the epoch a refresh or
reshare makes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Final

import cel

from enclave.errors import BadRequest, Unauthorized
from enclave.policy.authenticators import ApprovalRefused, SignCounters, verified_approvers
from enclave.policy.engine import (
    Allowed,
    PolicyDenied,
    PolicyEngine,
    check_denies,
    no_allow_reason,
)
from enclave.policy.facts import Activity, facts
from enclave.policy.organisation import PREFIX, Organisation
from shardkeep.approvals import Approval, activity_hash
from shardkeep.chains import evm, solana
from shardkeep.chains.eth_messages import load_typed_data, personal_message_digest
from shardkeep.chains.psbt import parse_psbt
from shardkeep.lifecycle import SCHEMES
from shardkeep.policyset import InvalidPolicy, decode, encode
from shardkeep.v1 import ceremony_pb2
from tss.errors import InputError

__all__ = [
    "PolicyGate",
    "PolicyRequired",
    "activity_of",
    "registered_policy_set",
    "replaced_policy_set",
    "carried_policy_set",
]

KIND = ceremony_pb2.CeremonyKind
_KINDS: Final = {
    KIND.CEREMONY_KIND_RESHARE: "RESHARE",
    KIND.CEREMONY_KIND_REFRESH: "REFRESH",
    KIND.CEREMONY_KIND_EXPORT: "EXPORT",
}
ENGINE_CACHE_SIZE: Final = 1024
# A PSBT's inputs are signed one ceremony each, every request carrying the whole
# PSBT: parsed once, its shared sighash hashes are computed once for all inputs.
_parsed_psbt = functools.lru_cache(maxsize=4)(parse_psbt)


def registered_policy_set(request: ceremony_pb2.CeremonyRequest, epoch: int) -> bytes:
    """The policy set a request registers for its wallet at ``epoch``, checked (b"" for none).

    Raises:
        InvalidPolicy: the set is malformed, refused (see ``PolicyEngine``),
            or names another wallet or epoch.
    """
    if not request.policy_set:
        return b""
    data = bytes(request.policy_set)
    policy_set = decode(data)
    if (policy_set.wallet_id, policy_set.epoch) != (request.wallet_id, epoch):
        raise InvalidPolicy(
            "", f"the policy set must name wallet {request.wallet_id!r}, epoch {epoch}"
        )
    PolicyEngine(policy_set)  # every condition compiles, or the keygen is refused now
    return data


def replaced_policy_set(request: ceremony_pb2.CeremonyRequest, current: bytes, epoch: int) -> bytes:
    """The set a refresh puts in place of ``current`` at ``epoch``, checked (b"" for none).

    Raises:
        InvalidPolicy: as ``registered_policy_set``, or a version that does
            not exceed the current set's (versions only go up).
    """
    data = registered_policy_set(request, epoch)
    if data and current and decode(data).version <= decode(current).version:
        raise InvalidPolicy("", "a new policy set needs a version above the current one")
    return data


def carried_policy_set(data: bytes, epoch: int) -> bytes:
    """A wallet's sealed policy set re-bound to the new epoch of a refresh or reshare."""
    if not data:
        return b""
    return encode(dataclasses.replace(decode(data), epoch=epoch))


def activity_of(request: ceremony_pb2.CeremonyRequest) -> Activity | None:
    """What a request asks of the server share, as the policy sees it (None: not gated).

    Raises:
        BadRequest: more than one transaction or message, one that does not
            parse or comes with the wrong scheme, or a digest that is not the
            one the enclave computes from it.
    """
    scheme = SCHEMES.get(request.scheme, "")
    wallet, path = request.wallet_id, tuple(request.derivation_path)
    if request.kind == KIND.CEREMONY_KIND_REFRESH and request.policy_set:
        return Activity("SET_POLICY", wallet, scheme, path)
    if request.kind in _KINDS:
        return Activity(_KINDS[request.kind], wallet, scheme, path)
    if request.kind != KIND.CEREMONY_KIND_SIGN:
        return None  # keygen (no wallet yet) and pair setups (sign nothing, move no key)
    payloads = [
        bool(request.evm_transaction), request.solana_message, bool(request.psbt),
        bool(request.eth_personal_message), bool(request.eth_typed_data),
    ]  # fmt: skip
    if sum(payloads) > 1:
        raise BadRequest("a signature request carries one transaction or message at most")
    try:
        if request.evm_transaction:
            _need(scheme, "ecdsa-secp256k1", "an EVM transaction")
            tx = evm.parse_transaction(bytes(request.evm_transaction))
            _own_digest(tx.digest, request, "the EVM transaction's signing digest")
            return Activity("SIGN_EVM_TRANSACTION", wallet, scheme, path, evm=tx)
        if request.solana_message:
            _need(scheme, "ed25519", "a Solana message")
            message = solana.parse_message(bytes(request.message))
            return Activity("SIGN_SOLANA_MESSAGE", wallet, scheme, path, solana=message)
        if request.psbt:
            _need(scheme, "bip340", "a PSBT input")
            parsed = _parsed_psbt(bytes(request.psbt))
            index = request.psbt_input
            if index >= len(parsed.inputs):
                raise BadRequest(f"the PSBT has no input {index}")
            _own_digest(parsed.key_path_sighash(index), request, "the input's BIP-341 sighash")
            return Activity("SIGN_PSBT", wallet, scheme, path, psbt=parsed, psbt_input=index)
        if request.eth_personal_message:
            _need(scheme, "ecdsa-secp256k1", "an EIP-191 message")
            text = bytes(request.eth_personal_message)
            _own_digest(personal_message_digest(text), request, "the EIP-191 digest")
            return Activity("SIGN_EIP191", wallet, scheme, path, personal_message=text)
        if request.eth_typed_data:
            _need(scheme, "ecdsa-secp256k1", "EIP-712 typed data")
            typed = load_typed_data(bytes(request.eth_typed_data))
            _own_digest(typed.digest(), request, "the EIP-712 digest")
            return Activity("SIGN_EIP712", wallet, scheme, path, typed_data=typed)
    except InputError as e:  # every parser's and codec's typed error
        raise BadRequest(f"the transaction or message does not parse: {e}") from e
    if scheme == "ed25519":  # RFC 8032 signs the message itself, here one not parsed
        return Activity("SIGN_RAW_MESSAGE", wallet, scheme, path)
    return Activity("SIGN_RAW_DIGEST", wallet, scheme, path)


def _need(scheme: str, wanted: str, what: str) -> None:
    if scheme != wanted:
        raise BadRequest(f"{what} is signed by an {wanted} wallet")


def _own_digest(digest: bytes, request: ceremony_pb2.CeremonyRequest, what: str) -> None:
    # The enclave computes the digest itself and signs only that: a digest of
    # anything else is refused, not trusted.
    if not hmac.compare_digest(digest, bytes(request.digest)):
        raise BadRequest(f"the digest is not {what}")


class PolicyRequired(Unauthorized):
    """The wallet, or the wallet a request would make, has no policy set, and no
    organisation allow policy governs it: the coordinator's signature alone never suffices."""


class PolicyGate:
    """Compiled policy sets (cached by hash) and the passkey counters of this enclave process.

    Arguments:
        organisation: the deployment's policies, from the enclave's measured
            configuration (``Organisation``; a mapping is deny conditions only,
            name -> CEL).

    Raises:
        InvalidPolicy: an organisation condition that is refused.
    """

    def __init__(self, organisation: Organisation | Mapping[str, str] | None = None) -> None:
        self.counters = SignCounters()
        if not isinstance(organisation, Organisation):
            organisation = Organisation.from_config(organisation)
        self._organisation = organisation
        self._engines: OrderedDict[bytes, PolicyEngine] = OrderedDict()
        self._lock = threading.Lock()

    def _engine(self, data: bytes) -> PolicyEngine:
        key = hashlib.sha256(data).digest()
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
        engine = PolicyEngine(decode(data))
        with self._lock:
            self._engines[key] = engine
            while len(self._engines) > ENGINE_CACHE_SIZE:
                self._engines.popitem(last=False)
        return engine

    def check(
        self,
        signed: ceremony_pb2.SignedCeremonyRequest,
        request: ceremony_pb2.CeremonyRequest,
        policy_set: bytes | None,
    ) -> Allowed | None:
        """Let the request through, or raise naming why not.

        Arguments:
            signed: the request as it arrived (its bytes are what approvals cover).
            request: the same, parsed and already authorised.
            policy_set: the wallet's sealed policy set (b"" for a record without
                one), or None for a request without a record (a keygen, or a
                reshare that adds the server party: it registers a set).

        Returns:
            The allowing policy and approvers, or None when nothing is gated.

        Raises:
            PolicyRequired: a keygen or import registering no set, or an
                activity of a wallet without one (but the refresh adopting
                one), where no organisation allow policy applies.
            ApprovalRefused: an approval that does not verify.
            PolicyDenied: the policies refuse the activity.
            BadRequest: see ``activity_of``; FactsError: an amount a policy cannot hold.
        """
        allows = self._organisation.allows
        if policy_set is None:
            if not request.policy_set and allows is None:
                raise PolicyRequired(
                    f"a new wallet registers a policy set: wallet {request.wallet_id!r} "
                    "comes without one and no organisation allow policy governs it"
                )
            return None
        activity = activity_of(request)
        if activity is None:
            return None
        # A wallet without a set of its own adopts its first by a refresh carrying
        # it (SET_POLICY), approved under that set: the devices take part too.
        own = policy_set or (bytes(request.policy_set) if activity.kind == "SET_POLICY" else b"")
        engine = self._engine(own) if own else None
        if engine is None and allows is None:
            raise PolicyRequired(
                f"wallet {request.wallet_id!r} has no policy set, so its server share "
                "acts only to adopt one: a refresh that carries a policy set "
                "(WalletClient.refresh(new_policy_set=...), shardkeep wallet refresh --new-policy)"
            )
        context = cel.Context(variables=facts(activity))
        check_denies(self._organisation.denies, context)
        digest = activity_hash(bytes(signed.request))
        mine, organisation = _split(signed.approvals)
        candidates: list[tuple[PolicyEngine, tuple[str, ...]]] = []
        for candidate, approvals in ((engine, mine), (allows, organisation)):
            if candidate is None:
                if approvals:
                    raise ApprovalRefused(approvals[0].authenticator, "no such policy set here")
                continue
            names = verified_approvers(
                candidate.policy_set, approvals, digest, self.counters, set_hash=candidate.hash
            )
            candidates.append((candidate, names))
        if engine is not None:
            engine.check_denies(context)  # deny wins: before any allow, the organisation's too
        shortfalls: list[str] = []
        for candidate, names in candidates:
            allowed = candidate.allows(activity, context, names)
            if isinstance(allowed, Allowed):
                return allowed
            shortfalls += allowed
        raise PolicyDenied("", "", no_allow_reason(activity, shortfalls))


def _split(
    approvals: Iterable[ceremony_pb2.Approval],
) -> tuple[list[Approval], list[Approval]]:
    """The approvals by the wallet's authenticators and by the organisation's (prefix dropped)."""
    mine: list[Approval] = []
    organisation: list[Approval] = []
    for a in approvals:
        name = a.authenticator
        theirs = name.startswith(PREFIX)
        (organisation if theirs else mine).append(
            Approval(
                name.removeprefix(PREFIX), a.signature, a.authenticator_data, a.client_data_json
            )
        )
    return mine, organisation
