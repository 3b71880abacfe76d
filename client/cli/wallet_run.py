"""The handlers of ``shardkeep wallet ...`` (the parser is ``client.cli.wallet``).

Each handler is a coroutine taking a :class:`_Context` and returning the
result as a dict, printed as ``key: value`` lines or, with ``--json``, as JSON.
Failures become exit statuses through one table (``_FAILURES``) and a message
on stderr that never carries key material.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from client.chains import solana
from client.chains.bitcoin import key_path_address, wallet_output_key
from client.chains.bitcoin_psbt import sign_psbt
from client.chains.descriptors import wallet_descriptors
from client.chains.ethereum import (
    address_of,
    checksum_address,
    wallet_address,
    wallet_public_key,
)
from client.chains.ethereum_messages import message_signature
from client.chains.xpub import fingerprint, wallet_xpub
from client.cli.connection import resolve_connection, transport_from_args
from client.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from client.cli.passcode import NEW_PASSCODE_ENV, PASSCODE_ENV, PasscodeError, read_passcode
from client.cli.state import (
    DamagedWallet,
    LoadedWallet,
    StateKeyStore,
    WalletDescription,
    change_passcode,
    list_wallets,
    load_description,
    load_pending_description,
    load_wallet,
    save_wallet,
    wallet_dir,
)
from client.errors import InvalidInput, WalletError
from client.sdk.approvals import ApiKey
from client.sdk.attestation import AttestationError
from client.sdk.backups import backup_share, offline_export_files, recover_device, restore_wallet
from client.sdk.listing import list_host_wallets
from client.sdk.party import PartyIdentity
from client.sdk.policy_files import PasskeyFile, load_approver, load_policy_file
from client.sdk.transport import Transport
from client.sdk.wallet import KeyChangeUndecided, SignedPayload, Wallet, WalletClient
from client.storage.errors import StorageError
from client.storage.shares import DEFAULT_ARGON2_PARAMS, Argon2Params, insecure_test_params
from shardkeep import eventloop, lifecycle
from shardkeep.chains.bech32 import NETWORK_HRPS, script_address
from shardkeep.chains.eth_messages import (
    MAX_DOCUMENT_BYTES,
    TypedData,
    load_typed_data,
    personal_message_digest,
)
from shardkeep.chains.psbt import MAGIC as PSBT_MAGIC
from shardkeep.chains.psbt import MAX_PSBT_BYTES, Psbt, PsbtError, parse_psbt
from tss.bip32 import derive_public
from tss.errors import InputError, InternalError, ProtocolError, ShardkeepError
from tss.keyshare import Scheme
from tss.signing import NO_OPTIONS, RecoverableSignature, SigningOptions
from tss.taproot import taproot_output_key

__all__ = [
    # Functions
    "run_command",
    # Exceptions
    "UsageError",
]

SCHEME_NAMES: Final[dict[str, Scheme]] = {
    "ecdsa": "ecdsa-secp256k1",
    "ecdsa-secp256k1": "ecdsa-secp256k1",
    "bip340": "bip340",
    "schnorr": "bip340",
    "ed25519": "ed25519",
    "solana": "ed25519",
}
ED25519_EXPORT_NOTE: Final = (
    "an ed25519 keyring holds a scalar, never a seed (SHA-512 is one-way), so the file holds"
    " the 64-byte RFC 8032 expanded secret (scalar || nonce prefix): it signs, but wallets"
    " that import only seeds or Solana keypairs cannot take it"
)


class UsageError(Exception):
    """Bad command-line input detected by a handler (exit status 2)."""


### Running a command


class _Progress:
    """One status line on stderr: redrawn in place on a terminal, else a line per change."""

    def __init__(self, err: TextIO, enabled: bool) -> None:
        self._err = err
        self._enabled = enabled
        self._tty = enabled and err.isatty()
        self._stage = ""
        self._last = ""

    def stage(self, text: str) -> None:
        self._stage = text
        self(text and "starting")

    def __call__(self, text: str) -> None:
        line = f"{self._stage}: {text}" if self._stage else text
        if not self._enabled or line == self._last:
            return
        self._last = line
        if self._tty:
            self._err.write(f"\r\x1b[2K{line}")
        else:
            self._err.write(line + "\n")
        self._err.flush()

    def close(self) -> None:
        if self._tty and self._last:
            self._err.write("\n")
            self._err.flush()


class _Context:
    """What a wallet handler needs: arguments, passcode, KDF choice, progress."""

    def __init__(self, args: argparse.Namespace, err: TextIO, passcode: str | None) -> None:
        self.args = args
        self.progress = _Progress(err, not args.quiet)
        self._passcode = passcode
        self.weak = bool(args.insecure_weak_kdf)
        self.params: Argon2Params = insecure_test_params() if self.weak else DEFAULT_ARGON2_PARAMS
        self._transport: Transport | None = None

    @property
    def passcode(self) -> str:
        if self._passcode is None:
            raise UsageError("no passcode")
        return self._passcode

    def transport(self) -> Transport:
        """The connection settings, resolved once (flags, environment, config file)."""
        if self._transport is None:
            resolve_connection(self.args)
            self._transport = transport_from_args(self.args)
        return self._transport

    def client(self) -> WalletClient:
        args = self.args
        transport = self.transport()
        missing = [
            f"--{name.replace('_', '-')}"
            for name in ("host", "relay", "coordinator_key")
            if not getattr(args, name)
        ]
        if missing:
            raise UsageError(f"missing {', '.join(missing)} (or their SHARDKEEP_* variables)")
        key = load_pem_private_key(args.coordinator_key.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise UsageError("--coordinator-key is not an Ed25519 private key")
        expected: dict[int, bytes] = {}
        for index, value in args.pcr:
            if index in expected:
                raise UsageError(f"--pcr {index} given twice")
            expected[index] = value
        return WalletClient(
            args.host,
            args.relay,
            key,
            root_certificate=args.root.read_bytes() if args.root is not None else None,
            expected_pcrs=expected or None,
            allow_debug=args.allow_debug,
            timeout=args.timeout,
            transport=transport,
        )

    def store(self) -> StateKeyStore:
        """The state directory as the SDK's key store (pending shares of key changes)."""
        return StateKeyStore(
            self.args.state, self.passcode, self.params,
            insecure_allow_weak_kdf=self.weak,
        )  # fmt: skip

    def host_channel(self) -> grpc.aio.Channel:
        transport = self.transport()
        if not self.args.host:
            raise UsageError("missing --host (or SHARDKEEP_HOST, or host in the config file)")
        return transport.host_channel(self.args.host)


