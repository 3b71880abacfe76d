"""Sealing of server shares (enclave/seal.py, docs/architecture.md), without KMS."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import pytest

from enclave.kms import KmsInvalidCiphertextError
from enclave.seal import (
    NONCE_SIZE,
    SealBinding,
    SealedShare,
    SealError,
    ShareSealer,
    check_binding,
    seal,
    unseal,
    wipe,
)
from tss.errors import InputError

SHARE = b"\x01server-share\x00" + bytes(range(256)) * 4
BINDING = SealBinding(wallet_id="wallet-7f3a", share_index=2, scheme="ecdsa-secp256k1", epoch=5)
KEY = bytes(range(32))
NONCE = bytes(range(100, 112))

# One changed value per binding field.
CHANGED: dict[str, Any] = {
    "wallet_id": "wallet-7f3b",
    "share_index": 1,
    "scheme": "bip340",
    "epoch": 6,
}

# Offsets into the blob: version (1) || u32 len || binding || nonce || ct || tag.
BINDING_LEN = len(BINDING.encode())
NONCE_AT = 1 + 4 + BINDING_LEN
CIPHERTEXT_AT = NONCE_AT + NONCE_SIZE


def sealed() -> bytes:
    return seal(SHARE, data_key=KEY, binding=BINDING, nonce=NONCE)


def flip(blob: bytes, index: int) -> bytes:
    out = bytearray(blob)
    out[index] ^= 0x01
    return bytes(out)


def with_header(blob: bytes, binding: SealBinding) -> bytes:
    """What a host can do: rewrite the clear header to claim another binding."""
    encoded = binding.encode()
    return bytes([blob[0]]) + len(encoded).to_bytes(4, "big") + encoded + blob[NONCE_AT:]


def assert_no_secret(error: SealError) -> None:
    text = str(error) + repr(error)
    assert KEY.hex() not in text
    assert "server-share" not in text
    assert SHARE.hex()[:32] not in text


### Round trip and format


def test_round_trip() -> None:
    blob = sealed()
    assert unseal(blob, data_key=KEY, binding=BINDING) == SHARE
    assert len(blob) == 1 + 4 + BINDING_LEN + NONCE_SIZE + len(SHARE) + 16


def test_round_trip_with_bytearray_key_and_random_nonce() -> None:
    key = bytearray(os.urandom(32))
    first = seal(SHARE, data_key=key, binding=BINDING)
    second = seal(SHARE, data_key=key, binding=BINDING)
    assert first[NONCE_AT:CIPHERTEXT_AT] != second[NONCE_AT:CIPHERTEXT_AT]
    assert unseal(first, data_key=key, binding=BINDING) == SHARE
    assert unseal(second, data_key=key, binding=BINDING) == SHARE


def test_seal_is_deterministic_given_the_nonce() -> None:
    assert sealed() == sealed()


def test_empty_share_round_trips() -> None:
    blob = seal(b"", data_key=KEY, binding=BINDING, nonce=NONCE)
    assert unseal(blob, data_key=KEY, binding=BINDING) == b""


def test_ciphertext_does_not_contain_the_share() -> None:
    blob = sealed()
    for start in range(0, len(SHARE) - 16, 16):
        assert SHARE[start : start + 16] not in blob


def test_binding_encoding_is_length_prefixed() -> None:
    # Without length prefixes these two would collide.
    a = SealBinding(wallet_id="ab", share_index=0, scheme="bip340", epoch=0)
    b = SealBinding(wallet_id="a", share_index=0, scheme="bip340", epoch=0)
    assert a.encode() != b.encode()
    assert BINDING.encode() == (
        b"\x00\x00\x00\x0bwallet-7f3a"
        + b"\x00\x00\x00\x04\x00\x00\x00\x02"
        + b"\x00\x00\x00\x0fecdsa-secp256k1"
        + b"\x00\x00\x00\x08"
        + (5).to_bytes(8, "big")
    )


### Binding checks


@pytest.mark.parametrize("field_name", sorted(CHANGED), ids=sorted(CHANGED))
def test_each_binding_field_is_checked(field_name: str) -> None:
    other = dataclasses.replace(BINDING, **{field_name: CHANGED[field_name]})
    with pytest.raises(SealError) as info:
        unseal(sealed(), data_key=KEY, binding=other)
    assert info.value.reason == "binding-mismatch"
    assert field_name in str(info.value)
    assert_no_secret(info.value)
    with pytest.raises(SealError) as early:
        check_binding(sealed(), other)
    assert early.value.reason == "binding-mismatch"


@pytest.mark.parametrize("field_name", sorted(CHANGED), ids=sorted(CHANGED))
def test_rewritten_header_does_not_help(field_name: str) -> None:
    """The host edits the clear header to match: AES-GCM still refuses."""
    other = dataclasses.replace(BINDING, **{field_name: CHANGED[field_name]})
    forged = with_header(sealed(), other)
    check_binding(forged, other)  # the header now claims the other binding
    with pytest.raises(SealError) as info:
        unseal(forged, data_key=KEY, binding=other)
    assert info.value.reason == "authentication"
    assert_no_secret(info.value)


def test_replay_of_an_old_epoch_is_refused() -> None:
    old = seal(SHARE, data_key=KEY, binding=BINDING, nonce=NONCE)
    new_binding = dataclasses.replace(BINDING, epoch=BINDING.epoch + 1)
    seal(b"refreshed share", data_key=KEY, binding=new_binding, nonce=os.urandom(12))
    with pytest.raises(SealError) as info:
        unseal(old, data_key=KEY, binding=new_binding)
    assert info.value.reason == "binding-mismatch"
    assert "epoch" in str(info.value)
    with pytest.raises(SealError) as forged:
        unseal(with_header(old, new_binding), data_key=KEY, binding=new_binding)
    assert forged.value.reason == "authentication"


def test_swap_between_wallets_is_refused() -> None:
    other = dataclasses.replace(BINDING, wallet_id="another-wallet")
    other_blob = seal(b"other share", data_key=KEY, binding=other, nonce=NONCE)
    with pytest.raises(SealError) as info:
        unseal(other_blob, data_key=KEY, binding=BINDING)
    assert info.value.reason == "binding-mismatch"


### Tampering


TAMPER_AT = {
    "nonce-first": NONCE_AT,
    "nonce-last": CIPHERTEXT_AT - 1,
    "ciphertext-first": CIPHERTEXT_AT,
    "ciphertext-middle": CIPHERTEXT_AT + len(SHARE) // 2,
    "tag-first": -16,
    "tag-last": -1,
}


@pytest.mark.parametrize("where", sorted(TAMPER_AT), ids=sorted(TAMPER_AT))
def test_flipped_bits_are_detected(where: str) -> None:
    with pytest.raises(SealError) as info:
        unseal(flip(sealed(), TAMPER_AT[where]), data_key=KEY, binding=BINDING)
    assert info.value.reason == "authentication"
    assert_no_secret(info.value)


def test_flipped_binding_byte_is_detected() -> None:
    # The last byte of the epoch in the header: a different epoch.
    with pytest.raises(SealError) as info:
        unseal(flip(sealed(), NONCE_AT - 1), data_key=KEY, binding=BINDING)
    assert info.value.reason == "binding-mismatch"


def test_wrong_data_key_is_detected() -> None:
    with pytest.raises(SealError) as info:
        unseal(sealed(), data_key=bytes(32), binding=BINDING)
    assert info.value.reason == "authentication"


def test_unknown_version_is_refused() -> None:
    blob = sealed()
    with pytest.raises(SealError) as info:
        unseal(bytes([2]) + blob[1:], data_key=KEY, binding=BINDING)
    assert info.value.reason == "unsupported-version"


@pytest.mark.parametrize(
    "cut", [1, 3, 5, NONCE_AT, CIPHERTEXT_AT, CIPHERTEXT_AT + 15], ids=lambda n: f"first-{n}"
)
def test_truncated_blobs_are_malformed(cut: int) -> None:
    with pytest.raises(SealError) as info:
        unseal(sealed()[:cut], data_key=KEY, binding=BINDING)
    assert info.value.reason == "malformed"


def test_truncated_tag_fails_authentication() -> None:
    with pytest.raises(SealError) as info:
        unseal(sealed()[:-1], data_key=KEY, binding=BINDING)
    assert info.value.reason == "authentication"


def test_absurd_binding_length_is_malformed() -> None:
    blob = sealed()
    forged = blob[:1] + (2**32 - 1).to_bytes(4, "big") + blob[5:]
    with pytest.raises(SealError) as info:
        unseal(forged, data_key=KEY, binding=BINDING)
    assert info.value.reason == "malformed"


### Arguments


@pytest.mark.parametrize(
    "kwargs",
    [
        {"wallet_id": ""},
        {"wallet_id": "x" * 257},
        {"share_index": -1},
        {"share_index": 2**32},
        {"scheme": "rsa"},
        {"epoch": -1},
        {"epoch": 2**64},
    ],
    ids=[
        "empty-wallet",
        "long-wallet",
        "negative-index",
        "big-index",
        "scheme",
        "neg-epoch",
        "big-epoch",
    ],
)
def test_binding_validation(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "wallet_id": "w",
        "share_index": 0,
        "scheme": "bip340",
        "epoch": 0,
    } | kwargs
    with pytest.raises(InputError):
        SealBinding(**fields)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        seal(SHARE, data_key=bytes(16), binding=BINDING)
    with pytest.raises(InputError):
        seal(SHARE, data_key=KEY, binding=BINDING, nonce=bytes(8))
    with pytest.raises(InputError):
        unseal(sealed(), data_key=bytes(31), binding=BINDING)


def test_wipe_zeroes_in_place() -> None:
    buffer = bytearray(b"secret data key!")
    view = buffer
    wipe(buffer)
    assert view == bytes(16)


### ShareSealer with an in-memory KMS


class FakeKms:
    """Records the data keys it hands out, to check that the sealer wipes them."""

    def __init__(self) -> None:
        self.issued: list[bytearray] = []
        self._keys: dict[bytes, tuple[bytes, dict[str, str]]] = {}

    def generate_data_key(
        self, key_id: str, *, encryption_context: Mapping[str, str] | None = None
    ) -> tuple[bytearray, bytes]:
        key = os.urandom(32)
        blob = os.urandom(16)
        self._keys[blob] = (key, dict(encryption_context or {}))
        self.issued.append(bytearray(key))
        return self.issued[-1], blob

    def decrypt(
        self,
        ciphertext_blob: bytes,
        *,
        key_id: str | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> bytearray:
        key, context = self._keys[ciphertext_blob]
        if context != dict(encryption_context or {}):
            raise KmsInvalidCiphertextError("InvalidCiphertextException", "context mismatch")
        self.issued.append(bytearray(key))
        return self.issued[-1]


def test_share_sealer_round_trip_and_wipes_data_keys() -> None:
    kms = FakeKms()
    sealer = ShareSealer(kms, "key-id")
    stored = sealer.seal(SHARE, BINDING)
    assert isinstance(stored, SealedShare)
    assert sealer.unseal(stored, BINDING) == SHARE
    assert len(kms.issued) == 2
    assert all(key == bytes(32) for key in kms.issued)


def test_share_sealer_refuses_swapped_data_key() -> None:
    kms = FakeKms()
    sealer = ShareSealer(kms, "key-id")
    mine = sealer.seal(SHARE, BINDING)
    other_binding = dataclasses.replace(BINDING, wallet_id="other")
    other = sealer.seal(b"other share", other_binding)
    with pytest.raises(SealError) as info:
        sealer.unseal(SealedShare(other.encrypted_data_key, mine.ciphertext), BINDING)
    assert info.value.reason == "data-key"


def test_share_sealer_checks_binding_before_kms() -> None:
    kms = FakeKms()
    sealer = ShareSealer(kms, "key-id")
    stored = sealer.seal(SHARE, BINDING)
    issued = len(kms.issued)
    with pytest.raises(SealError) as info:
        sealer.unseal(stored, dataclasses.replace(BINDING, epoch=BINDING.epoch + 1))
    assert info.value.reason == "binding-mismatch"
    assert len(kms.issued) == issued  # KMS was not asked
