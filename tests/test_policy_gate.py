"""What the enclave's gate makes of a request: the activity a policy sees, its own digests.

Each payload (an EVM transaction, a PSBT input, an EIP-191 or EIP-712
message) is parsed in the enclave and its digest computed there; a request
whose digest is another's is refused, as is one with two payloads or a
payload for the wrong scheme. Policies then see ``btc.tx`` and
``eth.message``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import rlp  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from client.sdk.approvals import ApiKey
from enclave.config import ConfigError, EnclaveConfig
from enclave.errors import BadRequest
from enclave.policy.authenticators import ApprovalRefused
from enclave.policy.engine import Allowed, PolicyDenied, PolicyEngine
from enclave.policy.facts import Activity, FactsError, facts
from enclave.policy.gate import (
    PolicyGate,
    PolicyRequired,
    activity_of,
    carried_policy_set,
    registered_policy_set,
    replaced_policy_set,
)
from enclave.policy.organisation import Organisation
from shardkeep.approvals import activity_hash, approval_challenge
from shardkeep.chains.bitcoin_tx import OutPoint, Transaction, TxIn, TxOut
from shardkeep.chains.eth_messages import load_typed_data, personal_message_digest
from shardkeep.chains.evm import keccak256
from shardkeep.chains.psbt import Psbt, PsbtMap, parse_psbt
from shardkeep.lifecycle import SCHEMES
from shardkeep.policy_documents import authenticator_entry
from shardkeep.policyset import (
    Authenticator,
    Consensus,
    InvalidPolicy,
    Policy,
    PolicySet,
    organisation_set,
    policy_set_hash,
)
from shardkeep.policyset import decode as decode_policy_set
from shardkeep.policyset import encode as encode_policy_set
from shardkeep.v1 import ceremony_pb2
from tests.test_chains_fuzz import FUZZ, mutated
from tests.test_eth_messages import MAIL
from tests.test_psbt import one_input_psbt
from tss.errors import InputError

SCHEME = {name: number for number, name in SCHEMES.items()}
P2TR = b"\x51\x20" + b"\x22" * 32
SPENT = (1500).to_bytes(8, "little") + bytes([len(P2TR)]) + P2TR
PSBT = one_input_psbt(((b"\x01", SPENT),))  # PSBT_IN_WITNESS_UTXO: 1500 sat
EVM_TX = b"\x02" + bytes(rlp.encode([1, 0, 1, 2, 21_000, b"\x11" * 20, 5, b"", []]))


def sign(scheme: str, digest: bytes, **payload: object) -> ceremony_pb2.CeremonyRequest:
    request = ceremony_pb2.CeremonyRequest(
        kind=ceremony_pb2.CEREMONY_KIND_SIGN, scheme=SCHEME[scheme], wallet_id="w", digest=digest
    )
    for key, value in payload.items():
        setattr(request, key, value)
    return request


def test_each_payload_becomes_its_activity() -> None:
    psbt = parse_psbt(PSBT)
    typed = json.dumps(MAIL).encode()
    cases = [
        (sign("ecdsa-secp256k1", keccak256(EVM_TX), evm_transaction=EVM_TX),
         "SIGN_EVM_TRANSACTION"),
        (sign("bip340", psbt.key_path_sighash(0), psbt=PSBT), "SIGN_PSBT"),
        (sign("ecdsa-secp256k1", personal_message_digest(b"hi"), eth_personal_message=b"hi"),
         "SIGN_EIP191"),
        (sign("ecdsa-secp256k1", load_typed_data(typed).digest(), eth_typed_data=typed),
         "SIGN_EIP712"),
        (sign("bip340", bytes(32)), "SIGN_RAW_DIGEST"),
    ]  # fmt: skip
    for request, kind in cases:
        activity = activity_of(request)
        assert activity is not None and activity.kind == kind
    refresh = ceremony_pb2.CeremonyRequest(kind=ceremony_pb2.CEREMONY_KIND_REFRESH, wallet_id="w")
    assert activity_of(refresh) is not None and activity_of(refresh).kind == "REFRESH"  # type: ignore[union-attr]
    setup = ceremony_pb2.CeremonyRequest(kind=ceremony_pb2.CEREMONY_KIND_PAIR_SETUP, wallet_id="w")
    assert activity_of(setup) is None


@pytest.mark.parametrize(
    ("request_", "fault"),
    [
        (sign("ecdsa-secp256k1", bytes(32), evm_transaction=EVM_TX), "signing digest"),
        (sign("bip340", bytes(32), psbt=PSBT), "BIP-341 sighash"),
        (sign("bip340", bytes(32), psbt=PSBT, psbt_input=1), "no input 1"),
        (sign("ecdsa-secp256k1", bytes(32), eth_personal_message=b"hi"), "EIP-191"),
        (sign("ecdsa-secp256k1", bytes(32), eth_typed_data=json.dumps(MAIL).encode()), "EIP-712"),
        (sign("ecdsa-secp256k1", bytes(32), eth_typed_data=b"{"), "does not parse"),
        (sign("bip340", keccak256(EVM_TX), evm_transaction=EVM_TX), "ecdsa-secp256k1 wallet"),
        (sign("ecdsa-secp256k1", bytes(32), psbt=PSBT), "bip340 wallet"),
        (sign("bip340", bytes(32), psbt=b"psbt\xff"), "does not parse"),
        (sign("ecdsa-secp256k1", keccak256(EVM_TX), evm_transaction=EVM_TX,
              eth_personal_message=b"hi"), "one transaction or message"),
    ],
)  # fmt: skip
def test_a_digest_the_enclave_did_not_compute_is_refused(
    request_: ceremony_pb2.CeremonyRequest, fault: str
) -> None:
    with pytest.raises(BadRequest, match=fault):
        activity_of(request_)


def test_the_inputs_of_one_psbt_share_one_parse_and_each_digest_is_checked() -> None:
    # One ceremony per input, each request with the whole PSBT: the enclave
    # parses it (and hashes its transaction for BIP-341) once, not per input.
    data = two_input_psbt()
    psbt = parse_psbt(data)
    first, second = (
        activity_of(sign("bip340", psbt.key_path_sighash(i), psbt=data, psbt_input=i))
        for i in (0, 1)
    )
    assert first is not None and second is not None
    assert (first.psbt_input, second.psbt_input) == (0, 1)
    assert first.psbt is second.psbt
    with pytest.raises(BadRequest, match="BIP-341 sighash"):
        activity_of(sign("bip340", psbt.key_path_sighash(0), psbt=data, psbt_input=1))


def two_input_psbt() -> bytes:
    tx = Transaction(
        2, (TxIn(OutPoint(b"\x11" * 32, 0)), TxIn(OutPoint(b"\x12" * 32, 1))), (TxOut(1000, P2TR),)
    )
    inputs = (PsbtMap("input", ((b"\x01", SPENT),)),) * 2
    return Psbt(
        PsbtMap("global", ((b"\x00", tx.serialize()),)), tx, inputs, (PsbtMap("output", ()),)
    ).serialize()


def test_policies_see_psbt_outputs_and_fee() -> None:
    request = sign("bip340", parse_psbt(PSBT).key_path_sighash(0), psbt=PSBT)
    activity = activity_of(request)
    assert activity is not None
    tx = facts(activity)["btc"]["tx"]  # type: ignore[index]
    (output,) = tx["outputs"]
    assert (tx["fee"], tx["output_total"], output["amount"]) == (500, 1000, 1000)
    assert output["address"].startswith("bc1p") and output["testnet_address"].startswith("tb1p")
    engine = engine_with(
        Policy("pay-known", "allow",
               f"btc.tx.outputs.all(o, o.address == '{output['address']}') && btc.tx.fee <= 1000",
               Consensus(1)),
    )  # fmt: skip
    assert engine.decide(activity, ["a"]).policy == "pay-known"
    low_fee = engine_with(Policy("cheap", "allow", "btc.tx.fee < 500", Consensus(1)))
    with pytest.raises(PolicyDenied):
        low_fee.decide(activity, ["a"])


def test_policies_see_eip712_domains_and_deny_permits() -> None:
    typed = json.dumps(MAIL).encode()
    activity = activity_of(
        sign("ecdsa-secp256k1", load_typed_data(typed).digest(), eth_typed_data=typed)
    )
    assert activity is not None
    message = facts(activity)["eth"]["message"]  # type: ignore[index]
    assert message["kind"] == "eip712" and message["primary_type"] == "Mail"
    assert message["domain"]["chain_id"] == 1 and message["domain"]["name"] == "Ether Mail"
    engine = engine_with(
        Policy("no-permits", "deny", "has(eth.message) && eth.message.primary_type == 'Mail'"),
        Policy("any", "allow", "true", Consensus(1)),
    )
    with pytest.raises(PolicyDenied, match="no-permits"):
        engine.decide(activity, ["a"])
    personal = activity_of(
        sign("ecdsa-secp256k1", personal_message_digest(b"log in"), eth_personal_message=b"log in")
    )
    assert personal is not None
    seen = facts(personal)["eth"]["message"]  # type: ignore[index]
    assert (seen["kind"], seen["size"], seen["text"], seen["primary_type"]) == (
        "eip191", 6, "log in", "",
    )  # fmt: skip
    assert engine.decide(personal, ["a"]).policy == "any"


def engine_with(*policies: Policy) -> PolicyEngine:
    return PolicyEngine(
        PolicySet("w", 0, 1, (Authenticator("a", "ed25519", b"\x01" * 32),), policies)
    )


def test_registered_sets_name_their_wallet_and_epoch_and_move_with_it() -> None:
    policy_set = PolicySet(
        "w", 0, 1, (Authenticator("a", "ed25519", b"\x01" * 32),),
        (Policy("any", "allow", "true", Consensus(1)),),
    )  # fmt: skip
    keygen = ceremony_pb2.CeremonyRequest(wallet_id="w", policy_set=encode_policy_set(policy_set))
    assert registered_policy_set(keygen, 0) == keygen.policy_set
    with pytest.raises(InvalidPolicy, match="epoch 1"):
        registered_policy_set(keygen, 1)
    assert registered_policy_set(ceremony_pb2.CeremonyRequest(wallet_id="w"), 0) == b""
    moved = decode_policy_set(carried_policy_set(keygen.policy_set, 3))
    assert moved.epoch == 3 and moved.policies == policy_set.policies
    assert carried_policy_set(b"", 3) == b""


def test_a_refresh_with_a_new_set_is_the_set_policy_activity() -> None:
    current = PolicySet(
        "w", 0, 1, (Authenticator("a", "ed25519", b"\x01" * 32),),
        (Policy("any", "allow", "true", Consensus(1)),),
    )  # fmt: skip
    refresh = ceremony_pb2.CeremonyRequest(kind=ceremony_pb2.CEREMONY_KIND_REFRESH, wallet_id="w")
    assert activity_of(refresh).kind == "REFRESH"  # type: ignore[union-attr]
    newer = PolicySet("w", 1, 2, current.authenticators, current.policies)
    refresh.policy_set = encode_policy_set(newer)
    assert activity_of(refresh).kind == "SET_POLICY"  # type: ignore[union-attr]
    data = encode_policy_set(current)
    assert replaced_policy_set(refresh, data, 1) == refresh.policy_set
    refresh.policy_set = encode_policy_set(PolicySet("w", 1, 1, current.authenticators,
                                                     current.policies))  # fmt: skip
    with pytest.raises(InvalidPolicy, match="version above"):
        replaced_policy_set(refresh, data, 1)
    assert replaced_policy_set(ceremony_pb2.CeremonyRequest(wallet_id="w"), data, 1) == b""


@FUZZ
@given(
    st.sampled_from(["psbt", "eth_typed_data", "eth_personal_message", "evm_transaction"]),
    mutated([PSBT, json.dumps(MAIL).encode(), EVM_TX]),
    st.integers(0, 3),
)
def test_fuzzed_payloads_never_crash_the_gate(field: str, data: bytes, index: int) -> None:
    # With a digest of zeros nothing real matches: every request ends in a
    # BadRequest (it does not parse, or its digest is not the payload's), no
    # other exception.
    scheme = "bip340" if field == "psbt" else "ecdsa-secp256k1"
    request = sign(scheme, bytes(32), **{field: data})
    request.psbt_input = index if field == "psbt" else 0
    if not data:  # an empty payload is no payload (proto3): a raw digest
        assert activity_of(request).kind == "SIGN_RAW_DIGEST"  # type: ignore[union-attr]
        return
    with pytest.raises(BadRequest):
        activity_of(request)


@FUZZ
@given(mutated([PSBT]), st.integers(0, 2))
def test_fuzzed_psbts_give_facts_or_typed_errors(data: bytes, index: int) -> None:
    try:
        psbt = parse_psbt(data)
    except InputError:
        return
    activity = Activity("SIGN_PSBT", "w", "bip340", psbt=psbt, psbt_input=index)
    with contextlib.suppress(FactsError, InputError):  # FactsError: no such input, overpaying
        assert facts(activity)["btc"]["tx"]["input"] == index  # type: ignore[index]


ORGANISATION = {"mainnet-only": "activity.kind == 'SIGN_EVM_TRANSACTION' && eth.tx.chain_id != 1"}


def evm_request(chain_id: int) -> ceremony_pb2.SignedCeremonyRequest:
    raw = b"\x02" + bytes(rlp.encode([chain_id, 0, 1, 2, 21_000, b"\x11" * 20, 5, b"", []]))
    request = sign("ecdsa-secp256k1", keccak256(raw), evm_transaction=raw)
    return ceremony_pb2.SignedCeremonyRequest(request=request.SerializeToString())


def approve(
    request: ceremony_pb2.SignedCeremonyRequest, key: ApiKey, under: PolicySet, name: str = ""
) -> None:
    """Append ``key``'s approval of ``request`` under ``under`` (named ``name`` if given)."""
    challenge = approval_challenge(activity_hash(request.request), policy_set_hash(under))
    approval = key.approve(challenge)
    request.approvals.append(
        ceremony_pb2.Approval(
            authenticator=name or approval.authenticator, signature=approval.signature
        )
    )


