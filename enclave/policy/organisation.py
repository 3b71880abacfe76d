"""The organisation's policies: part of the enclave's measured configuration, over every wallet.

Configuration (``enclave.config``; docs/security/policy.md, "Organisation
policies")::

    "organisation_policies": {
        "mainnet-only": "activity.kind == 'SIGN_EVM_TRANSACTION' && eth.tx.chain_id != 1",
        "treasury": {"effect": "allow", "condition": "true",
                     "consensus": {"min_approvals": 2, "tag": "admin"}}},
    "organisation_authenticators": [{"name": "cfo", "kind": "ed25519",
                                     "public_key": "…", "tags": ["admin"]}]

A string is a deny condition. Deny policies apply to every gated activity of
every wallet before anything else; allow policies allow an activity of any
wallet with the approvals of the organisation's authenticators, which sign
under ``shardkeep.policyset.organisation_set``'s hash and are named
``organisation/NAME`` in a request's approvals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from enclave.policy.engine import PolicyEngine
from shardkeep.policy_conditions import Condition, compile_condition
from shardkeep.policy_documents import authenticator_from_entry, policy_from_entry
from shardkeep.policyset import InvalidPolicy, organisation_set

__all__ = ["Organisation", "PREFIX"]

PREFIX: Final = "organisation/"


@dataclass(frozen=True)
class Organisation:
    """The organisation's deny conditions and, if it has allow policies, their engine.

    Attributes:
        denies: (``organisation/NAME``, compiled condition) of each deny policy.
        allows: the engine of the allow policies and authenticators, or None.
    """

    denies: tuple[tuple[str, Condition], ...] = ()
    allows: PolicyEngine | None = None

    @staticmethod
    def from_config(policies: Any = None, authenticators: Any = None) -> Organisation:
        """Check and compile the configuration's entries (module docstring).

        Raises:
            InvalidPolicy: an entry that is malformed or refused, authenticators
                without allow policies, or allow policies their authenticators
                cannot meet.
        """
        if not isinstance(policies or {}, Mapping):
            raise InvalidPolicy("", "the organisation's policies map names to policies")
        if not isinstance(authenticators or [], Sequence):
            raise InvalidPolicy("", "the organisation's authenticators are a list")
        denies, allows = [], []
        for name, entry in (policies or {}).items():
            if isinstance(entry, str):
                denies.append((PREFIX + name, compile_condition(name, entry)))
                continue
            if not isinstance(entry, Mapping):
                raise InvalidPolicy(name, "a policy is a deny condition or a policy entry")
            policy = policy_from_entry({**entry, "name": name})
            if policy.effect == "deny":
                if policy.consensus is not None:
                    raise InvalidPolicy(name, "a deny policy takes no consensus")
                denies.append((PREFIX + name, compile_condition(name, policy.condition)))
            else:
                allows.append(policy)
        keys = tuple(authenticator_from_entry(a) for a in authenticators or [])
        if keys and not allows:
            raise InvalidPolicy("", "organisation authenticators without an allow policy")
        engine = PolicyEngine(organisation_set(keys, tuple(allows)), PREFIX) if allows else None
        return Organisation(tuple(denies), engine)
