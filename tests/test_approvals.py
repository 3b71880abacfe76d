"""Owner approvals: API keys and WebAuthn passkeys, verified in the enclave.

Real authenticator output first: the ES256 assertions vendored from
py_webauthn's tests (made by real authenticators and browsers) verify with
``enclave.policy.webauthn`` and fail once tampered with. Then the software
passkey and API keys, end to end through ``verified_approvers`` and the
policy engine: valid, wrong origin, wrong RP id, replayed counter, wrong
key, an approval under an older policy set (the host's rollback), another
activity. The software passkey's assertions also verify with the
``webauthn`` library (a differential check of both sides).
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn import verify_authentication_response
from webauthn.helpers.structs import AuthenticationCredential, AuthenticatorAssertionResponse

from client.sdk.approvals import ApiKey, SoftwarePasskey
from enclave.policy.authenticators import ApprovalRefused, SignCounters, verified_approvers
from enclave.policy.engine import PolicyDenied, PolicyEngine
from enclave.policy.facts import Activity
from enclave.policy.webauthn import AssertionRefused, verify_assertion
from shardkeep.approvals import (
    Approval,
    activity_hash,
    approval_challenge,
    b64url,
    p256_key_from_cose,
)
from shardkeep.policyset import Consensus, Policy, PolicySet, policy_set_hash

VECTORS = (
    Path(__file__).parent / "vectors" / "py_webauthn" / "test_verify_authentication_response.py.txt"
)


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _literal_of(node: ast.expr) -> Any:
    """The literal a vector assignment holds: a string, list, dict, or the string a call wraps."""
    if isinstance(node, ast.Call):
        return _literal_of(node.args[0])
    return ast.literal_eval(node)


def real_es256_assertions() -> list[dict[str, Any]]:
    """Every case of the vendored file whose credential key is an ES256 COSE key."""
    cases = []
    for function in ast.walk(ast.parse(VECTORS.read_text())):
        if not isinstance(function, ast.FunctionDef):
            continue
        values: dict[str, Any] = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                try:
                    values[node.targets[0].id] = _literal_of(node.value)
                except (ValueError, IndexError):
                    continue
        credential = values.get("credential", values.get("parsed_credential"))
        if credential is None or "credential_public_key" not in values:
            continue
        cose = cbor2.loads(b64url_decode(values["credential_public_key"]))
        if (cose.get(1), cose.get(3)) != (2, -7):
            continue  # RSA, Ed25519, ML-DSA: not a passkey kind the enclave takes
        response = (json.loads(credential) if isinstance(credential, str) else credential)[
            "response"
        ]
        origins = values["expected_origin"]
        cases.append(
            {
                "name": function.name,
                "key": p256_key_from_cose(b64url_decode(values["credential_public_key"])),
                "rp_id": values["expected_rp_id"],
                "origins": origins if isinstance(origins, list) else [origins],
                "challenge": b64url_decode(values["challenge"]),
                "authenticator_data": b64url_decode(response["authenticatorData"]),
                "client_data_json": b64url_decode(response["clientDataJSON"]),
                "signature": b64url_decode(response["signature"]),
                "sign_count": values["sign_count"],
            }
        )
    return cases


REAL = real_es256_assertions()


def test_the_vendored_file_yields_the_es256_cases() -> None:
    assert len(REAL) == 3  # EC2 key, UV not required, several expected origins


@pytest.mark.parametrize("case", REAL, ids=[c["name"] for c in REAL])
def test_real_authenticator_assertions_verify(case: dict[str, Any]) -> None:
    verified = []
    for origin in case["origins"]:
        try:
            assertion = verify_assertion(
                case["key"], case["rp_id"], origin, case["challenge"], case["authenticator_data"],
                case["client_data_json"], case["signature"], case["sign_count"],
            )  # fmt: skip
        except AssertionRefused as e:
            assert "origin" in str(e)
            continue
        verified.append(origin)
        assert assertion.sign_count > case["sign_count"]
        assert assertion.flags & 0x01
    assert len(verified) == 1  # exactly the origin the browser wrote


@pytest.mark.parametrize("case", REAL, ids=[c["name"] for c in REAL])
def test_real_assertions_fail_once_tampered_with(case: dict[str, Any]) -> None:
    origin = json.loads(case["client_data_json"])["origin"]
    good = dict(
        public_key=case["key"], rp_id=case["rp_id"], origin=origin, challenge=case["challenge"],
        authenticator_data=case["authenticator_data"], client_data_json=case["client_data_json"],
        signature=case["signature"], stored_sign_count=case["sign_count"],
    )  # fmt: skip
    data = case["authenticator_data"]
    counter_bumped = data[:33] + (int.from_bytes(data[33:37], "big") + 1).to_bytes(4, "big")
    tampered = [
        ({"signature": case["signature"][:-1] + bytes([case["signature"][-1] ^ 1])}, "not verify"),
        ({"rp_id": "evil.example"}, "wrong RP id"),
        ({"challenge": bytes(32)}, "another challenge"),
        ({"authenticator_data": counter_bumped}, "does not verify"),
        ({"stored_sign_count": int.from_bytes(data[33:37], "big")}, "did not increase"),
    ]
    for change, fault in tampered:
        with pytest.raises(AssertionRefused, match=fault):
            verify_assertion(**{**good, **change})


ACTIVITY = activity_hash(b"a serialised CeremonyRequest with its challenge")
ALICE = ApiKey.generate("alice", "ed25519")
BOB = ApiKey.generate("bob", "p256")
PASSKEY = SoftwarePasskey("carol-phone", "wallet.example", "https://wallet.example")


def policy_set(version: int = 1, *, two_admins: bool = False) -> PolicySet:
    consensus = Consensus(2, "admin") if two_admins else Consensus(1)
    return PolicySet(
        "w1", 0, version,
        (ALICE.authenticator("admin"), BOB.authenticator("admin"), PASSKEY.authenticator()),
        (Policy("anything", "allow", "true", consensus),),
    )  # fmt: skip


def challenge_for(policy: PolicySet, activity: bytes = ACTIVITY) -> bytes:
    return approval_challenge(activity, policy_set_hash(policy))


def approvers(
    policy: PolicySet, approvals: list[Approval], counters: SignCounters | None = None
) -> tuple[str, ...]:
    return verified_approvers(policy, approvals, ACTIVITY, counters or SignCounters())


@pytest.mark.parametrize("signer", [ALICE, BOB, PASSKEY], ids=["ed25519", "p256", "passkey"])
def test_valid_approvals_count(signer: ApiKey | SoftwarePasskey) -> None:
    policy = policy_set()
    approval = signer.approve(challenge_for(policy))
    assert verified_approvers(policy, [approval], ACTIVITY, SignCounters()) == (signer.name,)


def test_two_admins_approve_and_the_engine_allows() -> None:
    policy = policy_set(two_admins=True)
    challenge = challenge_for(policy)
    counters = SignCounters()
    engine = PolicyEngine(policy)
    activity = Activity("REFRESH", "w1", "bip340")
    one = verified_approvers(
        policy, [ALICE.approve(challenge), PASSKEY.approve(challenge)], ACTIVITY, counters
    )
    with pytest.raises(PolicyDenied, match="1 of 2 approvals tagged 'admin'"):
        engine.decide(activity, one)
    two = verified_approvers(
        policy, [ALICE.approve(challenge), BOB.approve(challenge)], ACTIVITY, counters
    )
    assert engine.decide(activity, two).approvers == ("alice", "bob")


def test_passkey_wrong_origin_is_refused() -> None:
    policy = policy_set()
    phishing = SoftwarePasskey(
        "carol-phone", "wallet.example", "https://wallet.example.evil", PASSKEY._key
    )
    with pytest.raises(ApprovalRefused, match=r"carol-phone.*wrong origin"):
        verified_approvers(
            policy, [phishing.approve(challenge_for(policy))], ACTIVITY, SignCounters()
        )


def test_passkey_wrong_rp_id_is_refused() -> None:
    policy = policy_set()
    other_rp = SoftwarePasskey(
        "carol-phone", "evil.example", "https://wallet.example", PASSKEY._key
    )
    with pytest.raises(ApprovalRefused, match="wrong RP id"):
        verified_approvers(
            policy, [other_rp.approve(challenge_for(policy))], ACTIVITY, SignCounters()
        )


def test_passkey_replayed_counter_is_refused() -> None:
    policy = policy_set()
    counters = SignCounters()
    approval = PASSKEY.approve(challenge_for(policy))
    verified_approvers(policy, [approval], ACTIVITY, counters)
    with pytest.raises(ApprovalRefused, match="counter did not increase"):
        verified_approvers(policy, [approval], ACTIVITY, counters)
    clone = SoftwarePasskey("carol-phone", "wallet.example", "https://wallet.example", PASSKEY._key)
    clone.sign_count = PASSKEY.sign_count - 1  # a clone that lags behind
    with pytest.raises(ApprovalRefused, match="cloned or replayed"):
        verified_approvers(policy, [clone.approve(challenge_for(policy))], ACTIVITY, counters)
    assert verified_approvers(policy, [PASSKEY.approve(challenge_for(policy))], ACTIVITY, counters)


@pytest.mark.parametrize("signer", [ALICE, BOB, PASSKEY], ids=["ed25519", "p256", "passkey"])
def test_wrong_key_is_refused(signer: ApiKey | SoftwarePasskey) -> None:
    policy = policy_set()
    impostor: ApiKey | SoftwarePasskey
    if isinstance(signer, ApiKey):
        impostor = ApiKey.generate(signer.name, signer.kind)
    else:
        impostor = SoftwarePasskey(signer.name, signer.rp_id, signer.origin)
    with pytest.raises(ApprovalRefused, match="does not verify"):
        verified_approvers(
            policy, [impostor.approve(challenge_for(policy))], ACTIVITY, SignCounters()
        )


@pytest.mark.parametrize("signer", [ALICE, BOB, PASSKEY], ids=["ed25519", "p256", "passkey"])
def test_policy_rollback_by_the_host_is_refused(signer: ApiKey | SoftwarePasskey) -> None:
    # The owner approves under version 2; the host serves the sealed version 1.
    current, older = policy_set(2, two_admins=True), policy_set(1)
    approval = signer.approve(challenge_for(current))
    with pytest.raises(ApprovalRefused, match=r"does not verify|another challenge"):
        verified_approvers(older, [approval], ACTIVITY, SignCounters())


def test_an_approval_of_another_activity_is_refused() -> None:
    policy = policy_set()
    approval = ALICE.approve(challenge_for(policy, activity_hash(b"another request")))
    with pytest.raises(ApprovalRefused, match="alice"):
        verified_approvers(policy, [approval], ACTIVITY, SignCounters())


def test_unknown_and_repeated_approvers_are_refused() -> None:
    policy = policy_set()
    challenge = challenge_for(policy)
    with pytest.raises(ApprovalRefused, match="not an authenticator"):
        verified_approvers(
            policy, [ApiKey.generate("mallory").approve(challenge)], ACTIVITY, SignCounters()
        )
    with pytest.raises(ApprovalRefused, match="approved twice"):
        verified_approvers(
            policy, [ALICE.approve(challenge), ALICE.approve(challenge)], ACTIVITY, SignCounters()
        )
    smuggled = dataclasses.replace(ALICE.approve(challenge), client_data_json=b"{}")
    with pytest.raises(ApprovalRefused, match="no WebAuthn data"):
        verified_approvers(policy, [smuggled], ACTIVITY, SignCounters())


def assertion_with(passkey: SoftwarePasskey, challenge: bytes, **client_data: object) -> Approval:
    """An assertion whose client data is changed, signed properly by the passkey."""
    approval = passkey.approve(challenge)
    data = {**json.loads(approval.client_data_json), **client_data}
    client_data_json = json.dumps(data).encode()

    signature = passkey._key.sign(
        approval.authenticator_data + hashlib.sha256(client_data_json).digest(),
        ec.ECDSA(hashes.SHA256()),
    )
    return Approval(passkey.name, signature, approval.authenticator_data, client_data_json)


@pytest.mark.parametrize(
    ("client_data", "fault"),
    [({"type": "webauthn.create"}, "webauthn.get"), ({"crossOrigin": True}, "cross-origin")],
)
def test_passkey_client_data_is_checked(client_data: dict[str, object], fault: str) -> None:
    policy = policy_set()
    approval = assertion_with(PASSKEY, challenge_for(policy), **client_data)
    with pytest.raises(ApprovalRefused, match=fault):
        verified_approvers(policy, [approval], ACTIVITY, SignCounters())


def test_user_presence_is_required() -> None:
    challenge = bytes(32)
    approval = PASSKEY.approve(challenge)
    no_up = approval.authenticator_data[:32] + b"\x04" + approval.authenticator_data[33:]
    with pytest.raises(AssertionRefused, match="UP flag"):
        verify_assertion(
            PASSKEY.authenticator().public_key, PASSKEY.rp_id, PASSKEY.origin, challenge, no_up,
            approval.client_data_json, approval.signature, 0,
        )  # fmt: skip


def test_software_passkey_assertions_verify_with_the_webauthn_library() -> None:
    passkey = SoftwarePasskey("p", "localhost", "http://localhost:5000")
    challenge = bytes(range(32))
    approval = passkey.approve(challenge)
    credential = AuthenticationCredential(
        id=b64url(b"cred"),
        raw_id=b"cred",
        response=AuthenticatorAssertionResponse(
            client_data_json=approval.client_data_json,
            authenticator_data=approval.authenticator_data,
            signature=approval.signature,
        ),
    )
    result = verify_authentication_response(
        credential=credential,
        expected_challenge=challenge,
        expected_rp_id="localhost",
        expected_origin="http://localhost:5000",
        credential_public_key=passkey.cose_public_key(),
        credential_current_sign_count=0,
    )
    assert result.new_sign_count == 1
    assert p256_key_from_cose(passkey.cose_public_key()) == passkey.authenticator().public_key


def test_secrets_do_not_print() -> None:
    assert "redacted" in repr(ALICE) and "redacted" in repr(PASSKEY)