def test_organisation_deny_policies_apply_to_every_wallet() -> None:
    gate = PolicyGate(ORGANISATION)
    testnet, mainnet = evm_request(5), evm_request(1)
    parsed = ceremony_pb2.CeremonyRequest.FromString
    # a wallet without a policy set of its own and no organisation allow: it may
    # only adopt a set
    with pytest.raises(PolicyRequired, match="has no policy set"):
        gate.check(mainnet, parsed(mainnet.request), b"")
    # a wallet whose own set allows everything with its key's approval: deny still wins
    key = ApiKey.generate("a")
    own = PolicySet(
        "w", 0, 1, (key.authenticator(),), (Policy("any", "allow", "true", Consensus(1)),)
    )
    data = encode_policy_set(own)
    approve(testnet, key, own)
    with pytest.raises(PolicyDenied, match="organisation/mainnet-only") as denied:
        gate.check(testnet, parsed(testnet.request), data)
    assert denied.value.policy == "organisation/mainnet-only"
    approve(mainnet, key, own)
    assert gate.check(mainnet, parsed(mainnet.request), data) == Allowed("any", ("a",))
    with pytest.raises(InvalidPolicy, match="does not compile"):
        PolicyGate({"broken": "eth.tx.chain_id !="})


ADMIN = ApiKey.generate("cfo")
ORGANISATION_ALLOW = {
    **ORGANISATION,
    "admin-approves": {
        "effect": "allow",
        "condition": "true",
        "consensus": {"min_approvals": 1, "tag": "admin"},
    },
}
ADMINS = [authenticator_entry(ADMIN.authenticator("admin"))]


