"""The BIP-340 signing ceremony aggregates first yet still names a cheating signer."""

from __future__ import annotations

import secrets
from collections import deque

import pytest

from tss import local
from tss.ceremony import Message
from tss.errors import ProtocolError, SessionStateError
from tss.signing import Bip340Signing


def run(ceremonies: list[Bip340Signing], corrupt_round: int, culprit: int) -> None:
    queue: deque[Message] = deque(m for c in ceremonies for m in c.start())
    while queue:
        m = queue.popleft()
        if m.round == corrupt_round and m.sender == culprit:
            m = Message(m.round, m.sender, m.recipient, (1).to_bytes(32, "big"))
        for target in [c for c in ceremonies if c.me != m.sender]:
            queue += target.receive(m)


def test_a_bad_partial_signature_is_blamed_on_its_signer() -> None:
    shares = local.keygen("bip340", threshold=3, parties=3)
    digest = bytes(range(32))
    ceremonies = [Bip340Signing(s, [0, 1, 2], digest, b"sid", secrets.token_bytes) for s in shares]
    with pytest.raises(ProtocolError) as info:
        run(ceremonies, corrupt_round=2, culprit=2)
    assert info.value.culprits == (2,)
    with pytest.raises(SessionStateError):  # a failed ceremony is not resumed
        ceremonies[0].receive(Message(2, 1, None, bytes(32)))
