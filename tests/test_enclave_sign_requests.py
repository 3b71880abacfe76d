"""What the enclave signs for each scheme: a 32-byte digest, or for ed25519 the message itself.

RFC 8032 hashes the message together with the nonce commitment, so an ed25519
request that carried only a digest would make the server share sign the
digest's bytes as if they were the message: the enclave refuses it, and every
other mix-up, before any ceremony starts.
"""

from __future__ import annotations

import pytest

from enclave.ceremonies import _what_to_sign
from enclave.errors import BadRequest
from shardkeep.requests import MAX_ED25519_MESSAGE
from shardkeep.v1 import ceremony_pb2

DIGEST = bytes(range(32))


def request(**fields: object) -> ceremony_pb2.CeremonyRequest:
    return ceremony_pb2.CeremonyRequest(kind=ceremony_pb2.CEREMONY_KIND_SIGN, **fields)  # type: ignore[arg-type]


def test_ed25519_signs_the_message_itself() -> None:
    assert _what_to_sign(request(message=b"a Solana message"), "ed25519") == b"a Solana message"
    longest = bytes(MAX_ED25519_MESSAGE)
    assert _what_to_sign(request(message=longest), "ed25519") == longest


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"digest": DIGEST}, id="a-digest-instead"),
        pytest.param({"digest": DIGEST, "message": b"m"}, id="a-digest-as-well"),
        pytest.param({}, id="no-message"),
        pytest.param({"message": bytes(MAX_ED25519_MESSAGE + 1)}, id="too-long"),
        pytest.param({"message": b"m", "derivation_path": [1]}, id="a-derivation-path"),
        pytest.param({"message": b"m", "taproot": True}, id="a-taproot-tweak"),
    ],
)
def test_ed25519_requests_that_are_not_one_message_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        _what_to_sign(request(**fields), "ed25519")


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_secp256k1_schemes_sign_a_digest_and_refuse_a_message(scheme: str) -> None:
    assert _what_to_sign(request(digest=DIGEST), scheme) == DIGEST  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        _what_to_sign(request(digest=DIGEST, message=b"m"), scheme)  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        _what_to_sign(request(digest=DIGEST[:31]), scheme)  # type: ignore[arg-type]
