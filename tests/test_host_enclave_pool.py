"""Which enclave of several runs a ceremony (``host.enclave_pool``), with scripted links.

The end-to-end behaviour, with real processes, is in ``tests/test_scaleout.py``;
here each routing rule alone: a ceremony goes to the enclave that issued its
challenge, challenges go to the least busy enclave or by affinity, an
unreachable enclave is passed over, enclaves with different identities are
refused.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from typing import Any, cast

import grpc
import pytest

from host.enclave_link import EnclaveLink, LinkConfig
from host.enclave_pool import EnclavePool
from host.errors import HostError
from host.store import Store
from shardkeep.v1 import enclave_pb2

STORE = cast(Store, None)  # the scripted links never touch it


class ScriptedLink:
    """What the pool uses of an ``EnclaveLink``: one enclave process, up or down."""

    def __init__(self, static_key: bytes = b"k" * 32) -> None:
        self.config = LinkConfig()
        self.tag = secrets.token_bytes(8)
        self.up = True
        self.identity = static_key
        self._static_key: bytes | None = None
        self.host_pubkey = b"h" * 33
        self.challenges = 0

    def _check_up(self) -> None:
        if not self.up:
            raise HostError(grpc.StatusCode.UNAVAILABLE, "the enclave is unavailable")

    @property
    def provisioned(self) -> bool:
        return self._static_key is not None

    @property
    def static_key(self) -> bytes:
        if self._static_key is None:
            raise HostError(grpc.StatusCode.UNAVAILABLE, "the enclave is not provisioned")
        return self._static_key

    async def provision(self, store: Store, *, wait_s: float) -> None:
        self._check_up()
        self._static_key = self.identity

    async def challenge(self, *, request_id: str) -> enclave_pb2.GetChallengeResponse:
        self._check_up()
        self.challenges += 1
        return enclave_pb2.GetChallengeResponse(challenge=self.tag + secrets.token_bytes(32))

    async def ready(self, store: Store, *, wait_s: float | None = None) -> None:
        self._check_up()

    async def status(self, **_: Any) -> enclave_pb2.GetStatusResponse:
        self._check_up()
        return enclave_pb2.GetStatusResponse(static_key=self.identity, instance_tag=self.tag)

    def restart(self) -> None:
        self.tag = secrets.token_bytes(8)


def pool(*links: ScriptedLink) -> EnclavePool:
    return EnclavePool({f"enclave-{i}": cast(EnclaveLink, link) for i, link in enumerate(links)})


def run(body: Any) -> Any:
    return asyncio.run(body())


def test_a_ceremony_goes_to_the_enclave_that_issued_its_challenge() -> None:
    async def body() -> None:
        links = [ScriptedLink(), ScriptedLink(), ScriptedLink()]
        enclaves = pool(*links)
        await enclaves.provision(STORE)
        for _ in range(9):
            issued = await enclaves.challenge(affinity="", request_id="r")
            issuer = await enclaves.issuer_of(bytes(issued.challenge), STORE)
            assert cast(ScriptedLink, issuer.link).tag == issued.challenge[:8]

    run(body)


def test_challenges_go_to_the_enclave_with_the_fewest_ceremonies() -> None:
    async def body() -> None:
        busy, idle = ScriptedLink(), ScriptedLink()
        enclaves = pool(busy, idle)
        await enclaves.provision(STORE)
        with enclaves.members[0].ceremony():
            for _ in range(4):
                await enclaves.challenge(affinity="", request_id="r")
        assert (busy.challenges, idle.challenges) == (0, 4)
        # Idle alike: in turn.
        for _ in range(4):
            await enclaves.challenge(affinity="", request_id="r")
        assert (busy.challenges, idle.challenges) == (2, 6)

    run(body)


def test_an_affinity_key_stays_on_one_enclave_while_it_is_up() -> None:
    async def body() -> None:
        links = [ScriptedLink(), ScriptedLink()]
        enclaves = pool(*links)
        await enclaves.provision(STORE)
        homes: Counter[bytes] = Counter()
        for wallet in range(40):
            tags = {
                bytes(
                    (await enclaves.challenge(affinity=f"w{wallet}", request_id="r")).challenge[:8]
                )
                for _ in range(3)
            }
            assert len(tags) == 1  # every challenge of one key from one enclave
            homes.update(tags)
        assert len(homes) == 2  # the keys spread over both
        # Its enclave down, a key moves to the other one.
        home_tag = bytes((await enclaves.challenge(affinity="w0", request_id="r")).challenge[:8])
        (home,) = [link for link in links if link.tag == home_tag]
        home.up = False
        moved = await enclaves.challenge(affinity="w0", request_id="r")
        assert moved.challenge[:8] != home_tag

    run(body)


def test_an_unreachable_enclave_is_passed_over() -> None:
    async def body() -> None:
        down, up = ScriptedLink(), ScriptedLink()
        enclaves = pool(down, up)
        await enclaves.provision(STORE)
        down.up = False
        for _ in range(4):
            issued = await enclaves.challenge(affinity="", request_id="r")
            assert issued.challenge[:8] == up.tag
        assert not enclaves.members[0].up  # marked down: not asked again for a while
        up.up = False
        with pytest.raises(HostError) as refused:
            await enclaves.challenge(affinity="", request_id="r")
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE

    run(body)


def test_a_host_serves_with_one_enclave_down_at_start() -> None:
    async def body() -> None:
        down, up = ScriptedLink(), ScriptedLink()
        down.up = False
        enclaves = pool(down, up)
        await enclaves.provision(STORE)
        assert enclaves.static_key == up.identity
        issued = await enclaves.challenge(affinity="", request_id="r")
        assert issued.challenge[:8] == up.tag

    run(body)


def test_enclaves_with_different_identities_are_refused() -> None:
    async def body() -> None:
        enclaves = pool(ScriptedLink(b"a" * 32), ScriptedLink(b"b" * 32))
        with pytest.raises(HostError) as refused:
            await enclaves.provision(STORE)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "another identity" in refused.value.message

    run(body)


def test_a_challenge_of_a_restarted_enclave_is_routed_by_its_new_tag() -> None:
    async def body() -> None:
        first, second = ScriptedLink(), ScriptedLink()
        enclaves = pool(first, second)
        await enclaves.provision(STORE)
        # Another host fetched this challenge after the second enclave restarted:
        # this host has not seen the new tag, and asks the enclaves for theirs.
        second.restart()
        challenge = second.tag + secrets.token_bytes(32)
        issuer = await enclaves.issuer_of(challenge, STORE)
        assert issuer.link is cast(EnclaveLink, second)

    run(body)


def test_a_kept_challenge_of_an_unreachable_enclave_goes_to_one_that_is_up() -> None:
    """A coordinator kept a challenge (issued with an earlier result) whose enclave has
    gone since: the request goes to an enclave that is up, which refuses it as unknown
    (typed: the coordinator retries with a fresh challenge), not to the one that is down."""

    async def body() -> None:
        gone, up = ScriptedLink(), ScriptedLink()
        enclaves = pool(gone, up)
        await enclaves.provision(STORE)
        await enclaves.report_status()  # the host knows both tags
        kept = gone.tag + secrets.token_bytes(32)
        gone.up = False
        issuer = await enclaves.issuer_of(kept, STORE)
        assert issuer.link is cast(EnclaveLink, up)
        assert not enclaves.members[0].up  # marked down: its next challenge skips the wait
        assert (await enclaves.issuer_of(gone.tag + secrets.token_bytes(32), STORE)) is issuer

    run(body)
