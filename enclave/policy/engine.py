"""The decision: deny wins; an allow needs its condition and its consensus of approvals.

Over a wallet's policy set and one activity (docs/security/policy.md,
"Data model"):

1. each **deny** policy whose condition holds denies; a deny condition that
   fails to evaluate denies too (fail closed);
2. otherwise the first **allow** policy whose condition holds and whose
   consensus the approvals meet allows; an allow condition that fails to
   evaluate does not allow;
3. otherwise the activity is denied, naming each allow policy that matched
   and what approvals it lacked (or that none matched).

A raw activity (a bare digest, an Ed25519 message not declared a Solana
message) shows a condition nothing of what is signed, so only an allow policy
whose condition names its kind (``'SIGN_RAW_DIGEST'``, ``'SIGN_RAW_MESSAGE'``)
allows it.

``approvers`` are the names of the authenticators whose approvals of this
activity under this set's hash verified (``enclave.policy.authenticators``);
the engine counts them and trusts the caller for the signatures.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import cel

from enclave.errors import Unauthorized
from enclave.policy.facts import RAW_KINDS, Activity, facts
from shardkeep.policy_conditions import Condition, ConditionError, compile_condition
from shardkeep.policyset import Consensus, PolicySet, policy_set_hash

__all__ = ["Allowed", "PolicyDenied", "PolicyEngine", "check_denies", "no_allow_reason"]


class PolicyDenied(Unauthorized):
    """The wallet's policies refuse the activity.

    Attributes:
        policy: the deny policy that matched, or "" when no allow policy allowed.
        condition: that policy's condition ("" when no allow policy allowed).
        reason: why, in words (which condition held or failed, which approvals lacked).
    """

    def __init__(self, policy: str, condition: str, reason: str) -> None:
        self.policy = policy
        self.condition = condition
        self.reason = reason
        where = f"denied by policy {policy!r} ({condition})" if policy else "denied"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Allowed:
    """The allow policy that allowed the activity and the approvers it counted."""

    policy: str
    approvers: tuple[str, ...]


@dataclass(frozen=True)
class _Compiled:
    name: str
    effect: str
    condition: Condition
    consensus: Consensus | None

    @functools.cached_property
    def raw_kinds(self) -> frozenset[str]:
        """The ``RAW_KINDS`` its condition names (read once, not per request)."""
        return frozenset(kind for kind in RAW_KINDS if self.condition.names(kind))


def check_denies(denies: Iterable[tuple[str, Condition]], context: cel.Context) -> None:
    """Raise ``PolicyDenied`` for the first deny condition that holds or fails to evaluate."""
    for name, condition in denies:
        try:
            if condition.holds(context):
                raise PolicyDenied(name, condition.source, "the condition holds")
        except ConditionError as e:
            raise PolicyDenied(
                name, condition.source, f"the condition failed ({e}): fail closed"
            ) from e


class PolicyEngine:
    """A policy set, checked and compiled once; decides activities.

    Arguments:
        policy_set: the wallet's set (structure checked by ``PolicySet``).
        prefix: put before policy names in what it reports (``organisation/``
            for the organisation's set).

    Raises:
        InvalidPolicy: a condition that is refused (see ``compile_condition``).
    """

    def __init__(self, policy_set: PolicySet, prefix: str = "") -> None:
        self.policy_set = policy_set
        self.hash = policy_set_hash(policy_set)
        self._tags = {a.name: frozenset(a.tags) for a in policy_set.authenticators}
        self._policies = tuple(
            _Compiled(
                prefix + p.name, p.effect, compile_condition(p.name, p.condition), p.consensus
            )
            for p in policy_set.policies
        )

    def decide(self, activity: Activity, approvers: Iterable[str]) -> Allowed:
        """Allow the activity or raise ``PolicyDenied`` naming the policy and condition.

        Arguments:
            activity: what is asked, with its parsed transaction.
            approvers: names of authenticators whose approvals verified.

        Raises:
            PolicyDenied: a deny policy matched (or failed to evaluate), or no
                allow policy matched with its consensus met.
            FactsError: the activity cannot be represented to a policy.
        """
        context = cel.Context(variables=facts(activity))
        self.check_denies(context)
        allowed = self.allows(activity, context, approvers)
        if isinstance(allowed, Allowed):
            return allowed
        raise PolicyDenied("", "", no_allow_reason(activity, allowed))

    def check_denies(self, context: cel.Context) -> None:
        """Raise ``PolicyDenied`` for the first deny policy that holds or fails to evaluate."""
        check_denies(((p.name, p.condition) for p in self._policies if p.effect == "deny"), context)

    def allows(
        self, activity: Activity, context: cel.Context, approvers: Iterable[str]
    ) -> Allowed | list[str]:
        """The first allow policy whose condition holds and whose consensus is met, or what
        each matching allow policy lacked.

        A raw activity (``RAW_KINDS``: nothing parsed, so no condition can see
        what is signed) counts only for an allow policy whose condition names
        its kind: a condition such as ``true`` does not let raw digests through.
        """
        approved = frozenset(a for a in approvers if a in self._tags)
        shortfalls = []
        for policy in self._policies:
            if policy.effect != "allow" or policy.consensus is None:
                continue
            if activity.kind in RAW_KINDS and activity.kind not in policy.raw_kinds:
                continue
            try:
                if not policy.condition.holds(context):
                    continue
            except ConditionError as e:
                shortfalls.append(f"{policy.name!r} failed to evaluate ({e})")
                continue
            counted = self._count(policy.consensus, approved)
            if len(counted) >= policy.consensus.min_approvals:
                return Allowed(policy.name, counted)
            tag = f" tagged {policy.consensus.tag!r}" if policy.consensus.tag else ""
            shortfalls.append(
                f"{policy.name!r} matched with {len(counted)} of "
                f"{policy.consensus.min_approvals} approvals{tag}"
            )
        return shortfalls

    def _count(self, consensus: Consensus, approved: frozenset[str]) -> tuple[str, ...]:
        return tuple(
            sorted(n for n in approved if not consensus.tag or consensus.tag in self._tags[n])
        )


def no_allow_reason(activity: Activity, shortfalls: Iterable[str]) -> str:
    """Why nothing allowed ``activity``: each matching allow policy's shortfall, or none matched."""
    text = "; ".join(shortfalls)
    if text:
        return text
    if activity.kind in RAW_KINDS:
        return (
            f"a {activity.kind} is signed only where an allow policy names that kind "
            f"(activity.kind == '{activity.kind}'); sign a parsed transaction or message instead"
        )
    return "no allow policy's condition holds"
