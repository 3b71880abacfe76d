"""Approvals checked against the wallet's authenticators: who approved this activity under this set.

Each approval names an authenticator of the policy set in force and signs
``approval_challenge(activity_hash, policy_set_hash)`` (``shardkeep.approvals``):
Ed25519 keys directly, P-256 keys with ECDSA-SHA256, passkeys through a
WebAuthn assertion (``enclave.policy.webauthn``). An approval that names no
authenticator of the set, repeats one, or does not verify refuses the whole
request, naming the authenticator: an approval signed under another (older)
policy set fails here, which is what stops the host from serving an older
set (docs/security/policy.md, "Rollback analysis").

Passkey signature counters live in this process's memory
(:class:`SignCounters`): they only raise the bar against a cloned passkey.
Replay is stopped by the enclave's single-use request challenge, which the
activity hash covers; a restart forgets the counters, and nothing the host
keeps enters the decision.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enclave.errors import Unauthorized
from enclave.policy.webauthn import AssertionRefused, verify_assertion
from shardkeep.approvals import Approval, approval_challenge
from shardkeep.policyset import Authenticator, PolicySet, policy_set_hash

__all__ = ["ApprovalRefused", "SignCounters", "verified_approvers"]


class ApprovalRefused(Unauthorized):
    """An approval that does not count; the authenticator and the fault are named.

    Attributes:
        authenticator: the name the approval gave.
    """

    def __init__(self, authenticator: str, message: str) -> None:
        self.authenticator = authenticator
        super().__init__(f"approval by {authenticator!r} refused: {message}")


class SignCounters:
    """The last WebAuthn signature counter seen per passkey key (memory only)."""

    def __init__(self) -> None:
        self._counts: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def check_and_verify(
        self, authenticator: Authenticator, approval: Approval, challenge: bytes
    ) -> None:
        """Verify a passkey's assertion against the stored counter and store the new one.

        Raises:
            AssertionRefused: a step of WebAuthn §7.2 failed.
        """
        # One lock around read, verify and store: two copies of an assertion
        # racing each other cannot both pass the counter check.
        with self._lock:
            stored = self._counts.get(authenticator.public_key, 0)
            assertion = verify_assertion(
                authenticator.public_key,
                authenticator.rp_id,
                authenticator.origin,
                challenge,
                approval.authenticator_data,
                approval.client_data_json,
                approval.signature,
                stored,
            )
            self._counts[authenticator.public_key] = assertion.sign_count


def _verify(
    authenticator: Authenticator, approval: Approval, challenge: bytes, counters: SignCounters
) -> None:
    if authenticator.kind == "webauthn-es256":
        counters.check_and_verify(authenticator, approval, challenge)
        return
    if approval.authenticator_data or approval.client_data_json:
        raise AssertionRefused("an API key's approval carries no WebAuthn data")
    try:
        if authenticator.kind == "ed25519":
            Ed25519PublicKey.from_public_bytes(authenticator.public_key).verify(
                approval.signature, challenge
            )
        else:
            ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), authenticator.public_key
            ).verify(approval.signature, challenge, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as e:
        raise AssertionRefused(f"the {authenticator.kind} signature does not verify") from e


def verified_approvers(
    policy_set: PolicySet,
    approvals: Iterable[Approval],
    activity_hash: bytes,
    counters: SignCounters,
    *,
    set_hash: bytes | None = None,
) -> tuple[str, ...]:
    """Verify every approval of an activity under ``policy_set``; the names that approved.

    Arguments:
        policy_set: the set in force (its hash is what the approvals must sign).
        approvals: as the request carried them.
        activity_hash: ``shardkeep.approvals.activity_hash`` of the request bytes.
        counters: this enclave's passkey counters.
        set_hash: ``policy_set_hash(policy_set)`` when the caller has it
            (``PolicyEngine.hash``); computed here otherwise.

    Returns:
        The approving authenticators' names, in the order given.

    Raises:
        ApprovalRefused: an approval names no authenticator of the set, names
            one twice, or does not verify (signed under another policy set,
            over another activity, by another key, from a wrong origin or RP
            id, or with a counter that did not increase).
    """
    if set_hash is None:
        set_hash = policy_set_hash(policy_set)
    challenge = approval_challenge(activity_hash, set_hash)
    names: list[str] = []
    for approval in approvals:
        authenticator = policy_set.authenticator(approval.authenticator)
        if authenticator is None:
            raise ApprovalRefused(
                approval.authenticator, "not an authenticator of this wallet's policy set"
            )
        if approval.authenticator in names:
            raise ApprovalRefused(approval.authenticator, "approved twice")
        try:
            _verify(authenticator, approval, challenge, counters)
        except AssertionRefused as e:
            raise ApprovalRefused(approval.authenticator, str(e)) from e
        names.append(approval.authenticator)
    return tuple(names)
