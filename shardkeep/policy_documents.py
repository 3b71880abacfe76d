"""Authenticators and policies as JSON entries (policy files, the enclave configuration).

An authenticator entry::

    {"name": "ops", "kind": "p256", "public_key": "02ab...", "tags": ["admin"],
     "rp_id": "", "origin": ""}

A policy entry (``consensus`` for allow policies only)::

    {"name": "friends", "effect": "allow", "condition": "...",
     "consensus": {"min_approvals": 1, "tag": ""}}

Shared by the SDK's policy files (``client.sdk.policy_files``) and the
enclave's organisation policies (``enclave.config``); the objects built are
checked by ``shardkeep.policyset``.
"""

from __future__ import annotations

from typing import Any

from shardkeep.policyset import Authenticator, Consensus, InvalidPolicy, Policy

__all__ = ["authenticator_from_entry", "policy_from_entry", "authenticator_entry", "policy_entry"]


def authenticator_from_entry(entry: Any) -> Authenticator:
    """An authenticator entry as an ``Authenticator``.

    Raises:
        InvalidPolicy: a missing or mistyped field, or one ``Authenticator`` refuses.
    """
    try:
        return Authenticator(
            entry["name"],
            entry["kind"],
            bytes.fromhex(entry["public_key"]),
            tuple(entry.get("tags", ())),
            entry.get("rp_id", ""),
            entry.get("origin", ""),
        )
    except InvalidPolicy:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InvalidPolicy("", f"an authenticator entry lacks or mistypes a field ({e!r})") from e


def policy_from_entry(entry: Any) -> Policy:
    """A policy entry as a ``Policy`` (its condition is compiled where it is used).

    Raises:
        InvalidPolicy: a missing or mistyped field.
    """
    try:
        consensus = entry.get("consensus")
        return Policy(
            entry["name"],
            entry["effect"],
            entry["condition"],
            None
            if consensus is None
            else Consensus(int(consensus["min_approvals"]), consensus.get("tag", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InvalidPolicy("", f"a policy entry lacks or mistypes a field ({e!r})") from e


def authenticator_entry(a: Authenticator) -> dict[str, Any]:
    """An authenticator as an entry (the inverse of ``authenticator_from_entry``)."""
    return {
        "name": a.name, "kind": a.kind, "public_key": a.public_key.hex(), "tags": list(a.tags),
        "rp_id": a.rp_id, "origin": a.origin,
    }  # fmt: skip


def policy_entry(p: Policy) -> dict[str, Any]:
    """A policy as an entry (the inverse of ``policy_from_entry``)."""
    return {
        "name": p.name, "effect": p.effect, "condition": p.condition,
        "consensus": None if p.consensus is None else
        {"min_approvals": p.consensus.min_approvals, "tag": p.consensus.tag},
    }  # fmt: skip
