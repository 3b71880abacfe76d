"""The BIP-340 signing ceremony aggregates first yet still names a cheating signer."""

from __future__ import annotations

import secrets
from collections import deque

import pytest

from tss import local
from tss.ceremony import Message
from tss.errors import ProtocolError, SessionStateError
from tss.signing import Bip340Signing, throwaway_host_keys


def test_a_bad_partial_signature_is_blamed_on_its_signer() -> None:
    shares = local.keygen("bip340", threshold=3, parties=3)
    digest = bytes(range(32))
    keys = throwaway_host_keys(3, secrets.token_bytes)
    ceremonies = [
        Bip340Signing(s, [0, 1, 2], digest, b"sid", secrets.token_bytes, host_keys=keys[s.party_id])
        for s in shares
    ]
    queue: deque[Message] = deque(m for c in ceremonies for m in c.start())
    blamed: dict[int, tuple[int, ...]] = {}
    while queue:
        m = queue.popleft()
        if m.round == 2 and m.sender == 2:  # signer 2's partial signature, corrupted
            m = Message(m.round, m.sender, m.recipient, (1).to_bytes(32, "big") + m.payload[32:])
        for target in [c for c in ceremonies if c.me != m.sender]:
            try:
                queue += target.receive(m)
            except ProtocolError as e:
                blamed[target.me] = e.culprits
    assert blamed == {0: (2,), 1: (2,)}
    with pytest.raises(SessionStateError):  # a failed ceremony is not resumed
        ceremonies[0].receive(Message(2, 1, None, bytes(32)))
