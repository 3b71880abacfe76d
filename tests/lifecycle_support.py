"""Helpers for the key lifecycle tests (reshare, refresh, export, derivation).

Not tests themselves: a seeded randomness source, an in-memory runner that lets
a test play a malicious party by rewriting its messages in transit (the
service's channels authenticate senders, so a rewritten message is exactly
what a cheating sender could send), and the round-1 dealing codec.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

from tss.ceremony import Ceremony, Message, Random
from tss.curve import Point
from tss.dealer import split_key
from tss.keyshare import KeyShare

__all__ = ["seeded", "run", "split_dealing", "join_dealing", "bip340_keyring"]

R = TypeVar("R")
Tamper = Callable[[Message], bytes]
"""Given a message in transit, return the payload to deliver instead."""


def seeded(seed: int) -> Random:
    """Reproducible test randomness."""
    rng = random.Random(seed)
    return rng.randbytes


def run(ceremonies: Sequence[Ceremony[R]], tamper: Tamper | None = None) -> list[R]:
    """Run one ceremony per party to completion like ``run_in_memory``, with a tamper hook."""
    by_id = {c.me: c for c in ceremonies}
    queue: deque[Message] = deque()
    for c in ceremonies:
        queue += c.start()
    while queue:
        m = queue.popleft()
        targets = (
            [p for p in by_id[m.sender].parties if p != m.sender]
            if m.recipient is None
            else [m.recipient]
        )
        for target in targets:
            delivered = Message(m.round, m.sender, target, m.payload)
            if tamper is not None:
                delivered = Message(m.round, m.sender, target, tamper(delivered))
            queue += by_id[target].receive(delivered)
            if by_id[target].awaiting_save:  # saved at once, as in ``run_in_memory``
                queue += by_id[target].confirm_saved()
    return [c.result for c in ceremonies]


def split_dealing(payload: bytes, threshold: int) -> tuple[list[Point], bytes, int | None]:
    """A round-1 reshare payload as (commitment points, chain code, sub-share or None)."""
    points = [Point.from_bytes_ext(payload[33 * k : 33 * (k + 1)]) for k in range(threshold)]
    chain_code, rest = payload[33 * threshold : 33 * threshold + 32], payload[33 * threshold + 32 :]
    return points, chain_code, int.from_bytes(rest, "big") if rest else None


def join_dealing(points: Sequence[Point], chain_code: bytes, subshare: int | None) -> bytes:
    """Inverse of ``split_dealing``."""
    tail = b"" if subshare is None else subshare.to_bytes(32, "big")
    return b"".join(p.to_bytes_ext() for p in points) + chain_code + tail


def bip340_keyring(
    private_key: int, threshold: int, parties: int, seed: int = 0, chain_code: bytes | None = None
) -> list[KeyShare]:
    """A bip340 keyring of a known key, dealt without a DKG (fast and reproducible)."""
    material = split_key(
        private_key.to_bytes(32, "big"), threshold, parties, seeded(seed), chain_code
    )
    return [m.key_share("bip340", None) for m in material]
