"""What an untrusted host can make the enclave hold through one Enclave.Session
stream, against the real enclave service (docs/threat-model.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.nsm import SimulatedNitroPki
from enclave.service import MAX_SESSION_OUTPUTS
from shardkeep.framing import unbatched
from shardkeep.v1 import enclave_pb2, enclave_pb2_grpc
from tests.enclave_harness import Stack, devkms, enclave_deps, run, with_enclave


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


def test_a_host_that_never_reads_its_session_answers_cannot_grow_the_enclaves_memory(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host asks for challenge after challenge on one stream and reads no
    answer. Each frame queues an answer in the enclave, so the enclave must
    stop reading the stream once its answers back up, instead of queueing
    answers without bound; once the host reads again, the stream goes on."""
    coordinator = Ed25519PrivateKey.generate()
    deps = enclave_deps(pki, kms_endpoint, coordinator)
    frames = 40_000
    handled = 0  # get_challenge frames the enclave has handled
    issue = deps.authorizer.challenges.issue

    def counted_issue(now: int) -> tuple[bytes, int]:
        nonlocal handled
        handled += 1
        return issue(now)

    monkeypatch.setattr(deps.authorizer.challenges, "issue", counted_issue)

    async def settled() -> int:
        """``handled`` once it has stopped growing."""
        last = -1
        while handled != last:
            last = handled
            await asyncio.sleep(1)
        return last

    async def body(_: Stack) -> None:
        # A host whose transport takes little of what it does not read.
        options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
        address = f"unix:{tmp_path / 'enclave.sock'}"
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            call = enclave_pb2_grpc.EnclaveStub(channel).Session()
            for number in range(1, frames + 1):
                frame = enclave_pb2.SessionInput(
                    channel=number, get_challenge=enclave_pb2.GetChallengeRequest()
                )
                await call.write(frame)
            taken = await settled()
            # What transport buffers hold aside (a few thousand frames), the
            # enclave took no more frames than it may queue answers for.
            assert taken < MAX_SESSION_OUTPUTS + 10_000, taken
            # Once the host reads again, the stream goes on to the last frame.
            last = 0  # the channel of the last answer (answers may come in batches)
            async with asyncio.timeout(120):
                while last != frames:
                    message = await call.read()
                    last = unbatched(message)[-1].channel
            assert handled == frames
            call.cancel()

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body, deps=deps))
