"""``Host.Session`` against the real stack (devkms, relay, enclave, host as processes).

The SDK on the session transport (``RawDigestWalletClient(host_transport="session")``)
gets the results and the errors the unary calls give; and what a coordinator
(or anyone holding its channel) can do to a session stream stays on its own
channel:

- a client opening channels past the host's bound gets RESOURCE_EXHAUSTED on
  that channel, and the stream goes on serving;
- a ceremony cancelled mid-way leaves the wallet at its epoch, and the same
  stream serves the next ceremony;
- a frame that does not parse ends only its channel, with INVALID_ARGUMENT
  naming it;
- a host restart fails the ceremonies on the stream as UNAVAILABLE (a
  ``WalletError``), and the next call opens a new stream.

A device "stalls" through :class:`StallingRelay`: once it has sent a chosen
number of messages, its sends never leave, so the host's side of the
ceremony stays open.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from coincurve import PublicKey, PublicKeyXOnly

from client.cli.devstack import DevStack
from client.sdk.host_session import HostSession
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet, WalletClient, WalletError
from relay.client import PartySession, RelayClient
from shardkeep.framing import unbatched
from shardkeep.v1 import host_pb2, host_pb2_grpc
from tests.stack_harness import TEST_TIMEOUT_S, RawDigestWalletClient, background_stack
from tss.signing import RecoverableSignature

pytestmark = pytest.mark.slow
DIGEST = bytes.fromhex("5e55" * 16)
MAX_CHANNELS = 3  # the host's --max-session-channels in this module's stack
T = TypeVar("T")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(
        tmp_path_factory.mktemp("host-session") / "run",
        host_args=["--max-session-channels", str(MAX_CHANNELS)],
    ) as running:
        yield running


class StallingRelay(RelayClient):
    """A relay client whose parties' sends never leave after ``sends_before_stall`` sends
    (None: they all leave)."""

    def __init__(self, stack: DevStack) -> None:
        super().__init__(
            stack.transport.relay_channel(stack.relay_address), coordinator=stack.coordinator_key
        )
        self.sends_before_stall: int | None = None
        self.stalled = 0  # sends stuck

    def join(
        self, room_id: str, party: str, join_token: str, *, resume_after: int = 0
    ) -> PartySession:
        session = super().join(room_id, party, join_token, resume_after=resume_after)
        send = session.send

        async def stalling_send(payload: bytes, **kwargs: Any) -> Any:
            if self.sends_before_stall is not None:
                if self.sends_before_stall == 0:
                    self.stalled += 1
                    await asyncio.Event().wait()  # until the ceremony is cancelled
                self.sends_before_stall -= 1
            return await send(payload, **kwargs)

        session.send = stalling_send  # type: ignore[method-assign]
        return session


def client_for(stack: DevStack, relay: RelayClient, transport: str = "session") -> WalletClient:
    return RawDigestWalletClient(
        stack.host_address,
        stack.relay_address,
        stack.coordinator_key,
        root_certificate=stack.root_certificate,
        transport=stack.transport,
        relay=relay,
        timeout=60,
        host_transport=transport,  # type: ignore[arg-type]
    )


def run(stack: DevStack, body: Callable[[WalletClient, StallingRelay], Awaitable[T]]) -> T:
    """``body`` with a client on the session transport whose device sends can stall."""

    async def main() -> T:
        relay = StallingRelay(stack)
        async with asyncio.timeout(TEST_TIMEOUT_S), client_for(stack, relay) as client:
            return await body(client, relay)

    return asyncio.run(main())


async def until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def verified(wallet: Wallet, signature: bytes | RecoverableSignature) -> bool:
    if isinstance(signature, RecoverableSignature):
        recovered = PublicKey.from_signature_and_message(
            signature.to_bytes65(), DIGEST, hasher=None
        )
        return recovered.format() == wallet.public_key
    return PublicKeyXOnly(wallet.public_key[1:]).verify(signature, DIGEST)


def open_channels(client: WalletClient) -> int:
    calls = client._host_calls
    assert isinstance(calls, HostSession)
    return len(calls._waiting)


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_the_session_transport_gives_the_unary_results_and_errors(
    stack: DevStack, scheme: str
) -> None:
    """A wallet made and used on the session transport signs, and a refused signature
    fails with the same WalletError (code and message) as on the unary calls."""

    async def body(client: WalletClient, relay: StallingRelay) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet(scheme, [device], threshold=2)
        signature = await client.sign(wallet, DIGEST, {0: device})
        assert verified(wallet, signature)

        stale = dataclasses.replace(wallet, epoch=wallet.epoch + 1)
        with pytest.raises(WalletError) as by_session:
            await client.sign(stale, DIGEST, {0: device})
        async with client_for(stack, StallingRelay(stack), "call") as unary:
            with pytest.raises(WalletError) as by_call:
                await unary.sign(stale, DIGEST, {0: device})
        assert by_session.value.code == by_call.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert str(by_session.value) == str(by_call.value)
        assert type(by_session.value) is type(by_call.value)

    run(stack, body)


def test_a_client_past_the_channel_bound_is_refused_and_the_stream_lives(
    stack: DevStack,
) -> None:
    """Attack: a coordinator opens more channels than the host allows on one stream. The
    one past the bound ends with RESOURCE_EXHAUSTED; the others run on, and once they
    end the same stream serves a signature."""

    async def body(client: WalletClient, relay: StallingRelay) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2)
        relay.sends_before_stall = 0
        stuck = [
            asyncio.create_task(client.sign(wallet, DIGEST, {0: device}))
            for _ in range(MAX_CHANNELS)
        ]
        # Every stuck signature's ceremony frame is on the stream before the next frame.
        await until(lambda: relay.stalled == MAX_CHANNELS and open_channels(client) == MAX_CHANNELS)
        with pytest.raises(WalletError) as refused:
            await client.challenge()
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"at most {MAX_CHANNELS} channels" in str(refused.value)
        assert not any(task.done() for task in stuck)  # the others go on

        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        relay.sends_before_stall = None
        signature = await client.sign(wallet, DIGEST, {0: device})
        assert verified(wallet, signature)

    run(stack, body)


def test_a_cancelled_channel_leaves_the_wallet_intact_and_the_stream_serving(
    stack: DevStack,
) -> None:
    """Attack: a refresh is cancelled mid-ceremony (its device stops after round 1). The
    host gives its ceremony up; the wallet stays at its epoch, and the same stream runs
    the next signature."""

    async def body(client: WalletClient, relay: StallingRelay) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2)
        relay.sends_before_stall = 1  # its first round goes out
        refresh = asyncio.create_task(client.refresh(wallet, {0: device}))
        await until(lambda: relay.stalled == 1)
        refresh.cancel()
        with pytest.raises(asyncio.CancelledError):
            await refresh
        await until(lambda: open_channels(client) == 0)
        relay.sends_before_stall = None

        signature = await client.sign(wallet, DIGEST, {0: device})
        assert verified(wallet, signature)
        host = host_pb2_grpc.HostStub(client._host_channel)  # type: ignore[no-untyped-call]
        stored = await host.GetWallet(host_pb2.GetWalletRequest(wallet_id=wallet.wallet_id))
        assert (stored.epoch, bytes(stored.public_key)) == (wallet.epoch, wallet.public_key)

    run(stack, body)


def test_a_malformed_frame_ends_only_its_channel(stack: DevStack) -> None:
    """Attack: a frame whose call does not parse. Its channel ends with INVALID_ARGUMENT
    naming the channel; the stream answers the next frame."""

    async def body() -> None:
        async with stack.transport.host_channel(stack.host_address) as channel:
            raw = channel.stream_stream(
                "/shardkeep.v1.Host/Session",
                request_serializer=lambda frame: frame,
                response_deserializer=host_pb2.HostSessionOutput.FromString,
            )
            call: Any = raw(timeout=TEST_TIMEOUT_S)
            # channel 7, then a `call` whose kind is a truncated varint
            await call.write(b"\x08\x07" + b"\x12\x02\x08\xff")
            end = await call.read()
            assert end.channel == 7 and end.WhichOneof("frame") == "end"
            assert end.end.code == "INVALID_ARGUMENT"
            assert "channel 7 is not a valid HostSessionInput" in end.end.message
            ask = host_pb2.HostSessionInput(
                channel=8, get_challenge=host_pb2.HostChallengeRequest()
            )
            await call.write(ask.SerializeToString())
            answer = await call.read()
            assert answer.channel == 8 and answer.WhichOneof("frame") == "challenge"
            assert len(answer.challenge.challenge) == 40
            await call.done_writing()

    asyncio.run(asyncio.wait_for(body(), TEST_TIMEOUT_S))


def _raw_session(channel: grpc.aio.Channel) -> Any:
    """A Host.Session call whose frames are written as bytes."""
    raw = channel.stream_stream(
        "/shardkeep.v1.Host/Session",
        request_serializer=lambda frame: frame,
        response_deserializer=host_pb2.HostSessionOutput.FromString,
    )
    return raw(timeout=TEST_TIMEOUT_S)


def _field(number: int, body: bytes) -> bytes:
    """A length-delimited protobuf field (bodies here are shorter than 128 bytes)."""
    assert len(body) < 128
    return bytes([number << 3 | 2, len(body)]) + body


def test_a_batch_with_a_malformed_frame_ends_only_that_frames_channel(stack: DevStack) -> None:
    """Attack: a batch whose second frame does not parse. That frame's channel ends
    with INVALID_ARGUMENT naming it; the frames before and after it in the batch run,
    in order (the challenge asked on channel 10 and cancelled right after is never
    answered)."""

    async def body() -> None:
        async with stack.transport.host_channel(stack.host_address) as channel:
            call = _raw_session(channel)
            ask = host_pb2.HostChallengeRequest()
            frames = [
                host_pb2.HostSessionInput(channel=8, get_challenge=ask).SerializeToString(),
                b"\x08\x07" + b"\x12\x02\x08\xff",  # channel 7: a truncated varint
                host_pb2.HostSessionInput(channel=10, get_challenge=ask).SerializeToString(),
                host_pb2.HostSessionInput(channel=10, cancel=True).SerializeToString(),
                host_pb2.HostSessionInput(channel=9, get_challenge=ask).SerializeToString(),
            ]
            await call.write(_field(5, b"".join(_field(1, f) for f in frames)))
            later = host_pb2.HostSessionInput(channel=11, get_challenge=ask)
            await call.write(later.SerializeToString())
            answers: dict[int, host_pb2.HostSessionOutput] = {}
            while 11 not in answers:
                for answer in unbatched(await call.read()):
                    answers[answer.channel] = answer
            assert answers[7].end.code == "INVALID_ARGUMENT"
            assert "channel 7 is not a valid HostSessionInput" in answers[7].end.message
            assert {8, 9, 11} <= {n for n, a in answers.items() if a.HasField("challenge")}
            assert 10 not in answers
            await call.done_writing()

    asyncio.run(asyncio.wait_for(body(), TEST_TIMEOUT_S))


def test_a_batch_inside_a_batch_ends_the_stream_naming_the_fault(stack: DevStack) -> None:
    """Attack: a batch nested in a batch breaks the framing itself: the stream ends
    with INVALID_ARGUMENT naming the fault."""

    async def body() -> None:
        async with stack.transport.host_channel(stack.host_address) as channel:
            call = _raw_session(channel)
            inner = host_pb2.HostSessionInput(batch=host_pb2.HostSessionInputs())
            outer = host_pb2.HostSessionInput(batch=host_pb2.HostSessionInputs(frames=[inner]))
            await call.write(outer.SerializeToString())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "a batch inside a batch" in (refused.value.details() or "")

    asyncio.run(asyncio.wait_for(body(), TEST_TIMEOUT_S))


def test_a_host_restart_fails_the_streams_ceremonies_typed_and_the_next_call_reopens(
    stack: DevStack,
) -> None:
    """A host killed mid-ceremony ends the stream: the signature on it fails with
    UNAVAILABLE as a WalletError (not a hang, not a raw grpc error), and the next
    signature opens a new stream to the restarted host."""

    async def body(client: WalletClient, relay: StallingRelay) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2)
        relay.sends_before_stall = 0
        stuck = asyncio.create_task(client.sign(wallet, DIGEST, {0: device}))
        await until(lambda: relay.stalled == 1 and open_channels(client) == 1)
        await asyncio.to_thread(stack.kill, "host")
        with pytest.raises(WalletError) as failed:
            await stuck
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE
        await stack.revive("host")
        relay.sends_before_stall = None
        await client.attest()  # retried by the channel until the restarted host answers
        signature = await client.sign(wallet, DIGEST, {0: device})
        assert verified(wallet, signature)

    run(stack, body)
