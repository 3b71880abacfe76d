"""Sizing session frames, and several frames in one gRPC message (docs/transport.md).

A session stream's writer sends what it has queued at once: one frame alone,
several as one ``batch`` frame (the stream's own message type with its
``batch`` field set), each batch at most ``FRAME_BYTES``, in queue order, so
the order per channel holds. A reader takes a batch's frames in that order,
each as if it had come alone; a batch inside a batch, an empty batch or a
batch naming a channel is malformed (``BatchError``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

__all__ = ["FRAME_BYTES", "BatchError", "batched", "chunks", "drain", "unbatched", "until_end"]

FRAME_BYTES: Final = 256 * 1024
"""Payload bytes per frame, and frame bytes per batch; the transport cap allows
one maximal payload plus slack."""

_T = TypeVar("_T")


class _Frame(Protocol):
    """What the session streams' frame types share: a channel, a ``batch`` of frames
    of their own type (``batch.frames``), and the ``frame`` oneof."""

    channel: int

    @property
    def batch(self) -> Any: ...

    def ByteSize(self) -> int: ...

    def WhichOneof(self, oneof_group: str, /) -> str | None: ...


_F = TypeVar("_F", bound=_Frame)


class BatchError(ValueError):
    """A batch frame that breaks the rules; the message names the fault."""


def chunks(items: Sequence[_T], size: Callable[[_T], int]) -> list[list[_T]]:
    """Split ``items`` in order into frames of at most ``FRAME_BYTES`` (by
    ``size``), except that an item larger than that travels alone."""
    frames: list[list[_T]] = []
    current: list[_T] = []
    total = 0
    for item in items:
        n = size(item)
        if current and total + n > FRAME_BYTES:
            frames.append(current)
            current, total = [], 0
        current.append(item)
        total += n
    if current:
        frames.append(current)
    return frames


def drain(queue: asyncio.Queue[_T], first: _T) -> list[_T]:
    """``first`` and every item queued behind it, in order (without waiting)."""
    items = [first]
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def until_end(items: Sequence[object], frame: type[_F]) -> tuple[list[_F], object]:
    """The frames among ``items`` before the first that is not a ``frame`` (a
    writer's end of stream), and that item (None when there is none)."""
    frames: list[_F] = []
    for item in items:
        if not isinstance(item, frame):
            return frames, item
        frames.append(item)
    return frames, None


def batched(frames: Sequence[_F], batch: Callable[..., Any]) -> list[_F]:
    """The messages that carry ``frames`` in order: a frame alone, or a frame whose
    ``batch`` (made by ``batch(frames=...)``, the stream's batch type) holds several,
    at most ``FRAME_BYTES`` each but for a larger frame, which goes alone."""
    if len(frames) == 1:
        return [frames[0]]
    messages = []
    for group in chunks(frames, _size):
        frame_type: Callable[..., _F] = type(group[0])
        messages.append(group[0] if len(group) == 1 else frame_type(batch=batch(frames=group)))
    return messages


def _size(frame: _Frame) -> int:
    return frame.ByteSize()


def unbatched(message: _F) -> Sequence[_F]:
    """The frames ``message`` carries, in order: itself, or its batch's frames.

    Raises:
        BatchError: an empty batch, a batch inside a batch, or a batch naming a channel.
    """
    if message.WhichOneof("frame") != "batch":
        return (message,)
    inner: Sequence[_F] = message.batch.frames
    if message.channel != 0:
        raise BatchError(f"a batch names channel {message.channel}: only its frames name one")
    if not inner:
        raise BatchError("a batch carries no frames")
    for frame in inner:
        if frame.WhichOneof("frame") == "batch":
            raise BatchError(f"a batch inside a batch (channel {frame.channel})")
    return inner
