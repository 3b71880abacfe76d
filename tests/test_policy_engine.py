"""The enclave's policy engine: deny wins, allow needs consensus, bad policies are refused.

Matrices per chain run real transactions through the real parsers
(``shardkeep.chains``) and the real CEL runtime; every denial is checked for
the policy and condition it names.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import cbor2
import pytest
import rlp  # type: ignore[import-untyped]
from hypothesis import given
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.system_program import TransferParams, transfer

from enclave.policy.engine import PolicyDenied, PolicyEngine
from enclave.policy.facts import Activity, FactsError, facts
from shardkeep.chains import evm, solana
from shardkeep.chains.errors import TransactionParseError
from shardkeep.policyset import (
    Authenticator,
    Consensus,
    InvalidPolicy,
    Policy,
    PolicySet,
    decode,
    encode,
    policy_set_hash,
)
from tests.test_chains_fuzz import FUZZ, SEEDS, SOLANA_SEEDS, mutated

FRIEND = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
STRANGER = bytes.fromhex("de" * 20)
ERC20_APPROVE = "0x095ea7b3"
GWEI = 10**9


def authenticator(name: str, *tags: str, seed: int = 0) -> Authenticator:
    return Authenticator(name, "ed25519", bytes([seed or len(name)]) * 32, tags)


AUTHENTICATORS = (
    authenticator("alice", "admin", seed=1),
    authenticator("bob", "admin", seed=2),
    authenticator("carol", seed=3),
)


def policy_set(
    *policies: Policy, authenticators: tuple[Authenticator, ...] = AUTHENTICATORS
) -> PolicySet:
    return PolicySet("w1", 0, 1, authenticators, policies)


def eth_transfer(to: bytes, value: int, data: bytes = b"", chain_id: int = 1) -> Activity:
    raw = b"\x02" + bytes(rlp.encode([chain_id, 0, GWEI, 30 * GWEI, 21_000, to, value, data, []]))
    return Activity(
        "SIGN_EVM_TRANSACTION", "w1", "ecdsa-secp256k1", (0, 1), evm=evm.parse_transaction(raw)
    )


PAYER, FRIEND_SOL, STRANGER_SOL = (Keypair.from_seed(bytes([i]) * 32).pubkey() for i in (1, 2, 3))


def sol_transfer(to: object, lamports: int, extra: list[Instruction] | None = None) -> Activity:
    ixs = [
        transfer(TransferParams(from_pubkey=PAYER, to_pubkey=to, lamports=lamports)),
        *(extra or []),
    ]
    raw = bytes(Message.new_with_blockhash(ixs, PAYER, Hash(bytes(32))))
    return Activity("SIGN_SOLANA_MESSAGE", "w1", "ed25519", solana=solana.parse_message(raw))


ONE = Consensus(1)
TWO_ADMINS = Consensus(2, "admin")
EVM_ALLOWLIST = Policy(
    "evm-friends",
    "allow",
    f"activity.kind == 'SIGN_EVM_TRANSACTION' && eth.tx.chain_id == 1 "
    f"&& eth.tx.to in ['0x{FRIEND.hex()}'] && eth.tx.value_gwei <= 2000000000",
    ONE,
)
NO_APPROVE = Policy(
    "no-erc20-approve", "deny", f"has(eth.tx) && eth.tx.selector == '{ERC20_APPROVE}'"
)
SOL_ALLOWLIST = Policy(
    "sol-friends",
    "allow",
    f"activity.kind == 'SIGN_SOLANA_MESSAGE' && solana.tx.transfers.all(t, t.to == '{FRIEND_SOL}') "
    "&& solana.tx.program_ids.all(p, p == '11111111111111111111111111111111') "
    "&& solana.tx.transfer_total <= 5000000000",
    ONE,
)
BIG_TRANSFERS = Policy(
    "big-needs-two-admins",
    "allow",
    "activity.kind == 'SIGN_EVM_TRANSACTION' && eth.tx.value_gwei > 2000000000",
    TWO_ADMINS,
)
ENGINE = PolicyEngine(policy_set(EVM_ALLOWLIST, NO_APPROVE, SOL_ALLOWLIST, BIG_TRANSFERS))


@pytest.mark.parametrize(
    ("activity", "approvers", "allowed_by"),
    [
        (eth_transfer(FRIEND, 10**18), ["carol"], "evm-friends"),
        (eth_transfer(FRIEND, 2 * 10**18), ["alice"], "evm-friends"),  # at the cap
        (eth_transfer(STRANGER, 3 * 10**18), ["alice", "bob"], "big-needs-two-admins"),
        (sol_transfer(FRIEND_SOL, 10**9), ["bob"], "sol-friends"),
    ],
)
def test_allowed(activity: Activity, approvers: list[str], allowed_by: str) -> None:
    assert ENGINE.decide(activity, approvers).policy == allowed_by


@pytest.mark.parametrize(
    ("activity", "approvers", "reason"),
    [
        # a recipient off the allow-list, with approvals: nothing allows it
        (eth_transfer(STRANGER, 10**18), ["alice", "bob", "carol"], "no allow policy"),
        # one wei over the cap: the gwei are rounded up
        (
            eth_transfer(FRIEND, 2 * 10**18 + 1),
            ["alice"],
            "'big-needs-two-admins' matched with 1 of 2",
        ),
        (eth_transfer(FRIEND, 10**18, chain_id=5), ["alice"], "no allow policy"),
        (eth_transfer(FRIEND, 10**18), [], "'evm-friends' matched with 0 of 1"),
        (eth_transfer(STRANGER, 3 * 10**18), ["alice", "carol"], "1 of 2 approvals tagged 'admin'"),
        (eth_transfer(FRIEND, 10**18), ["mallory"], "0 of 1"),  # not an authenticator of the set
        (sol_transfer(STRANGER_SOL, 10**9), ["alice"], "no allow policy"),
        (sol_transfer(FRIEND_SOL, 6 * 10**9), ["alice"], "no allow policy"),
        (
            sol_transfer(
                FRIEND_SOL,
                1,
                [Instruction(Keypair().pubkey(), b"", [AccountMeta(PAYER, True, True)])],
            ),
            ["alice"],
            "no allow policy",
        ),
        (
            Activity("SIGN_RAW_DIGEST", "w1", "ecdsa-secp256k1"),
            ["alice", "bob"],
            "signed only where an allow policy names that kind",
        ),
    ],
)
def test_denied_naming_why(activity: Activity, approvers: list[str], reason: str) -> None:
    with pytest.raises(PolicyDenied, match=reason) as denied:
        ENGINE.decide(activity, approvers)
    assert denied.value.policy == ""


def test_deny_wins_over_every_approval() -> None:
    call = eth_transfer(FRIEND, 0, bytes.fromhex(ERC20_APPROVE[2:]) + bytes(64))
    with pytest.raises(PolicyDenied) as denied:
        ENGINE.decide(call, ["alice", "bob", "carol"])
    assert (denied.value.policy, denied.value.condition) == (
        "no-erc20-approve",
        NO_APPROVE.condition,
    )
    assert "no-erc20-approve" in str(denied.value)


def test_raw_digest_only_where_a_policy_allows_it() -> None:
    raw = Activity("SIGN_RAW_DIGEST", "w1", "bip340")
    engine = PolicyEngine(
        policy_set(Policy("raw", "allow", "activity.kind == 'SIGN_RAW_DIGEST'", ONE))
    )
    assert engine.decide(raw, ["carol"]).policy == "raw"
    with pytest.raises(PolicyDenied):
        engine.decide(eth_transfer(FRIEND, 1), ["carol"])


@pytest.mark.parametrize(
    ("approvers", "allowed"),
    [([], False), (["alice"], False), (["alice", "carol"], False), (["alice", "bob"], True),
     (["alice", "alice"], False), (["alice", "bob", "carol"], True)],
)  # fmt: skip
def test_consensus_of_two_admins(approvers: list[str], allowed: bool) -> None:
    engine = PolicyEngine(policy_set(Policy("treasury", "allow", "true", TWO_ADMINS)))
    activity = eth_transfer(STRANGER, 1)
    if allowed:
        assert engine.decide(activity, approvers).approvers == ("alice", "bob")
    else:
        with pytest.raises(PolicyDenied, match="treasury"):
            engine.decide(activity, approvers)


def test_conditions_that_fail_to_evaluate_fail_closed() -> None:
    # eth.tx is missing on a Solana activity: the deny condition errors, so it denies
    engine = PolicyEngine(
        policy_set(
            Policy("block", "deny", "eth.tx.to == '0x00'"), Policy("all", "allow", "true", ONE)
        )
    )
    with pytest.raises(PolicyDenied, match="fail closed") as denied:
        engine.decide(sol_transfer(FRIEND_SOL, 1), ["alice"])
    assert denied.value.policy == "block"
    # an allow condition that errors (or is not a bool) allows nothing
    engine = PolicyEngine(
        policy_set(
            Policy("typo", "allow", "solana.tx.fee_payer > 3", ONE),
            Policy("num", "allow", "1", ONE),
        )
    )
    with pytest.raises(PolicyDenied, match=r"'typo' failed to evaluate.*'num' failed to evaluate"):
        engine.decide(sol_transfer(FRIEND_SOL, 1), ["alice"])


def test_guarded_conditions_do_not_trip_on_other_chains() -> None:
    engine = PolicyEngine(
        policy_set(
            Policy(
                "block", "deny", "activity.kind == 'SIGN_EVM_TRANSACTION' && eth.tx.to == '0x00'"
            ),
            Policy("all", "allow", "true", ONE),
        )
    )
    assert engine.decide(sol_transfer(FRIEND_SOL, 1), ["alice"]).policy == "all"


@pytest.mark.parametrize(
    ("policy", "fault"),
    [
        (Policy("p", "permit", "true", ONE), "not allow or deny"),  # type: ignore[arg-type]
        (Policy("p", "allow", "true"), "needs a consensus"),
        (Policy("p", "allow", "true", Consensus(0)), "at least one approval"),
        (Policy("p", "allow", "true", Consensus(3, "admin")), "only 2 authenticators"),
        (Policy("p", "allow", "true", Consensus(4)), "only 3 authenticators"),
        (Policy("p", "deny", "true", ONE), "takes no consensus"),
        (Policy("p", "allow", "activity.kind ==", ONE), "does not compile"),
        (Policy("p", "allow", "", ONE), "empty"),
        (Policy("p", "allow", "wallet.kind == 'x'", ONE), "names wallet"),
        (Policy("p", "allow", "x.all(y, y)", ONE), "names x"),
        (Policy("p", "allow", "true || " * 600 + "true", ONE), "exceeds 4096"),
        (Policy("p", "allow", "(" * 40 + "true" + ")" * 40, ONE), "deeper than 32"),
        (Policy("p", "allow", "[1].all(a, [1].all(b, [1].all(c, true)))", ONE), "comprehension"),
        (Policy("Bad Name", "allow", "true", ONE), "policy name"),
    ],
)
def test_bad_policies_are_refused_at_submission(policy: Policy, fault: str) -> None:
    with pytest.raises(InvalidPolicy, match=fault):
        PolicyEngine(policy_set(policy))


def test_bad_sets_are_refused_at_submission() -> None:
    allow = Policy("p", "allow", "true", ONE)
    with pytest.raises(InvalidPolicy, match="names repeat"):
        policy_set(allow, allow)
    with pytest.raises(InvalidPolicy, match="authenticator names repeat"):
        policy_set(
            allow,
            authenticators=(
                AUTHENTICATORS[0],
                dataclasses.replace(AUTHENTICATORS[1], name="alice"),
            ),
        )
    with pytest.raises(InvalidPolicy, match="registered twice"):
        policy_set(
            allow,
            authenticators=(AUTHENTICATORS[0], dataclasses.replace(AUTHENTICATORS[0], name="x")),
        )
    with pytest.raises(InvalidPolicy, match="32 bytes"):
        Authenticator("k", "ed25519", bytes(33))
    with pytest.raises(InvalidPolicy, match="only passkeys"):
        Authenticator("k", "webauthn-es256", b"\x02" + bytes(32))
    with pytest.raises(InvalidPolicy, match="1 to"):
        policy_set()


def test_policy_set_hash_covers_every_field() -> None:
    base = policy_set(EVM_ALLOWLIST, NO_APPROVE)
    assert policy_set_hash(base) == policy_set_hash(policy_set(EVM_ALLOWLIST, NO_APPROVE))
    variants = [
        dataclasses.replace(base, version=2),
        dataclasses.replace(base, epoch=1),
        dataclasses.replace(base, wallet_id="w2"),
        dataclasses.replace(base, policies=(NO_APPROVE, EVM_ALLOWLIST)),
        dataclasses.replace(
            base, policies=(dataclasses.replace(EVM_ALLOWLIST, consensus=Consensus(2)), NO_APPROVE)
        ),
        dataclasses.replace(
            base, authenticators=(*AUTHENTICATORS[:2], authenticator("carol", "admin", seed=3))
        ),
    ]
    hashes = {policy_set_hash(v) for v in variants} | {policy_set_hash(base)}
    assert len(hashes) == len(variants) + 1


def test_facts_round_wei_up_and_refuse_what_cel_cannot_hold() -> None:
    tx = facts(eth_transfer(FRIEND, 10**9 + 1))["eth"]["tx"]  # type: ignore[index]
    assert (tx["value_gwei"], tx["value_wei"], tx["to"]) == (2, "1000000001", "0x" + FRIEND.hex())
    assert tx["max_fee_gwei"] == 21_000 * 30
    with pytest.raises(FactsError, match="value_gwei"):
        facts(eth_transfer(FRIEND, 2**256 - 1))
    with pytest.raises(FactsError, match="wrong transaction"):
        facts(Activity("SIGN_EVM_TRANSACTION", "w1", "ecdsa-secp256k1"))
    with pytest.raises(FactsError, match="unknown activity kind"):
        facts(Activity("SIGN_ANYTHING", "w1", "ecdsa-secp256k1"))


def decides_or_refuses(activity_of: Callable[[], Activity]) -> None:
    try:
        activity = activity_of()
    except TransactionParseError:
        return
    with contextlib.suppress(PolicyDenied, FactsError):  # the two typed outcomes besides Allowed
        assert ENGINE.decide(activity, ["alice", "bob", "carol"]).policy


@FUZZ
@given(mutated(SEEDS))
def test_fuzzed_evm_transactions_reach_a_decision_or_a_typed_error(raw: bytes) -> None:
    decides_or_refuses(
        lambda: Activity(
            "SIGN_EVM_TRANSACTION", "w1", "ecdsa-secp256k1", evm=evm.parse_transaction(raw)
        )
    )


@FUZZ
@given(mutated(SOLANA_SEEDS))
def test_fuzzed_solana_messages_reach_a_decision_or_a_typed_error(raw: bytes) -> None:
    decides_or_refuses(
        lambda: Activity("SIGN_SOLANA_MESSAGE", "w1", "ed25519", solana=solana.parse_message(raw))
    )


def test_policy_sets_decode_from_their_canonical_encoding_only() -> None:
    original = policy_set(EVM_ALLOWLIST, NO_APPROVE, BIG_TRANSFERS)
    data = encode(original)
    assert decode(data) == original
    fields = cbor2.loads(data)
    with pytest.raises(InvalidPolicy, match="canonical"):
        decode(cbor2.dumps(dict(reversed(fields.items()))))  # keys in another order
    for key, bad in [("epoch", "1"), ("version", True), ("authenticators", {}), ("v", 2)]:
        with pytest.raises(InvalidPolicy):
            decode(cbor2.dumps({**fields, key: bad}, canonical=True))
    broken = {**fields, "policies": [{**fields["policies"][0], "consensus": [1]}]}
    with pytest.raises(InvalidPolicy, match="consensus"):
        decode(cbor2.dumps(broken, canonical=True))


@FUZZ
@given(mutated([encode(policy_set(EVM_ALLOWLIST, NO_APPROVE))]))
def test_fuzzed_policy_sets_decode_or_are_refused(data: bytes) -> None:
    with contextlib.suppress(InvalidPolicy):
        assert encode(decode(data)) == data
