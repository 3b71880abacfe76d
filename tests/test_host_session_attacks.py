"""What a coordinator can make the host hold through one Host.Session stream,
against the real host service (with the fake enclave; docs/threat-model.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import structlog

from host.host_session import MAX_SESSION_OUTPUTS
from host.metrics import HostMetrics
from host.service import create_server
from host.stores import open_store
from relay.client import RelayClient
from relay.memory import MemoryBackend
from relay.service import create_server as create_relay_server
from shardkeep.framing import unbatched
from shardkeep.v1 import host_pb2, host_pb2_grpc
from tests.fake_enclave import FakeEnclave, start_fake_enclave
from tests.relay_harness import harness_admitter, run


def test_a_coordinator_that_never_reads_its_session_answers_cannot_grow_the_hosts_memory(
    tmp_path: Path,
) -> None:
    """The coordinator sends frame after frame that the host refuses at once
    (each ends its channel with an answer) and reads no answer: the host must
    stop reading the stream once its answers back up, instead of queueing
    them without bound; once the coordinator reads again, the stream goes on."""
    frames = 40_000

    async def body() -> None:
        backend = MemoryBackend()
        relay_server, relay_port = await create_relay_server(
            "127.0.0.1:0", backend, admitter=harness_admitter()
        )
        await relay_server.start()
        enclave_server, enclave_target = await start_fake_enclave(FakeEnclave())
        enclave_channel = grpc.aio.insecure_channel(enclave_target)
        relay = RelayClient.insecure(f"127.0.0.1:{relay_port}")
        store = open_store(f"sqlite:///{tmp_path / 'host.db'}")
        server, port = await create_server(
            "127.0.0.1:0",
            store=store,
            enclave_channel=enclave_channel,
            relay=relay,
            metrics=HostMetrics(),
        )
        await server.start()
        # A coordinator whose transport takes little of what it does not read.
        options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        try:
            call = host_pb2_grpc.HostStub(channel).Session()  # type: ignore[no-untyped-call]
            with structlog.testing.capture_logs() as logs:
                for number in range(1, frames + 1):
                    await call.write(host_pb2.HostSessionInput(channel=number))
                handled, last = len(logs), -1
                while handled != last:  # until the host stops taking frames
                    last = handled
                    await asyncio.sleep(1)
                    handled = len(logs)
            refused = [e for e in logs if e["event"] == "session channel refused"]
            assert len(refused) == handled > 0
            # What transport buffers hold aside (a few thousand frames), the
            # host took no more frames than it may queue answers for.
            assert handled < MAX_SESSION_OUTPUTS + 10_000, handled
            # Once the coordinator reads again, every frame is answered.
            answer = host_pb2.HostSessionOutput()
            async with asyncio.timeout(120):
                while answer.channel != frames:  # answers may come in batches
                    answer = unbatched(await call.read())[-1]
            assert answer.end.code == "INVALID_ARGUMENT"
            call.cancel()
        finally:
            await channel.close(None)
            await server.stop(None)
            await relay.aclose()
            await enclave_channel.close(None)
            await enclave_server.stop(None)
            await relay_server.stop(None)
            await backend.aclose()
            store.close()

    run(body)
