"""Errors of the enclave process, mapped to gRPC status codes in one table (service.py)."""

from __future__ import annotations

from tss.errors import ShardkeepError


class EnclaveError(ShardkeepError):
    """Root of the enclave's own errors."""


class Unauthorized(EnclaveError):
    """The request lacks valid proof of authority (docs/architecture.md, "The enclave boundary")."""


class ChallengeRefused(Unauthorized):
    """The request's challenge is not one this process issued and has not seen used
    (another process issued it, the enclave restarted since, it was used, or it expired)."""


class BadRequest(EnclaveError):
    """The request is malformed or inconsistent."""


class WrongShare(EnclaveError):
    """The host supplied a sealed share that is missing, stale or not this wallet's."""


class Overloaded(EnclaveError):
    """A bounded in-memory table is full; the caller may retry later."""


class NotProvisioned(EnclaveError):
    """No identity yet: the enclave (re)started and the host has not provisioned it."""
