"""Several session frames in one gRPC message (``shardkeep.framing``): the writer's
batches keep the queue's order and the size bound; the reader refuses a batch that
breaks the rules, naming the fault."""

from __future__ import annotations

import asyncio

import pytest

from shardkeep.framing import FRAME_BYTES, BatchError, batched, drain, unbatched, until_end
from shardkeep.v1 import host_pb2

Frame = host_pb2.HostSessionInput


def _batch(frames: list[Frame]) -> Frame:
    return Frame(batch=host_pb2.HostSessionInputs(frames=frames))


def _ask(channel: int, affinity: str = "") -> Frame:
    return Frame(channel=channel, get_challenge=host_pb2.HostChallengeRequest(affinity=affinity))


def test_one_frame_goes_alone() -> None:
    frame = _ask(1)
    assert batched([frame], host_pb2.HostSessionInputs) == [frame]


def test_a_batch_keeps_the_order_per_channel() -> None:
    frames = [_ask(1), Frame(channel=2, cancel=True), Frame(channel=1, cancel=True), _ask(3)]
    (message,) = batched(frames, host_pb2.HostSessionInputs)
    assert message.WhichOneof("frame") == "batch"
    assert list(unbatched(message)) == frames


def test_batches_stay_within_the_frame_bound_and_a_large_frame_goes_alone() -> None:
    big = "x" * (FRAME_BYTES // 3)
    frames = [_ask(n, big) for n in range(1, 8)] + [_ask(8, "y" * FRAME_BYTES), _ask(9)]
    messages = batched(frames, host_pb2.HostSessionInputs)
    assert len(messages) > 1
    assert [f for m in messages for f in unbatched(m)] == frames
    for message in messages:
        if message.WhichOneof("frame") == "batch":
            assert sum(f.ByteSize() for f in message.batch.frames) <= FRAME_BYTES
    assert _ask(8, "y" * FRAME_BYTES) in messages  # alone, not in a batch


@pytest.mark.parametrize(
    ("message", "fault"),
    [
        (_batch([]), "a batch carries no frames"),
        (_batch([_ask(1), _batch([_ask(2)])]), "a batch inside a batch"),
        (Frame(channel=5, batch=host_pb2.HostSessionInputs(frames=[_ask(5)])), "names channel 5"),
    ],
)
def test_a_batch_that_breaks_the_rules_is_refused_naming_the_fault(
    message: Frame, fault: str
) -> None:
    with pytest.raises(BatchError, match=fault):
        unbatched(message)


def test_a_frame_that_is_no_batch_is_itself() -> None:
    frame = _ask(4)
    assert list(unbatched(frame)) == [frame]


def test_drain_takes_what_is_queued_and_until_end_stops_at_the_end() -> None:
    async def body() -> None:
        queue: asyncio.Queue[Frame | None] = asyncio.Queue()
        for item in (_ask(2), None, _ask(3)):
            queue.put_nowait(item)
        items = drain(queue, _ask(1))
        assert queue.empty() and len(items) == 4
        frames, end = until_end(items, Frame)
        assert frames == [_ask(1), _ask(2)] and end is None and len(frames) < len(items)
        assert until_end([_ask(1)], Frame) == ([_ask(1)], None)

    asyncio.run(body())
