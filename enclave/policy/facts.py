"""What a condition sees: the activity and its parsed transaction as CEL values.

Roots (docs/security/policy.md lists every field): ``activity``, ``eth``
(``eth.tx`` for an EVM transaction, ``eth.message`` for an EIP-191 or
EIP-712 message), ``solana`` (``solana.tx``) and ``btc`` (``btc.tx`` for a
PSBT input). A root whose chain the activity is not about
is an empty map, so ``has(eth.tx)`` is false there and
``activity.kind == 'SIGN_EVM_TRANSACTION' && eth.tx.value_gwei < 10`` is
simply false for a Solana message (CEL's ``&&`` absorbs the error of the
missing field when the left side is false).

Every number is below 2^63 (the CEL runtime would turn a larger Python int
into a double). Wei amounts appear in gwei rounded *up*, so a cap such as
``value_gwei <= 10`` is never undercut by sub-gwei dust, and exactly as a
decimal string; a transaction whose amounts do not fit is refused
(``FactsError``), as is a Solana amount of 2^63 lamports or more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from shardkeep.chains.base58 import encode as b58encode
from shardkeep.chains.bech32 import AddressError, segwit_address
from shardkeep.chains.eth_messages import TypedData
from shardkeep.chains.evm import EvmTransaction
from shardkeep.chains.psbt import Psbt
from shardkeep.chains.solana import SolanaMessage
from tss.errors import InputError

__all__ = ["FactsError", "Activity", "facts", "ACTIVITY_KINDS", "RAW_KINDS"]

ACTIVITY_KINDS: Final = frozenset(
    {
        "SIGN_EVM_TRANSACTION",
        "SIGN_SOLANA_MESSAGE",
        "SIGN_PSBT",
        "SIGN_EIP191",
        "SIGN_EIP712",
        "SIGN_RAW_DIGEST",
        "SIGN_RAW_MESSAGE",
        "RESHARE",
        "REFRESH",
        "EXPORT",
        "SET_POLICY",
    }
)
RAW_KINDS: Final = frozenset({"SIGN_RAW_DIGEST", "SIGN_RAW_MESSAGE"})
"""What the enclave cannot parse (a bare digest, an Ed25519 message not declared a
Solana message): allowed only by an allow policy whose condition names the kind."""
_INT_BOUND: Final = 1 << 63
_GWEI: Final = 10**9


class FactsError(InputError):
    """An activity a policy cannot be evaluated over (the field is named)."""


@dataclass(frozen=True)
class Activity:
    """What is asked of the server share, with the transaction the enclave parsed.

    Attributes:
        kind: one of ``ACTIVITY_KINDS``.
        wallet_id, scheme: the wallet and its scheme (``ecdsa-secp256k1``, ``bip340``, ``ed25519``).
        derivation_path: non-hardened BIP-32 indices of the signing key.
        evm, solana: the parsed transaction, for the matching kinds.
        psbt, psbt_input: the parsed PSBT and the input signed (``SIGN_PSBT``).
        personal_message: the EIP-191 message (``SIGN_EIP191``).
        typed_data: the EIP-712 typed data (``SIGN_EIP712``).
    """

    kind: str
    wallet_id: str
    scheme: str
    derivation_path: tuple[int, ...] = ()
    evm: EvmTransaction | None = None
    solana: SolanaMessage | None = None
    psbt: Psbt | None = None
    psbt_input: int = 0
    personal_message: bytes | None = None
    typed_data: TypedData | None = None


def _int(value: int, field: str) -> int:
    if not 0 <= value < _INT_BOUND:
        raise FactsError(f"{field} does not fit a policy's 64-bit integers")
    return value


def _gwei_up(wei: int, field: str) -> int:
    return _int(-(-wei // _GWEI), field)


def _evm(tx: EvmTransaction) -> dict[str, object]:
    return {
        "type": tx.tx_type,
        "chain_id": _int(tx.chain_id, "eth.tx.chain_id"),
        "nonce": _int(tx.nonce, "eth.tx.nonce"),
        "to": "0x" + tx.to.hex() if tx.to is not None else "",
        "value_wei": str(tx.value),
        "value_gwei": _gwei_up(tx.value, "eth.tx.value_gwei"),
        "selector": "0x" + tx.selector.hex() if tx.selector else "",
        "data_size": len(tx.data),
        "gas": _int(tx.gas, "eth.tx.gas"),
        "max_fee_per_gas_gwei": _gwei_up(tx.max_fee_per_gas, "eth.tx.max_fee_per_gas_gwei"),
        "max_priority_fee_per_gas_gwei": _gwei_up(
            tx.max_priority_fee_per_gas, "eth.tx.max_priority_fee_per_gas_gwei"
        ),
        "max_fee_gwei": _gwei_up(tx.gas * tx.max_fee_per_gas, "eth.tx.max_fee_gwei"),
    }


def _solana(message: SolanaMessage) -> dict[str, object]:
    transfers = message.transfers
    version: Literal["legacy", "0"] = "legacy" if message.version == "legacy" else "0"
    return {
        "version": version,
        "fee_payer": b58encode(message.fee_payer),
        "signers": [b58encode(k) for k in message.signers],
        "program_ids": [b58encode(p) for p in message.program_ids],
        "system_instructions": list(message.system_instruction_tags()),
        "transfers": [
            {
                "from": b58encode(t.source),
                "to": b58encode(t.destination),
                "lamports": _int(t.lamports, "solana.tx.transfers.lamports"),
            }
            for t in transfers
        ],
        "transfer_total": _int(sum(t.lamports for t in transfers), "solana.tx.transfer_total"),
    }


def _address(script: bytes, hrp: str) -> str:
    # A witness program (BIP-141: OP_0 or OP_1..OP_16, then a 2-40 byte push) as
    # its BIP-173/350 address; any other script has none ("").
    if len(script) < 4 or script[1] != len(script) - 2:
        return ""
    version = 0 if script[0] == 0 else script[0] - 0x50 if 0x51 <= script[0] <= 0x60 else -1
    if version < 0:
        return ""
    try:
        return segwit_address(hrp, version, script[2:])
    except AddressError:
        return ""


def _btc(psbt: Psbt, index: int) -> dict[str, object]:
    if not 0 <= index < len(psbt.inputs):
        raise FactsError(f"btc.tx: the PSBT has no input {index}")
    spent = sum(o.value for o in psbt.spent_outputs())
    paid = sum(o.value for o in psbt.tx.outputs)
    if paid > spent:
        raise FactsError("btc.tx.fee: the outputs pay more than the inputs spend")
    return {
        "input": index,
        "inputs": len(psbt.inputs),
        "sighash_type": psbt.taproot_input(index).sighash_type,
        "outputs": [
            {
                "address": _address(o.script_pubkey, "bc"),
                "testnet_address": _address(o.script_pubkey, "tb"),
                "script": o.script_pubkey.hex(),
                "amount": o.value,
            }
            for o in psbt.tx.outputs
        ],
        "output_total": paid,
        "fee": spent - paid,
    }


def _domain_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return _int(value, "eth.message.domain.chain_id")
    if isinstance(value, str):
        try:
            return _int(int(value, 0), "eth.message.domain.chain_id")
        except ValueError:
            pass
    return -1


def _eth_message(activity: Activity) -> dict[str, object]:
    # One shape for both kinds (the other kind's fields empty), so a condition
    # on either evaluates on both instead of failing.
    if activity.personal_message is not None:
        text = activity.personal_message
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            decoded = ""
        return {
            "kind": "eip191", "size": len(text), "text": decoded, "primary_type": "",
            "domain": {"name": "", "version": "", "chain_id": -1, "verifying_contract": ""},
        }  # fmt: skip
    assert activity.typed_data is not None
    domain = activity.typed_data.domain
    contract = domain.get("verifyingContract", "")
    return {
        "kind": "eip712",
        "size": 0,
        "text": "",
        "primary_type": activity.typed_data.primary_type,
        "domain": {
            "name": str(domain.get("name", "")),
            "version": str(domain.get("version", "")),
            "chain_id": _domain_int(domain.get("chainId", -1)),
            "verifying_contract": contract.lower() if isinstance(contract, str) else "",
        },
    }


def _path(path: Sequence[int]) -> list[int]:
    if any(not 0 <= i < 2**31 for i in path):
        raise FactsError("activity.derivation_path holds non-hardened indices only")
    return list(path)


def facts(activity: Activity) -> dict[str, object]:
    """The CEL variables a condition is evaluated over.

    Raises:
        FactsError: an unknown kind, a kind without its transaction (or with
            another chain's), or a number a policy cannot represent.
    """
    if activity.kind not in ACTIVITY_KINDS:
        raise FactsError(f"unknown activity kind {activity.kind!r}")
    carried = {
        "SIGN_EVM_TRANSACTION": activity.evm is not None,
        "SIGN_SOLANA_MESSAGE": activity.solana is not None,
        "SIGN_PSBT": activity.psbt is not None,
        "SIGN_EIP191": activity.personal_message is not None,
        "SIGN_EIP712": activity.typed_data is not None,
    }
    # Exactly the payload its kind names (none for the others).
    if any(has != (kind == activity.kind) for kind, has in carried.items()):
        raise FactsError(f"a {activity.kind} activity carries the wrong transaction")
    eth: dict[str, object] = {}
    if activity.evm is not None:
        eth["tx"] = _evm(activity.evm)
    if activity.personal_message is not None or activity.typed_data is not None:
        eth["message"] = _eth_message(activity)
    return {
        "activity": {
            "kind": activity.kind,
            "wallet": activity.wallet_id,
            "scheme": activity.scheme,
            "derivation_path": _path(activity.derivation_path),
        },
        "eth": eth,
        "solana": {"tx": _solana(activity.solana)} if activity.solana is not None else {},
        "btc": {"tx": _btc(activity.psbt, activity.psbt_input)}
        if activity.psbt is not None
        else {},
    }