def test_an_organisation_allow_governs_wallets_without_a_set_and_deny_still_wins() -> None:
    organisation = Organisation.from_config(ORGANISATION_ALLOW, ADMINS)
    gate = PolicyGate(organisation)
    parsed = ceremony_pb2.CeremonyRequest.FromString
    under = organisation_set((ADMIN.authenticator("admin"),), organisation_allows())
    # a keygen without a set is accepted: the organisation's allow governs the wallet
    keygen = ceremony_pb2.CeremonyRequest(kind=ceremony_pb2.CEREMONY_KIND_KEYGEN, wallet_id="w")
    assert gate.check(ceremony_pb2.SignedCeremonyRequest(), keygen, None) is None
    # its activities need the organisation's approval, named organisation/NAME
    mainnet = evm_request(1)
    with pytest.raises(PolicyDenied, match="'organisation/admin-approves' matched with 0 of 1"):
        gate.check(mainnet, parsed(mainnet.request), b"")
    approve(mainnet, ADMIN, under, "organisation/cfo")
    allowed = gate.check(mainnet, parsed(mainnet.request), b"")
    assert allowed == Allowed("organisation/admin-approves", ("cfo",))
    # the organisation's deny wins over its own allow
    testnet = evm_request(5)
    approve(testnet, ADMIN, under, "organisation/cfo")
    with pytest.raises(PolicyDenied, match="organisation/mainnet-only"):
        gate.check(testnet, parsed(testnet.request), b"")
    # an approval under the wrong set (the wallet's hash) does not verify
    wrong = evm_request(1)
    walletish = PolicySet("w", 0, 1, (ADMIN.authenticator(),), (ANY,))
    approve(wrong, ADMIN, walletish, "organisation/cfo")
    with pytest.raises(ApprovalRefused, match="cfo"):
        gate.check(wrong, parsed(wrong.request), b"")
    # a raw digest: the organisation's `true` does not name SIGN_RAW_DIGEST
    raw = ceremony_pb2.SignedCeremonyRequest(
        request=sign("ecdsa-secp256k1", bytes(32)).SerializeToString()
    )
    approve(raw, ADMIN, under, "organisation/cfo")
    with pytest.raises(PolicyDenied, match="names that kind"):
        gate.check(raw, parsed(raw.request), b"")


