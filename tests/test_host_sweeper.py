"""The host process aborts pending epochs past their deadline by itself, for every wallet:
a keygen that nobody retries gives its wallet id back without any call touching it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from host.enclave_link import LinkConfig
from host.main import HostConfig, serve
from host.store import WalletNotFoundError
from host.stores import open_store
from relay.memory import MemoryBackend
from relay.service import create_server as create_relay_server
from tests.fake_enclave import FakeEnclave, start_fake_enclave
from tests.relay_harness import harness_admitter, run
from tests.test_store import make_share, make_wallet


def test_the_host_sweeps_expired_pending_epochs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'host.db'}"
    with open_store(url) as store:  # a keygen's epoch 0 left pending by a crashed host
        now_ms = int(time.time() * 1000)
        store.create_wallet(make_wallet("stuck"), [make_share("stuck")], deadline_at_ms=now_ms)
        store.create_wallet(
            make_wallet("fresh"), [make_share("fresh")], deadline_at_ms=now_ms + 600_000
        )

    async def body() -> None:
        backend = MemoryBackend()
        relay_server, relay_port = await create_relay_server(
            "127.0.0.1:0", backend, admitter=harness_admitter()
        )
        await relay_server.start()
        enclave_server, enclave_target = await start_fake_enclave(FakeEnclave())
        config = HostConfig(
            listen="127.0.0.1:0",
            enclave=enclave_target,
            relay=f"127.0.0.1:{relay_port}",
            store=url,
            link=LinkConfig(pending_deadline_s=4.0),  # swept every second
        )
        stop = asyncio.Event()
        task = asyncio.create_task(serve(config, stop))
        try:
            with open_store(url) as store:
                async with asyncio.timeout(10):
                    while True:
                        try:
                            store.get_wallet("stuck")
                        except WalletNotFoundError:
                            break
                        await asyncio.sleep(0.1)
                assert store.get_wallet("fresh").pending_epoch == 0
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await enclave_server.stop(None)
            await relay_server.stop(None)
            await backend.aclose()

    run(body)
