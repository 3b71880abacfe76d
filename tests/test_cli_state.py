"""The CLI's wallet description: public data only, no security state of the server's."""

from __future__ import annotations

import json

from client.cli.state import WalletDescription
from client.sdk.party import PartyIdentity


def description() -> WalletDescription:
    parties = tuple(PartyIdentity.generate().party for _ in range(3))
    return WalletDescription(
        "wallet-1", "ecdsa-secp256k1", 2, 1, b"\x02" + bytes(32), 2, parties, (0, 1)
    )


def test_description_round_trip() -> None:
    original = description()
    data = original.to_json()
    assert "burned_pairs" not in data  # the enclave burns DKLs23 pairs itself
    assert WalletDescription.from_json(json.loads(json.dumps(data))) == original


def test_older_descriptions_with_burned_pairs_still_load() -> None:
    # Earlier releases kept the server's burned pairs here; the field is now ignored.
    original = description()
    assert WalletDescription.from_json({**original.to_json(), "burned_pairs": [1]}) == original
