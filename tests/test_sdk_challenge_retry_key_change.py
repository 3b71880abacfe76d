"""A refused pooled challenge is retried once, but never after a key change saved its
pending shares: a lying host's late ``challenge-refused`` must not make a rerun replace
the shares the enclave may already have committed (client.sdk.wallet ``_run``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.sdk.wallet import CHALLENGE_REFUSED, WalletClient, WalletError
from shardkeep.v1 import ceremony_pb2


class LyingHostClient(WalletClient):
    """Each run saves its pending shares (as a key change's local parties do before their
    certificate signatures), then the host answers ``challenge-refused``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runs = 0

    async def _run_once(self, *args: Any, on_pending: Any = None, **kwargs: Any) -> Any:
        self.runs += 1
        if on_pending is not None:
            await on_pending({"phone": f"pending share of run {self.runs}"})
        raise WalletError("the server share refused", None, "", CHALLENGE_REFUSED)


def run_refused(with_pending: bool) -> tuple[int, list[str]]:
    async def main() -> tuple[int, list[str]]:
        client = LyingHostClient("127.0.0.1:1", "127.0.0.1:1", Ed25519PrivateKey.generate())
        saved: list[str] = []

        async def on_pending(pendings: dict[str, Any]) -> None:
            saved.extend(pendings.values())

        request = ceremony_pb2.CeremonyRequest(
            kind=ceremony_pb2.CEREMONY_KIND_REFRESH, wallet_id="w", ceremony_id="c"
        )
        client._challenges.put("", b"T" * 40, 2**40)

        def build(_: Any) -> Any:  # the roster only names the members
            return SimpleNamespace(party_ids=("phone", "server")), {}

        try:
            with pytest.raises(WalletError) as refused:
                save = on_pending if with_pending else None
                await client._run(request, [], build, "server", None, on_pending=save)
            assert refused.value.reason == CHALLENGE_REFUSED
        finally:
            await client.aclose()
        return client.runs, saved

    return asyncio.run(main())


def test_a_challenge_refused_after_pending_shares_were_saved_is_not_retried() -> None:
    runs, saved = run_refused(with_pending=True)
    assert runs == 1
    assert saved == ["pending share of run 1"]  # kept for resume, not replaced by a rerun


def test_a_challenge_refused_before_anything_was_saved_is_retried_once() -> None:
    runs, _ = run_refused(with_pending=False)
    assert runs == 2
