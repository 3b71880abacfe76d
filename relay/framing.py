"""Splitting a list of envelopes or deliveries into Session frames."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, TypeVar

__all__ = ["FRAME_BYTES", "chunks"]

FRAME_BYTES: Final = 256 * 1024
"""Payload bytes per frame; the transport cap allows one maximal payload plus slack."""

_T = TypeVar("_T")


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