def organisation_allows() -> tuple[Policy, ...]:
    return (Policy("admin-approves", "allow", "true", Consensus(1, "admin")),)


ANY = Policy("any", "allow", "true", Consensus(1))


def test_a_new_wallet_without_a_set_is_refused_unless_the_organisation_governs_it() -> None:
    keygen = ceremony_pb2.CeremonyRequest(kind=ceremony_pb2.CEREMONY_KIND_KEYGEN, wallet_id="w")
    with pytest.raises(PolicyRequired, match="registers a policy set"):
        PolicyGate(ORGANISATION).check(ceremony_pb2.SignedCeremonyRequest(), keygen, None)
    keygen.policy_set = encode_policy_set(PolicySet("w", 0, 1, (ADMIN.authenticator(),), (ANY,)))
    assert PolicyGate().check(ceremony_pb2.SignedCeremonyRequest(), keygen, None) is None


def test_a_wallet_without_a_set_adopts_one_approved_under_it() -> None:
    key = ApiKey.generate("owner")
    new = PolicySet("w", 1, 1, (key.authenticator(),), (ANY,))
    refresh = ceremony_pb2.CeremonyRequest(
        kind=ceremony_pb2.CEREMONY_KIND_REFRESH, wallet_id="w", scheme=SCHEME["bip340"],
        policy_set=encode_policy_set(new),
    )  # fmt: skip
    signed = ceremony_pb2.SignedCeremonyRequest(request=refresh.SerializeToString())
    gate = PolicyGate()
    with pytest.raises(PolicyDenied, match="'any' matched with 0 of 1"):
        gate.check(signed, refresh, b"")
    approve(signed, key, new)
    assert gate.check(signed, refresh, b"") == Allowed("any", ("owner",))
    # a plain refresh of such a wallet is refused, naming the way out
    refresh.ClearField("policy_set")
    plain = ceremony_pb2.SignedCeremonyRequest(request=refresh.SerializeToString())
    with pytest.raises(PolicyRequired, match="adopt one"):
        gate.check(plain, refresh, b"")


def test_the_enclave_refuses_to_start_with_a_bad_organisation_policy(tmp_path: Path) -> None:
    shipped = json.loads((Path(__file__).parents[1] / "deploy/enclave/enclave.json").read_text())
    path = tmp_path / "enclave.json"
    path.write_text(json.dumps({**shipped, "organisation_policies": ORGANISATION}))
    assert EnclaveConfig.load(path).organisation_policies == ORGANISATION
    for bad in ({"x": "eth.tx ==="}, {"x": 5}, ["x"]):
        path.write_text(json.dumps({**shipped, "organisation_policies": bad}))
        with pytest.raises(ConfigError, match="organisation_policies"):
            EnclaveConfig.load(path)
