"""What the enclave's policy checks cost per signature: parsing, approvals, the decision.

Per signature request the enclave will: parse the transaction and compute
its digest (``shardkeep.chains``), verify the approvals against the wallet's
authenticators (``enclave.policy.authenticators``), and evaluate the policy
set (``enclave.policy.engine``: facts, then every CEL condition). Measured
here, in one process, over a policy set of eight policies (an EVM
allow-list with a cap, a two-admin rule above it, a denied ERC-20
``approve`` selector, a chain-id deny, a Solana allow-list with a total cap
and a System-only rule, raw digests and PSBTs, and a catch-all deny of
exports).
Goal: under 1 ms per signature for parsing and evaluation together.

Then PSBTs of 1, 10 and 100 inputs: one input's sighash, every input's, and
every input's signature request through the enclave's gate (each request
carries the whole PSBT): linear in the inputs, not quadratic.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.util import measure
from client.chains.ethereum import Eip1559Transaction
from client.chains.solana import compile_message, sol_transfer
from client.sdk.approvals import ApiKey, SoftwarePasskey
from enclave.policy.authenticators import SignCounters, verified_approvers
from enclave.policy.engine import PolicyEngine
from enclave.policy.facts import Activity
from enclave.policy.gate import activity_of
from shardkeep.approvals import Approval, activity_hash, approval_challenge
from shardkeep.chains import base58, evm, solana
from shardkeep.chains.bitcoin_tx import OutPoint, Transaction, TxIn, TxOut
from shardkeep.chains.psbt import Psbt, PsbtMap, parse_psbt
from shardkeep.policyset import Consensus, Policy, PolicySet
from shardkeep.v1 import ceremony_pb2

RUNS = 500
PSBT_SIZES = (1, 10, 100)
FRIEND = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
PAYER, FRIEND_SOL = bytes([1]) * 32, bytes([2]) * 32
SYSTEM = "11111111111111111111111111111111"


def _policy_set(keys: list[ApiKey], passkey: SoftwarePasskey) -> PolicySet:
    friend_sol = base58.encode(FRIEND_SOL)
    evm_kind = "activity.kind == 'SIGN_EVM_TRANSACTION'"
    sol_kind = "activity.kind == 'SIGN_SOLANA_MESSAGE'"
    return PolicySet(
        "bench",
        0,
        1,
        (*(k.authenticator("admin") for k in keys), passkey.authenticator()),
        (
            Policy("no-approve", "deny", f"{evm_kind} && eth.tx.selector == '0x095ea7b3'"),
            Policy("mainnet-only", "deny", f"{evm_kind} && eth.tx.chain_id != 1"),
            Policy("no-export", "deny", "activity.kind == 'EXPORT'"),
            Policy(
                "evm-friends",
                "allow",
                f"{evm_kind} && eth.tx.to in ['0x{FRIEND.hex()}', '0x{'11' * 20}'] "
                "&& eth.tx.value_gwei <= 2000000000 && eth.tx.max_fee_gwei <= 10000000",
                Consensus(1),
            ),
            Policy(
                "evm-big",
                "allow",
                f"{evm_kind} && eth.tx.value_gwei > 2000000000",
                Consensus(2, "admin"),
            ),
            Policy(
                "sol-friends",
                "allow",
                f"{sol_kind} && solana.tx.transfers.all(t, t.to == '{friend_sol}') "
                "&& solana.tx.transfer_total <= 5000000000",
                Consensus(1),
            ),
            Policy(
                "sol-system-only",
                "deny",
                f"{sol_kind} && !solana.tx.program_ids.all(p, p == '{SYSTEM}')",
            ),
            Policy(
                "raw",
                "allow",
                "activity.kind in ['SIGN_RAW_DIGEST', 'SIGN_PSBT']",
                Consensus(2, "admin"),
            ),
        ),
    )


def main() -> None:
    keys = [ApiKey.generate("alice", "ed25519"), ApiKey.generate("bob", "p256")]
    passkey = SoftwarePasskey("carol", "wallet.example", "https://wallet.example")
    policy_set = _policy_set(keys, passkey)
    engine = PolicyEngine(policy_set)
    eth_raw = Eip1559Transaction(
        chain_id=1, nonce=7, max_priority_fee_per_gas=10**9, max_fee_per_gas=30 * 10**9,
        gas=21_000, to=FRIEND, value=10**18,
    ).signing_payload()  # fmt: skip
    sol_raw = compile_message(PAYER, [sol_transfer(PAYER, FRIEND_SOL, 10**9)], bytes(32))
    request = activity_hash(b"\x00" * 400)  # a CeremonyRequest is a few hundred bytes
    challenge = approval_challenge(request, engine.hash)
    approvals: dict[str, Approval] = {k.kind: k.approve(challenge) for k in keys}

    def eth() -> object:
        tx = evm.parse_transaction(eth_raw)
        return engine.decide(Activity("SIGN_EVM_TRANSACTION", "bench", "ecdsa-secp256k1", evm=tx),
                             ["carol"])  # fmt: skip

    def sol() -> object:
        msg = solana.parse_message(sol_raw)
        return engine.decide(Activity("SIGN_SOLANA_MESSAGE", "bench", "ed25519", solana=msg),
                             ["carol"])  # fmt: skip

    def approval(kind: str) -> Callable[[], object]:
        return lambda: verified_approvers(policy_set, [approvals[kind]], request, SignCounters())

    def passkey_approval() -> object:
        return verified_approvers(policy_set, [passkey.approve(challenge)], request, counters)

    psbt_raw = _psbt(10)

    def btc() -> object:
        psbt = parse_psbt(psbt_raw)
        psbt.key_path_sighash(0)  # the enclave recomputes the input's BIP-341 sighash
        return engine.decide(
            Activity("SIGN_PSBT", "bench", "bip340", psbt=psbt, psbt_input=0), ["alice", "bob"]
        )

    counters = SignCounters()
    print("Policy checks per signature, one process (goal: parse + evaluate < 1 ms):")
    print(f"  EVM EIP-1559: parse + digest + evaluate 8 policies : {measure(eth, RUNS, 20)}")
    print(f"  Solana legacy: parse + evaluate 8 policies         : {measure(sol, RUNS, 20)}")
    print(f"  PSBT, 10 inputs: parse + sighash + evaluate        : {measure(btc, RUNS, 20)}")
    print(f"  evaluate only (EVM, parsed once)                   : "
          f"{measure(_decide_only(engine, eth_raw), RUNS, 20)}")  # fmt: skip
    print(f"  approval: Ed25519 API key                          : "
          f"{measure(approval('ed25519'), RUNS, 20)}")  # fmt: skip
    print(f"  approval: P-256 API key                            : "
          f"{measure(approval('p256'), RUNS, 20)}")  # fmt: skip
    print(
        "  approval: passkey (sign in the client + verify)    : "
        f"{measure(passkey_approval, RUNS, 20)}"
    )
    print("PSBT parse and BIP-341 sighashes (the per-transaction hashes are computed once):")
    for n in PSBT_SIZES:
        raw = _psbt(n)
        print(f"  {n:>3} inputs: parse + one input's sighash            : "
              f"{measure(_first_sighash(raw), 50, 2)}")  # fmt: skip
        print(f"  {n:>3} inputs: parse + every input's sighash          : "
              f"{measure(_every_sighash(raw), 50, 2)}")  # fmt: skip
        print(f"  {n:>3} inputs: every input through the enclave's gate : "
              f"{measure(_gate_requests(n, 21), 20, 1)}")  # fmt: skip


def _first_sighash(raw: bytes) -> Callable[[], object]:
    return lambda: parse_psbt(raw).key_path_sighash(0)


def _every_sighash(raw: bytes) -> Callable[[], object]:
    def sign_every_input() -> object:
        psbt = parse_psbt(raw)
        return [psbt.key_path_sighash(i) for i in range(len(psbt.inputs))]

    return sign_every_input


def _gate_requests(inputs: int, runs: int) -> Callable[[], object]:
    """One signature request per input, each with the whole PSBT, as the enclave gets them.

    Every run signs a PSBT of its own (another locktime), so no run finds the
    previous one's parse in the gate's cache; the requests are built beforehand.
    """
    batches = []
    for locktime in range(runs):
        raw = _psbt(inputs, locktime)
        psbt = parse_psbt(raw)
        batches.append([
            ceremony_pb2.CeremonyRequest(
                kind=ceremony_pb2.CEREMONY_KIND_SIGN, scheme=ceremony_pb2.SCHEME_BIP340,
                wallet_id="bench", digest=psbt.key_path_sighash(i), psbt=raw, psbt_input=i,
            )
            for i in range(inputs)
        ])  # fmt: skip
    pending = iter(batches)
    return lambda: [activity_of(request) for request in next(pending)]


def _psbt(inputs: int, locktime: int = 0) -> bytes:
    """A PSBT spending ``inputs`` P2TR outputs (witness UTXOs) to two outputs."""
    script = b"\x51\x20" + b"\x22" * 32
    tx = Transaction(
        2,
        tuple(TxIn(OutPoint(i.to_bytes(32, "big"), 0)) for i in range(inputs)),
        (TxOut(50_000, script), TxOut(40_000, script)),
        locktime,
    )
    utxo = (100_000).to_bytes(8, "little") + bytes([len(script)]) + script
    return Psbt(
        PsbtMap("global", ((b"\x00", tx.serialize()),)),
        tx,
        tuple(PsbtMap("input", ((b"\x01", utxo),)) for _ in range(inputs)),
        (PsbtMap("output", ()), PsbtMap("output", ())),
    ).serialize()


def _decide_only(engine: PolicyEngine, raw: bytes) -> Callable[[], object]:
    activity = Activity("SIGN_EVM_TRANSACTION", "bench", "ecdsa-secp256k1",
                        evm=evm.parse_transaction(raw))  # fmt: skip
    return lambda: engine.decide(activity, ["carol"])


if __name__ == "__main__":
    main()
