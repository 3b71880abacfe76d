"""The CLI's wallet description keeps the server's burned DKLs23 pairs across runs."""

from __future__ import annotations

import json

import pytest

from client.cli_state import WalletDescription
from client.party import PartyIdentity
from client.storage_errors import ShareFormatError


def description(burned: tuple[int, ...]) -> WalletDescription:
    parties = tuple(PartyIdentity.generate().party for _ in range(3))
    return WalletDescription(
        "wallet-1", "ecdsa-secp256k1", 2, 1, b"\x02" + bytes(32), 2, parties, (0, 1), burned
    )


def test_burned_pairs_round_trip() -> None:
    original = description((1,))
    again = WalletDescription.from_json(json.loads(json.dumps(original.to_json())))
    assert again.burned_pairs == (1,)
    assert again == original


def test_burned_pairs_must_name_device_parties() -> None:
    data = description(()).to_json()
    for bad in ([2], [3]):  # the server itself, or no party at all
        with pytest.raises(ShareFormatError):
            WalletDescription.from_json({**data, "burned_pairs": bad})


def test_older_descriptions_without_the_field_load() -> None:
    data = description(()).to_json()
    del data["burned_pairs"]
    assert WalletDescription.from_json(data).burned_pairs == ()
