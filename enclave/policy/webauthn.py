"""WebAuthn assertions verified in the enclave (W3C Web Authentication Level 3, §7.2).

Only what an approval needs: an ES256 assertion by a registered passkey over
a challenge the enclave computed. Steps of §7.2 "Verifying an Authentication
Assertion", by number:

- 10-11: ``clientDataJSON`` is UTF-8 JSON (at most 8 KiB) of an object;
- 12: its ``type`` is ``"webauthn.get"``;
- 13: its ``challenge`` is base64url of the expected challenge;
- 14: its ``origin`` is the registered origin; ``crossOrigin``, if
  present, is false (assertions from a cross-origin iframe are refused);
- 15: the authenticator data's ``rpIdHash`` is SHA-256 of the registered RP id;
- 16: the User Present flag is set (User Verified is not required);
- 19: extensions only when the ED flag says so, as one CBOR map, and
  nothing after them; attested credential data (AT) never (§6.1);
- 20-21: the ES256 signature (DER ECDSA P-256 SHA-256) verifies over
  ``authenticatorData || SHA-256(clientDataJSON)``;
- 22: the signature counter: if it or the stored one is nonzero it must
  exceed the stored one, else the assertion is refused (a cloned
  authenticator, or a replay).

The signature is checked with ``cryptography``; the parsing is tested
against assertions real authenticators produced (``tests/vectors``), and
against the ``webauthn`` library in the tests.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from dataclasses import dataclass
from typing import Final

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from shardkeep.approvals import b64url
from tss.errors import InputError

__all__ = ["AssertionRefused", "Assertion", "verify_assertion"]

MAX_CLIENT_DATA: Final = 8192
MAX_AUTHENTICATOR_DATA: Final = 1024
FLAG_UP: Final = 0x01
FLAG_AT: Final = 0x40
FLAG_ED: Final = 0x80


class AssertionRefused(InputError):
    """A WebAuthn assertion that does not verify; the step that failed is named."""


@dataclass(frozen=True)
class Assertion:
    """What a verified assertion tells: its flags and signature counter."""

    flags: int
    sign_count: int


def _client_data(client_data_json: bytes, challenge: bytes, origin: str) -> None:
    if len(client_data_json) > MAX_CLIENT_DATA:
        raise AssertionRefused("clientDataJSON is too long")
    try:
        data = json.loads(client_data_json.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise AssertionRefused("clientDataJSON is not UTF-8 JSON (§7.2 step 10)") from e
    if not isinstance(data, dict):
        raise AssertionRefused("clientDataJSON is not an object (§7.2 step 11)")
    if data.get("type") != "webauthn.get":
        raise AssertionRefused("clientDataJSON type is not webauthn.get (§7.2 step 12)")
    if data.get("challenge") != b64url(challenge):
        raise AssertionRefused("the assertion is over another challenge (§7.2 step 13)")
    if data.get("origin") != origin:
        raise AssertionRefused("wrong origin (§7.2 step 14)")
    if data.get("crossOrigin", False) is not False:
        raise AssertionRefused("a cross-origin assertion is refused (§7.2 step 14)")


def _authenticator_data(authenticator_data: bytes, rp_id: str) -> Assertion:
    if not 37 <= len(authenticator_data) <= MAX_AUTHENTICATOR_DATA:
        raise AssertionRefused("authenticator data is not 37 to 1024 bytes (§6.1)")
    expected = hashlib.sha256(rp_id.encode("utf-8")).digest()
    if not hmac.compare_digest(authenticator_data[:32], expected):
        raise AssertionRefused("wrong RP id: rpIdHash differs (§7.2 step 15)")
    flags = authenticator_data[32]
    if not flags & FLAG_UP:
        raise AssertionRefused("the user was not present: UP flag clear (§7.2 step 16)")
    if flags & FLAG_AT:
        raise AssertionRefused("an assertion carries no attested credential data (§6.1)")
    extensions = authenticator_data[37:]
    if flags & FLAG_ED:
        stream = io.BytesIO(extensions)
        try:
            parsed = cbor2.CBORDecoder(stream).decode()
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as e:
            raise AssertionRefused("extensions are not one CBOR map (§7.2 step 19)") from e
        if not isinstance(parsed, dict) or stream.tell() != len(extensions):
            raise AssertionRefused("extensions are not one CBOR map (§7.2 step 19)")
    elif extensions:
        raise AssertionRefused("bytes after the signature counter without the ED flag (§6.1)")
    return Assertion(flags, int.from_bytes(authenticator_data[33:37], "big"))


def verify_assertion(
    public_key: bytes,
    rp_id: str,
    origin: str,
    challenge: bytes,
    authenticator_data: bytes,
    client_data_json: bytes,
    signature: bytes,
    stored_sign_count: int,
) -> Assertion:
    """Verify an ES256 assertion (§7.2 steps 10-22, see the module docstring).

    Arguments:
        public_key: the passkey's 33-byte compressed P-256 key.
        rp_id, origin: what the passkey was registered for.
        challenge: the expected challenge bytes.
        authenticator_data, client_data_json, signature: the assertion.
        stored_sign_count: the last counter seen for this passkey (0 if none).

    Returns:
        The assertion's flags and its counter (the caller stores the counter).

    Raises:
        AssertionRefused: any step failed; the message names the step.
    """
    _client_data(client_data_json, challenge, origin)
    assertion = _authenticator_data(authenticator_data, rp_id)
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
        key.verify(
            signature,
            authenticator_data + hashlib.sha256(client_data_json).digest(),
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, ValueError) as e:
        raise AssertionRefused("the signature does not verify (§7.2 step 21)") from e
    if (assertion.sign_count or stored_sign_count) and assertion.sign_count <= stored_sign_count:
        raise AssertionRefused(
            "the signature counter did not increase: cloned or replayed (§7.2 step 22)"
        )
    return assertion