Handler = Callable[[_Context], Coroutine[Any, Any, dict[str, Any]]]
# Which passcode a command reads before it runs: none, the wallet's, a new one, or the
# wallet's only with --path (a child key needs the chain code inside the shares).
PasscodeUse = Literal["none", "existing", "new", "with-path"]

# Failures -> exit status, most specific first (one table).
_FAILURES: Final[tuple[tuple[type[BaseException], int], ...]] = (
    (UsageError, EXIT_USAGE),
    (PasscodeError, EXIT_USAGE),
    (AttestationError, EXIT_FAILED),
    (StorageError, EXIT_FAILED),  # wrong passcode, damaged or mismatched files
    (InvalidInput, EXIT_USAGE),  # a bad argument the SDK refused
    (WalletError, EXIT_FAILED),
    (ProtocolError, EXIT_FAILED),
    (InputError, EXIT_USAGE),
    (ShardkeepError, EXIT_FAILED),
    (TimeoutError, EXIT_FAILED),  # an OSError, but no usage error
    (FileNotFoundError, EXIT_USAGE),
    (OSError, EXIT_USAGE),
    (ValueError, EXIT_USAGE),  # e.g. a malformed PEM
    (grpc.aio.AioRpcError, EXIT_FAILED),
)


def run_command(command: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run one ``wallet`` subcommand; return its exit status.

    Arguments:
        command: "create", "sign", "backup", "recover", "list", "refresh",
            "reshare", "export" or "import".
        args: the parsed arguments.
        out, err: where the result and the progress and errors go.

    Returns:
        0 success, 1 the operation failed, 2 bad usage or input.
    """
    body, passcode_use = _HANDLERS[command]
    try:
        _check_arguments(command, args)  # before any prompt, file or network call
        if passcode_use == "with-path":
            passcode_use = "existing" if args.path else "none"
        passcode = (
            None
            if passcode_use == "none"
            else read_passcode(
                args.passcode_file, "--passcode-file", PASSCODE_ENV, "passcode",
                new=passcode_use == "new",
            )
        )  # fmt: skip
    except (UsageError, PasscodeError, InputError, OSError) as e:
        print(f"shardkeep: {_describe(e)}", file=err)
        return EXIT_USAGE
    context = _Context(args, err, passcode)
    try:
        result = eventloop.run(body(context))
    except BaseException as e:
        context.progress.close()
        for kind, status in _FAILURES:
            if isinstance(e, kind):
                print(f"shardkeep: {_describe(e)}", file=err)
                return status
        raise
    context.progress.close()
    _emit(out, result, as_json=args.json)
    return EXIT_OK


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out (see --timeout)"
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    if isinstance(error, OSError) and error.filename:
        return f"cannot read {error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


### Checks that need no passcode and no network

# Commands whose WALLET must already be in the state directory.
_EXISTING_WALLET: Final = frozenset(
    {
        "sign",
        "sign-message",
        "sign-typed-data",
        "backup",
        "refresh",
        "reshare",
        "export",
        "passcode",
    }
)


def _check_arguments(command: str, args: argparse.Namespace) -> None:
    """Refuse bad arguments before any prompt, decryption or network call.

    Raises:
        UsageError: an unknown wallet, a threshold the keyring cannot have, or
            options that do not go together.
        InputError: a threshold of 1 with the server share.
    """
    # Policy and key files are read now: a typo fails before any ceremony.
    for option in ("policy", "new_policy"):
        if getattr(args, option, None) is not None:
            load_policy_file(getattr(args, option))
    for path in getattr(args, "approver", []):
        load_approver(path)
    if (
        command in ("create", "import", "recover")
        and args.allow_raw_digest
        and args.policy is not None
    ):
        raise UsageError(
            "--allow-raw-digest shapes the default policy; a policy file allows raw digests"
            " by an allow policy naming 'SIGN_RAW_DIGEST'"
        )
    wallet_id = getattr(args, "wallet_id", None)
    if command == "export" and args.offline:
        if wallet_id is not None or args.without_server:
            raise UsageError("--offline takes share files only (no WALLET, no --without-server)")
        if args.pcr or args.allow_debug:
            raise UsageError("--offline talks to no enclave: --pcr and --allow-debug do not apply")
        return
    if command in _EXISTING_WALLET and wallet_id is not None:
        _require_wallet(args.state, wallet_id)
    if command in ("sign-message", "sign-typed-data"):
        if load_description(args.state, args.wallet_id).scheme != "ecdsa-secp256k1":
            raise UsageError(f"{command} needs an ecdsa wallet; {wallet_id} is not one")
        if command == "sign-typed-data":
            _read_typed_data(args.typed_data_file)
        else:
            _message_bytes(args)
    if command in ("address", "xpub") and load_description(args.state, args.wallet_id).scheme == (
        "ed25519"
    ):
        # Ed25519 keys have no BIP-32 public derivation (and so no xpub).
        if command == "xpub":
            raise UsageError("an ed25519 wallet has no BIP-32 extended public key")
        if args.path:
            raise UsageError("--path is for bip340 and ecdsa wallets")
    if command == "sign-psbt":
        if load_description(args.state, args.wallet_id).scheme != "bip340":
            raise UsageError(f"sign-psbt needs a bip340 wallet; {args.wallet_id} is not one")
        _read_psbt(args.psbt_file).fee()
    if command in ("create", "import"):
        _check_new_wallet(args)
    elif command == "reshare":
        description = load_description(args.state, args.wallet_id)
        count = args.local_parties if args.local_parties is not None else len(description.local)
        if count < 1:
            raise UsageError("--local-parties must be at least 1")
        with_server = description.server_index is not None and not args.without_server
        threshold = args.threshold if args.threshold is not None else description.threshold
        _check_threshold(threshold, count, with_server=with_server)
    elif command == "backup":
        if wallet_id is None and not args.all:
            raise UsageError("name the WALLET to back up, or give --all")
        if args.all and args.backup_id is not None:
            raise UsageError("--backup-id names one backup; it does not go with --all")


def _require_wallet(state: Path, wallet_id: str) -> None:
    """Refuse a wallet id the state directory does not hold, naming the way to see them."""
    directory = wallet_dir(state, wallet_id)
    if (
        not (directory / "wallet.json").exists()
        and load_pending_description(state, wallet_id) is None
    ):
        raise UsageError(f"no wallet {wallet_id} in {state} (see `shardkeep wallet list`)")


def _check_threshold(threshold: int, local_parties: int, *, with_server: bool) -> None:
    """A keyring of ``local_parties`` (+ the server share) can have ``threshold``."""
    parties = local_parties + (1 if with_server else 0)
    if with_server:
        lifecycle.check_server_threshold(threshold)
    elif threshold < 1:
        raise UsageError(f"--threshold {threshold}: a threshold is at least 1")
    if threshold > parties:
        raise UsageError(
            f"--threshold {threshold} exceeds the {parties} parties of the keyring "
            f"({local_parties} local{' + the server share' if with_server else ''})"
        )


def _emit(out: TextIO, result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True), file=out)
        return
    for key, value in result.items():
        shown = _plain(value)
        print(f"{key}:{'' if not shown or shown[0] == chr(10) else ' '}{shown}", file=out)


def _plain(value: Any) -> str:
    """A result value as text: lists comma-separated, records as ``k=v``, one per line."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        if any(isinstance(item, dict) for item in value):
            return "".join(f"\n  - {_plain(item)}" for item in value)
        return ", ".join(map(_plain, value))
    return str(value)


### Handlers


def _describe_wallet(wallet: Wallet) -> dict[str, Any]:
    info: dict[str, Any] = {
        "wallet_id": wallet.wallet_id,
        "scheme": wallet.scheme,
        "threshold": wallet.threshold,
        "parties": len(wallet.parties),
        "server_index": wallet.server_index,
        "local_parties": sorted(wallet.shares),
        "public_key": wallet.public_key.hex(),
        "epoch": wallet.epoch,
    }
    if wallet.scheme == "ecdsa-secp256k1":
        info["ethereum_address"] = wallet_address(wallet)
    elif wallet.scheme == "ed25519":
        info["solana_address"] = solana.address(wallet.public_key)
    else:
        info["taproot_output_key"] = wallet_output_key(wallet).hex()
    return info


def _check_new_wallet(args: argparse.Namespace) -> None:
    """Refuse a new wallet without local parties, with a threshold its keyring cannot have,
    or under an id the state already holds."""
    if args.local_parties < 1:
        raise UsageError("--local-parties must be at least 1")
    _check_threshold(args.threshold, args.local_parties, with_server=True)
    if args.wallet_id is None:
        return
    try:
        load_description(args.state, args.wallet_id)
    except FileNotFoundError:
        return
    raise UsageError(f"wallet {args.wallet_id} already exists in {args.state}")


async def _create(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    store = ctx.store()
    devices = [PartyIdentity.generate() for _ in range(args.local_parties)]
    async with ctx.client() as client:
        ctx.progress.stage("keygen")
        wallet = await client.create_wallet(
            SCHEME_NAMES[args.scheme], devices, threshold=args.threshold,
            wallet_id=args.wallet_id, store=store, progress=ctx.progress,
            policy_set=None if args.policy is None else load_policy_file(args.policy),
            allow_raw_digest=args.allow_raw_digest,
        )  # fmt: skip
    ctx.progress.stage("")
    return _describe_wallet(wallet)


async def _sign(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    loaded = await _settled_wallet(ctx, args.parties)
    wallet = loaded.wallet
    options = SigningOptions(
        derivation_path=args.path, taproot=args.taproot, taproot_merkle_root=args.merkle_root
    )
    if wallet.scheme != "bip340" and (args.taproot or args.merkle_root):
        raise UsageError("--taproot and --merkle-root are for bip340 wallets")
    if wallet.scheme == "ed25519":
        if args.message is None:
            raise UsageError("an ed25519 wallet signs the message itself: give --message")
        if args.path:
            raise UsageError("--path is for bip340 and ecdsa wallets")
        signature = await _sign_digest(ctx, loaded, args.message, options)
        if not isinstance(signature, bytes):
            raise InternalError("an ed25519 wallet returned a recoverable signature")
        return {
            "wallet_id": wallet.wallet_id,
            "message_bytes": len(args.message),
            "signature": signature.hex(),
            "public_key": wallet.public_key.hex(),
            "solana_address": solana.address(wallet.public_key),
        }
    if args.digest is None:
        raise UsageError(f"a {wallet.scheme} wallet signs a 32-byte digest: give --digest")
    signature = await _sign_digest(ctx, loaded, args.digest, options)
    result: dict[str, Any] = {"wallet_id": wallet.wallet_id, "digest": args.digest.hex()}
    if isinstance(signature, RecoverableSignature):
        result |= {
            "signature": signature.signature.hex(),
            "recovery_id": signature.recovery_id,
            "public_key": _child_key(wallet, args.path).hex(),
        }
    else:
        if args.taproot:
            key = wallet_output_key(wallet, derivation_path=args.path, merkle_root=args.merkle_root)
        else:
            key = _child_key(wallet, args.path)[1:]
        result |= {"signature": signature.hex(), "xonly_public_key": key.hex()}
    return result


async def _sign_digest(
    ctx: _Context,
    loaded: LoadedWallet,
    digest: bytes,
    options: SigningOptions,
    payload: SignedPayload | None = None,
) -> bytes | RecoverableSignature:
    """One signing ceremony of ``digest`` (for ed25519 the message itself); shares changed
    by a pair setup are saved."""
    args = ctx.args
    wallet = _with_policy(loaded.wallet, args)
    before = dict(wallet.shares)
    async with ctx.client() as client:
        ctx.progress.stage("sign")
        try:
            signature = await client.sign(
                wallet, digest, loaded.devices, options=options,
                with_server=not args.without_server, progress=ctx.progress,
                approvers=_approvers(args), payload=payload,
            )  # fmt: skip
        except BaseException:
            if wallet.scheme == "ecdsa-secp256k1":
                # A failed DKLs23 check burns the pair's OT setup inside the
                # share (tss.ecdsa.setup): keep that, so no pair is ever reused.
                _save_shares(ctx, wallet, loaded.devices)
            raise
    if any(wallet.shares[i] is not share for i, share in before.items()):
        _save_shares(ctx, wallet, loaded.devices)  # a pair setup with the server party ran
    return signature


async def _sign_solana(ctx: _Context) -> dict[str, Any]:
    """A Solana transaction of an ed25519 wallet: checked, signed, assembled."""
    args = ctx.args
    loaded = await _settled_wallet(ctx, args.parties)
    wallet = loaded.wallet
    if wallet.scheme != "ed25519":
        raise UsageError("sign-solana is for ed25519 wallets")
    if getattr(args, "path", ()):
        raise UsageError("--path is for bip340 and ecdsa wallets")
    solana.check_fee_payer(args.message, wallet.public_key)
    payload = SignedPayload(solana_message=True)
    signature = await _sign_digest(ctx, loaded, args.message, NO_OPTIONS, payload)
    if not isinstance(signature, bytes):
        raise InternalError("an ed25519 wallet returned a recoverable signature")
    transaction = solana.signed_transaction(args.message, wallet.public_key, lambda _: signature)
    return {
        "wallet_id": wallet.wallet_id,
        "solana_address": solana.address(wallet.public_key),
        "signature": solana.b58encode(signature),
        "transaction": base64.b64encode(transaction).decode("ascii"),
    }


async def _sign_ethereum_digest(
    ctx: _Context, digest: bytes, payload: SignedPayload
) -> dict[str, Any]:
    """Sign an EIP-191 or EIP-712 digest; ``r || s || v`` checked against the address."""
    args = ctx.args
    loaded = await _settled_wallet(ctx, args.parties)
    public_key = wallet_public_key(loaded.wallet, args.path)
    options = SigningOptions(derivation_path=args.path)
    signature = await _sign_digest(ctx, loaded, digest, options, payload)
    if not isinstance(signature, RecoverableSignature):
        raise InternalError("an ECDSA wallet returned no recovery id")
    try:
        signed = message_signature(digest, signature, public_key)
    except InputError as e:  # the signers verify it too: never expected
        raise InternalError(f"the wallet's signature is unusable: {e}") from e
    return {
        "wallet_id": loaded.wallet.wallet_id,
        "address": signed.address,
        "digest": "0x" + digest.hex(),
        "signature": "0x" + signed.signature.hex(),
    }


def _with_policy(wallet: Wallet, args: argparse.Namespace) -> Wallet:
    """The wallet with the policy set in force its approvals sign the hash of: ``--policy``'s
    if given, else the one its state keeps (registered, or learned from a policy change,
    also one settled by ``wallet resume``)."""
    if getattr(args, "policy", None) is None:
        if getattr(args, "approver", []) and wallet.policy_set is None:
            raise UsageError(
                "--approver needs a policy set: this wallet's state keeps none; pass --policy FILE"
            )
        return wallet
    policy_set = load_policy_file(args.policy)
    return replace(wallet, policy_set=replace(policy_set, wallet_id=wallet.wallet_id))


def _approvers(args: argparse.Namespace) -> list[ApiKey | PasskeyFile]:
    return [load_approver(path) for path in getattr(args, "approver", [])]


async def _sign_message(ctx: _Context) -> dict[str, Any]:
    message = _message_bytes(ctx.args)
    return await _sign_ethereum_digest(
        ctx, personal_message_digest(message), SignedPayload(eth_personal_message=message)
    )


async def _sign_typed_data(ctx: _Context) -> dict[str, Any]:
    typed = _read_typed_data(ctx.args.typed_data_file)
    document = ctx.args.typed_data_file.read_bytes()  # read and checked by _read_typed_data
    result = await _sign_ethereum_digest(
        ctx, typed.digest(), SignedPayload(eth_typed_data=document)
    )
    return result | {
        "primary_type": typed.primary_type,
        "domain_separator": "0x" + typed.domain_separator().hex(),
    }


_MAX_MESSAGE_BYTES: Final = 1 << 20


def _message_bytes(args: argparse.Namespace) -> bytes:
    if args.text is not None:
        return str(args.text).encode("utf-8", errors="strict")
    if args.hex is not None:
        return bytes(args.hex)
    path: Path = args.file
    with path.open("rb") as f:
        data = f.read(_MAX_MESSAGE_BYTES + 1)
    if len(data) > _MAX_MESSAGE_BYTES:
        raise UsageError(f"{path}: a message is at most {_MAX_MESSAGE_BYTES} bytes here")
    return data


def _read_typed_data(path: Path) -> TypedData:
    """The typed data in ``path``, its values checked (the digest is computed once here)."""
    with path.open("rb") as f:
        document = f.read(MAX_DOCUMENT_BYTES + 1)
    typed = load_typed_data(document)
    typed.digest()  # checks every value before any passcode or network call
    return typed


async def _sign_psbt(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    if args.out is not None and args.out.exists():
        raise UsageError(f"{args.out} exists; the signed PSBT goes only to a new file")
    psbt = _read_psbt(args.psbt_file)
    fee = psbt.fee()  # every spent output known, and no more paid out than spent
    loaded = await _settled_wallet(ctx, args.parties)
    wallet = _with_policy(loaded.wallet, args)
    before = dict(wallet.shares)
    async with ctx.client() as client:
        ctx.progress.stage("sign-psbt")
        signed = await sign_psbt(
            client, wallet, psbt, loaded.devices,
            with_server=not args.without_server, progress=ctx.progress,
            approvers=_approvers(args),
        )  # fmt: skip
    if any(wallet.shares[i] is not share for i, share in before.items()):
        _save_shares(ctx, wallet, loaded.devices)
    result_psbt = signed.psbt.finalized() if args.finalize else signed.psbt
    hrp = NETWORK_HRPS[args.network]
    result: dict[str, Any] = {
        "wallet_id": wallet.wallet_id,
        "signed_inputs": list(signed.signed),
        "skipped_inputs": {str(i): why for i, why in signed.skipped.items()},
        # What the signatures commit to, for the user to compare with their intent.
        "outputs": [
            {
                "address": script_address(o.script_pubkey, hrp),
                "script_pubkey": o.script_pubkey.hex(),
                "amount_sat": o.value,
            }
            for o in psbt.tx.outputs
        ],
        "fee_sat": fee,
    }
    if args.out is not None:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(result_psbt.to_base64() + "\n")
        result["out"] = str(args.out)
    else:
        result["psbt"] = result_psbt.to_base64()
    if args.finalize:
        try:
            result["transaction"] = result_psbt.extract().serialize().hex()
        except PsbtError:
            result["transaction"] = None  # another signer's inputs are not final yet
    return result


_MAX_PSBT_FILE_BYTES: Final = MAX_PSBT_BYTES * 4 // 3 + 4  # Base64 of the largest PSBT


def _read_psbt(path: Path) -> Psbt:
    """A PSBT file, binary or Base64 text, parsed and checked."""
    with path.open("rb") as f:
        data = f.read(_MAX_PSBT_FILE_BYTES + 1)
    if data.startswith(PSBT_MAGIC):
        return parse_psbt(data)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise UsageError(f"{path} holds neither a binary nor a Base64 PSBT") from None
    return parse_psbt(text)


async def _address(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    if args.path:
        wallet = (await _settled_wallet(ctx)).wallet
        scheme: str = wallet.scheme
        key = _child_key(wallet, args.path)
    else:  # the wallet's own key is public: wallet.json has it, no passcode needed
        description = load_description(args.state, args.wallet_id)
        scheme, key = description.scheme, description.public_key
    result: dict[str, Any] = {"wallet_id": args.wallet_id, "path": _path_text(args.path)}
    if scheme == "ed25519":
        return result | {"solana_address": solana.address(key), "public_key": key.hex()}
    if scheme == "ecdsa-secp256k1":
        return result | {
            "ethereum_address": checksum_address(address_of(key)),
            "public_key": key.hex(),
        }
    return result | {
        "network": args.network,
        "taproot_address": key_path_address(key[1:], args.network),
        "internal_key": key[1:].hex(),
        "output_key": taproot_output_key(key[1:]).output_key.hex(),
    }


async def _xpub(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    wallet = (await _settled_wallet(ctx)).wallet
    result = {
        "wallet_id": wallet.wallet_id,
        "path": _path_text(args.path),
        "xpub": wallet_xpub(wallet, args.network, args.path),
        "master_fingerprint": fingerprint(wallet.public_key).hex(),
    }
    if wallet.scheme == "bip340" and not args.path:
        receive, change = wallet_descriptors(wallet, args.network)
        result |= {"receive_descriptor": receive, "change_descriptor": change}
    return result


def _path_text(path: tuple[int, ...]) -> str:
    return "/".join(["m", *map(str, path)])


def _save_shares(ctx: _Context, wallet: Wallet, devices: dict[int, PartyIdentity]) -> None:
    save_wallet(
        ctx.args.state, wallet, devices, ctx.passcode, params=ctx.params,
        insecure_allow_weak_kdf=ctx.weak,
    )  # fmt: skip


def _child_key(wallet: Wallet, path: tuple[int, ...]) -> bytes:
    """The 33-byte key the signature verifies under (before any taproot tweak)."""
    if not path:
        return wallet.public_key
    chain_code = wallet.shares[min(wallet.shares)].chain_code
    return derive_public(wallet.public_key, chain_code, path).public_key


async def _backup(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    for wallet_id in [args.wallet_id] if args.wallet_id is not None else []:
        await _settle(ctx, wallet_id)  # back up the share that signs now
    if not args.all:
        description = load_description(args.state, args.wallet_id)
        if args.party is None and len(description.local) != 1:
            raise UsageError(f"choose --party among {list(description.local)}, or give --all")
        party = args.party if args.party is not None else description.local[0]
        (stored,) = await _back_up(ctx, {args.wallet_id: [party]}, args.backup_id)
        return stored
    entries = (
        [load_description(args.state, args.wallet_id)]
        if args.wallet_id is not None
        else list_wallets(args.state)
    )
    chosen = {d.wallet_id: list(d.local) for d in entries if isinstance(d, WalletDescription)}
    skipped = [str(d) for d in entries if isinstance(d, DamagedWallet)]
    return {"backups": await _back_up(ctx, chosen, None), "skipped_damaged": skipped}


async def _back_up(
    ctx: _Context, parties: dict[str, list[int]], backup_id: str | None
) -> list[dict[str, Any]]:
    """Store an encrypted backup of the given local parties of each wallet at the host.

    Every share is decrypted before the first upload, so a wrong passcode for any
    wallet stores nothing.
    """
    loaded = {}
    for wallet_id, chosen in parties.items():
        ctx.progress(f"{wallet_id}: decrypting the key shares")
        loaded[wallet_id] = load_wallet(
            ctx.args.state, wallet_id, ctx.passcode, parties=chosen,
            insecure_allow_weak_kdf=ctx.weak,
        )  # fmt: skip
    done = []
    async with ctx.host_channel() as channel:
        for wallet_id, chosen in parties.items():
            wallet, devices = loaded[wallet_id].wallet, loaded[wallet_id].devices
            for party in chosen:
                ctx.progress(f"{wallet_id}: storing the backup of party {party}")
                stored = await backup_share(
                    channel, wallet.shares[party], wallet_id=wallet_id,
                    passcode=ctx.passcode, identity=devices[party], owner_key=wallet.owner_key,
                    policy_set=wallet.policy_set, backup_id=backup_id, params=ctx.params,
                    insecure_allow_weak_kdf=ctx.weak,
                )  # fmt: skip
                done.append(
                    {
                        "wallet_id": stored.wallet_id,
                        "backup_id": stored.backup_id,
                        "party": stored.party_id,
                        "epoch": stored.epoch,
                        "bytes": len(stored.blob),
                    }
                )
    return done


async def _recover(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    passcode = ctx.passcode
    if not args.force:
        try:
            load_description(args.state, args.wallet_id)
        except FileNotFoundError:
            pass
        else:
            raise UsageError(f"wallet {args.wallet_id} is already in {args.state} (--force)")
    async with ctx.client() as client, ctx.host_channel() as channel:
        ctx.progress("fetching and decrypting the backup")
        recovered = await recover_device(
            channel, wallet_id=args.wallet_id, public_key=args.public_key, epoch=args.epoch,
            party_id=args.party, backup_id=args.backup_id, passcode=passcode,
            insecure_allow_weak_kdf=ctx.weak,
        )  # fmt: skip
        ctx.progress("checking the keyring against the host and the attestation")
        wallet = await restore_wallet(
            client, channel, recovered,
            policy_set=None if args.policy is None else load_policy_file(args.policy),
            allow_raw_digest=args.allow_raw_digest,
        )  # fmt: skip
    ctx.progress("encrypting the key share")
    save_wallet(
        args.state, wallet, {recovered.share.party_id: recovered.identity}, passcode,
        params=ctx.params, insecure_allow_weak_kdf=ctx.weak,
    )  # fmt: skip
    return _describe_wallet(wallet)


async def _list(ctx: _Context) -> dict[str, Any]:
    entries = list_wallets(ctx.args.state)
    wallets = [d for d in entries if isinstance(d, WalletDescription)]
    damaged = [d for d in entries if isinstance(d, DamagedWallet)]
    remote: list[dict[str, Any]] | None = None
    if ctx.args.remote:
        here = {d.wallet_id: "held" for d in wallets}
        here |= {d.wallet_id: "damaged" for d in damaged if d.wallet_id is not None}
        remote = await _list_remote(ctx, here)
    if not ctx.args.json:
        listed: dict[str, Any] = {
            "wallets": [d.wallet_id for d in wallets],
            "damaged": [str(d) for d in damaged],
        }
        if remote is not None:
            listed["remote"] = [f"{w['wallet_id']} (here: {w['local']})" for w in remote]
        return listed
    result: dict[str, Any] = {
        "wallets": [
            {
                "wallet_id": d.wallet_id,
                "scheme": d.scheme,
                "threshold": d.threshold,
                "parties": len(d.parties),
                "local_parties": list(d.local),
                "public_key": d.public_key.hex(),
                "epoch": d.epoch,
            }
            for d in wallets
        ],
        "damaged": [
            {"directory": d.directory, "wallet_id": d.wallet_id, "reason": d.reason}
            for d in damaged
        ],
    }
    if remote is not None:
        result["remote"] = remote
    return result


async def _list_remote(ctx: _Context, here: dict[str, str]) -> list[dict[str, Any]]:
    """The host's wallets, each with ``local``: "held" (a usable local party here),
    "damaged" (a damaged wallet directory here) or "none"."""
    ctx.progress("listing the host's wallets")
    async with ctx.host_channel() as channel:
        stored = await list_host_wallets(channel)
    return [
        {
            "wallet_id": w.wallet_id,
            "scheme": w.scheme,
            "threshold": w.threshold,
            "parties": len(w.party_ids),
            "public_key": w.public_key.hex(),
            "epoch": w.epoch,
            "local": here.get(w.wallet_id, "none"),
        }
        for w in stored
    ]


async def _passcode(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    new = read_passcode(
        args.new_passcode_file, "--new-passcode-file", NEW_PASSCODE_ENV, "new passcode", new=True
    )
    if new == ctx.passcode:
        raise UsageError("the new passcode is the old one")
    ctx.progress("re-encrypting the key shares")
    changed = change_passcode(
        args.state, args.wallet_id, ctx.passcode, new, params=ctx.params,
        insecure_allow_weak_kdf=ctx.weak,
    )  # fmt: skip
    # Backups at the host stay under the passcode they were made with.
    return {"wallet_id": args.wallet_id, "parties": list(changed), "backup_needed": True}


async def _refresh(ctx: _Context) -> dict[str, Any]:
    async with ctx.client() as client:
        loaded = await _settled_wallet(ctx)
        ctx.progress.stage("refresh")
        args = ctx.args
        wallet = await client.refresh(
            _with_policy(loaded.wallet, args), loaded.devices, store=ctx.store(),
            progress=ctx.progress, approvers=_approvers(args),
            new_policy_set=None if args.new_policy is None else load_policy_file(args.new_policy),
        )  # fmt: skip
    ctx.progress.stage("")
    return _describe_wallet(wallet) | {"backup_needed": True}


async def _reshare(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    async with ctx.client() as client:
        loaded = await _settled_wallet(ctx)
        old = loaded.wallet
        count = args.local_parties if args.local_parties is not None else len(old.shares)
        new_devices = [PartyIdentity.generate() for _ in range(count)]
        ctx.progress.stage("reshare")
        wallet = await client.reshare(
            old, loaded.devices, new_devices,
            threshold=args.threshold if args.threshold is not None else old.threshold,
            keep_server=not args.without_server, store=ctx.store(), progress=ctx.progress,
        )  # fmt: skip
    ctx.progress.stage("")
    return _describe_wallet(wallet) | {"backup_needed": True}


async def _resume(ctx: _Context) -> dict[str, Any]:
    outcome = await _settle(ctx, ctx.args.wallet_id)
    loaded = load_description(ctx.args.state, ctx.args.wallet_id)
    return {"wallet_id": ctx.args.wallet_id, "key_change": outcome, "epoch": loaded.epoch}


async def _settle(ctx: _Context, wallet_id: str) -> str:
    """Settle the wallet's interrupted key change, if any (automatic before every use).

    Returns:
        "none" (nothing pending), "committed", "discarded" or "undecided" (the
        host has not decided yet: the old epoch signs meanwhile).
    """
    if load_pending_description(ctx.args.state, wallet_id) is None:
        return "none"  # the common case: no passcode work, no connection
    store = ctx.store()
    pending = store.load_pending(wallet_id)
    if pending is None:
        return "none"
    try:
        committed = load_wallet(
            ctx.args.state, wallet_id, ctx.passcode, insecure_allow_weak_kdf=ctx.weak
        )
    except FileNotFoundError:
        committed = None  # an import that never committed
    ctx.progress(f"settling the interrupted key change of epoch {pending.epoch}")
    try:
        async with ctx.client() as client:
            settled = await client.resume(
                None if committed is None else committed.wallet, pending,
                devices=None if committed is None else committed.devices, store=store,
            )  # fmt: skip
    except KeyChangeUndecided as e:
        ctx.progress(f"{e}; the current epoch is used until then")
        return "undecided"
    return "committed" if settled is not None and settled.epoch == pending.epoch else "discarded"


async def _settled_wallet(ctx: _Context, parties: list[int] | None = None) -> LoadedWallet:
    """The wallet after settling an interrupted key change: what signs now."""
    await _settle(ctx, ctx.args.wallet_id)
    ctx.progress("decrypting the key shares")
    return load_wallet(
        ctx.args.state, ctx.args.wallet_id, ctx.passcode, parties=parties,
        insecure_allow_weak_kdf=ctx.weak,
    )  # fmt: skip


def _write_key(out: Path, private_key: bytes) -> None:
    # O_EXCL: never follow or replace a file that appeared meanwhile; 0600 from the start.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private_key.hex() + "\n")


async def _export(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    out: Path = args.out
    if out.exists():
        raise UsageError(f"{out} exists; the key goes only to a new file")
    if args.offline:
        return _export_offline(ctx)
    if args.wallet_id is None:
        raise UsageError("name the WALLET to export, or give --offline SHAREFILE...")
    if args.public_key is not None:
        raise UsageError("--public-key goes with --offline")
    loaded = await _settled_wallet(ctx)
    wallet = loaded.wallet
    with_server = not args.without_server and wallet.server_index is not None
    # A quorum of exactly t parties: the local ones first, the server share last.
    needed = wallet.threshold - (1 if with_server else 0)
    if len(loaded.devices) < needed:
        raise UsageError(f"an export needs {wallet.threshold} parties; not enough are local")
    quorum = {i: loaded.devices[i] for i in sorted(loaded.devices)[:needed]}
    recipient = PartyIdentity.generate()  # a one-time party that receives the key
    async with ctx.client() as client:
        ctx.progress.stage("export")
        private_key = await client.export(
            wallet, quorum, recipient, with_server=with_server, progress=ctx.progress
        )
    _write_key(out, private_key)
    result = {"wallet_id": wallet.wallet_id, "out": str(out), "public_key": wallet.public_key.hex()}
    if wallet.scheme == "ed25519":
        result["note"] = ED25519_EXPORT_NOTE
    return result


def _export_offline(ctx: _Context) -> dict[str, Any]:
    """The key from share files alone: no host, relay or server share is contacted."""
    args = ctx.args
    ctx.progress("decrypting the share files")
    exported = offline_export_files(
        args.offline, passcode=ctx.passcode, public_key=args.public_key,
        insecure_allow_weak_kdf=ctx.weak,
    )  # fmt: skip
    _write_key(args.out, exported.private_key)
    result = {
        "wallet_id": exported.wallet_id,
        "out": str(args.out),
        "public_key": exported.public_key.hex(),
        "parties": list(exported.parties),
    }
    if len(exported.private_key) == 64:  # only ed25519 exports the expanded secret
        result["note"] = ED25519_EXPORT_NOTE
    return result


_MAX_KEY_FILE_BYTES: Final = 1024


def _read_key_file(path: Path, scheme: Scheme) -> bytes:
    """A private key from a file: 32 bytes in hex (``0x`` and surrounding whitespace
    allowed); for ed25519 also a Solana keypair (64 bytes: seed || public key) in hex,
    base58, or the JSON array of byte values ``solana-keygen`` writes.

    Messages never quote the file: it holds a key.
    """
    with path.open("rb") as f:
        raw = f.read(_MAX_KEY_FILE_BYTES + 1)
    what = "a 32-byte seed or a 64-byte Solana keypair" if scheme == "ed25519" else "a 32-byte"
    problem = UsageError(f"{path} does not hold {what} private key")
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise problem
    try:
        text = raw.decode("ascii").strip()
        key = _decode_key_text(text, scheme)
    except (ValueError, solana.SolanaError):
        raise problem from None
    if len(key) != 32 and not (scheme == "ed25519" and len(key) == 64):
        raise problem
    return key


def _decode_key_text(text: str, scheme: Scheme) -> bytes:
    """Hex; for ed25519 also a JSON byte array or base58 (Solana's keypair formats)."""
    if scheme == "ed25519" and text.startswith("["):
        values = json.loads(text)
        if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
            raise ValueError("not a JSON byte array")
        return bytes(values)
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        if scheme != "ed25519":
            raise
    return solana.b58decode(text)


async def _import(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    store = ctx.store()  # the passcode first: refused before the key is read
    private_key = _read_key_file(args.key_file, SCHEME_NAMES[args.scheme])
    devices = [PartyIdentity.generate() for _ in range(args.local_parties)]
    async with ctx.client() as client:
        ctx.progress.stage("import")
        wallet = await client.import_key(
            SCHEME_NAMES[args.scheme], private_key, devices, threshold=args.threshold,
            wallet_id=args.wallet_id, store=store, progress=ctx.progress,
            policy_set=None if args.policy is None else load_policy_file(args.policy),
            allow_raw_digest=args.allow_raw_digest,
        )  # fmt: skip
    del private_key
    ctx.progress.stage("")
    return _describe_wallet(wallet) | {"backup_needed": True}


_HANDLERS: Final[dict[str, tuple[Handler, PasscodeUse]]] = {
    "refresh": (_refresh, "existing"),
    "reshare": (_reshare, "existing"),
    "export": (_export, "existing"),
    "import": (_import, "new"),
    "create": (_create, "new"),
    "sign": (_sign, "existing"),
    "sign-message": (_sign_message, "existing"),
    "sign-solana": (_sign_solana, "existing"),
    "sign-typed-data": (_sign_typed_data, "existing"),
    "sign-psbt": (_sign_psbt, "existing"),
    "address": (_address, "with-path"),
    "xpub": (_xpub, "existing"),
    "backup": (_backup, "existing"),
    "recover": (_recover, "existing"),
    "list": (_list, "none"),
    "passcode": (_passcode, "existing"),
    "resume": (_resume, "existing"),
}
