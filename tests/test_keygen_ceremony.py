"""The keygen ceremony blames a bad CertEq signature's signer, though every party coordinates."""

from __future__ import annotations

import secrets
from collections import deque

import pytest

from tss.ceremony import Message
from tss.dkg.chilldkg import hostpubkey_gen
from tss.errors import FaultyParticipantError
from tss.keygen import Keygen


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_bad_certeq_signature_blames_its_signer(scheme: str) -> None:
    hostseckeys = [secrets.token_bytes(32) for _ in range(3)]
    hostpubkeys = [hostpubkey_gen(sk) for sk in hostseckeys]
    parties = [
        Keygen(scheme, sk, hostpubkeys, 2, secrets.token_bytes, session_id=b"kg")  # type: ignore[arg-type]
        for sk in hostseckeys
    ]
    queue: deque[Message] = deque(m for p in parties for m in p.start())
    with pytest.raises(FaultyParticipantError) as info:
        while queue:
            m = queue.popleft()
            if m.round == 2 and m.sender == 1:  # party 1's certificate signature, corrupted
                m = Message(m.round, m.sender, m.recipient, bytes(64) + m.payload[64:])
            for target in [p for p in parties if p.me != m.sender]:
                queue += target.receive(m)
                if target.awaiting_save:  # saved at once (test memory)
                    queue += target.confirm_saved()
    assert info.value.culprits == (1,)
