"""``shardkeep wallet ...``: wallets with the server share, from the command line.

Subcommands (each against a running host and relay, as the relay coordinator):

* ``create``  keygen among this machine's local parties and the server share;
* ``sign``    sign a 32-byte digest (BIP-32 path, BIP-341 taproot tweak);
* ``backup``  encrypt a local party's share and identity and store them at the host;
* ``recover`` fetch a backup from the host and restore the party on this machine;
* ``list``    the wallets in the state directory;
* ``reshare``, ``refresh``, ``export``: parsed, and refused with exit status 2
  until ``WalletClient`` offers them.

Connection options (or environment): ``--host`` (SHARDKEEP_HOST), ``--relay``
(SHARDKEEP_RELAY), ``--coordinator-key`` PEM Ed25519 key (SHARDKEEP_COORDINATOR_KEY),
``--root`` attestation root certificate, PEM or DER (SHARDKEEP_ROOT; default
the AWS Nitro root G1). Local state: ``--state DIR`` (SHARDKEEP_STATE; default
``~/.shardkeep``), laid out as ``client.cli_state`` says; the passcode that
encrypts it comes from ``--passcode-file`` or SHARDKEEP_PASSCODE (or a prompt
on a terminal). ``--json`` prints the result as JSON; progress goes to stderr.

Exit status: 0 success, 1 the operation failed (ceremony, host, attestation,
wrong passcode), 2 bad usage or input, or a command not available yet.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, TextIO

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from client.attestation import AttestationError
from client.backups import backup_share, recover_device, restore_wallet
from client.bitcoin import wallet_output_key
from client.cli_state import list_wallets, load_description, load_wallet, save_shares, save_wallet
from client.ethereum import wallet_address
from client.party import PartyIdentity
from client.storage import DEFAULT_ARGON2_PARAMS, Argon2Params, insecure_test_params
from client.storage_errors import StorageError
from client.wallet import Wallet, WalletClient, WalletError
from tss.bip32 import derive_public
from tss.errors import InputError, ProtocolError, ShardkeepError
from tss.keyshare import Scheme
from tss.signing import RecoverableSignature, SigningOptions

__all__ = [
    # Functions
    "add_wallet_commands",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
PASSCODE_ENV: Final = "SHARDKEEP_PASSCODE"
SCHEME_NAMES: Final[dict[str, Scheme]] = {
    "ecdsa": "ecdsa-secp256k1",
    "ecdsa-secp256k1": "ecdsa-secp256k1",
    "bip340": "bip340",
    "schnorr": "bip340",
}
LIFECYCLE: Final = ("reshare", "refresh", "export")


class UsageError(Exception):
    """Bad command-line input detected by a handler (exit status 2)."""


def add_wallet_commands(commands: Any) -> None:
    """Register ``wallet`` and its subcommands on the top-level subparsers.

    Arguments:
        commands: the ``add_subparsers()`` object of the ``shardkeep`` parser.
    """
    common = _common_options()
    wallet = commands.add_parser("wallet", help="wallets shared with the server share")
    actions = wallet.add_subparsers(dest="wallet_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", parents=[common], help="create a wallet (keygen with the server share)"
    )
    create.add_argument("--scheme", choices=sorted(SCHEME_NAMES), default="ecdsa")
    create.add_argument(
        "--local-parties", type=int, default=1, metavar="N",
        help="parties this machine holds (default 1; the server share is one more)",
    )  # fmt: skip
    create.add_argument("--threshold", type=int, default=2, metavar="T", help="default 2")
    create.add_argument("--wallet-id", help="the wallet's id (default: a fresh one)")
    create.set_defaults(handler=_handler(_create))

    sign = actions.add_parser("sign", parents=[common], help="sign a 32-byte digest")
    sign.add_argument("wallet_id", metavar="WALLET")
    sign.add_argument("--digest", required=True, type=_digest, metavar="HEX")
    sign.add_argument(
        "--party", type=int, action="append", dest="parties", metavar="I",
        help="local party index to sign with (repeatable; default: every local party)",
    )  # fmt: skip
    sign.add_argument(
        "--without-server", action="store_true",
        help="sign with local parties only (they must reach the threshold)",
    )  # fmt: skip
    sign.add_argument("--path", type=_path, default=(), help="BIP-32 non-hardened path, e.g. 0/7")
    sign.add_argument("--taproot", action="store_true", help="bip340: sign for the BIP-341 key")
    sign.add_argument("--merkle-root", type=_hex32, help="bip340: the taproot script tree root")
    sign.set_defaults(handler=_handler(_sign))

    backup = actions.add_parser(
        "backup", parents=[common],
        help="store a local party's share and identity, encrypted, at the host",
    )  # fmt: skip
    backup.add_argument("wallet_id", metavar="WALLET")
    backup.add_argument("--party", type=int, metavar="I", help="default: the only local party")
    backup.add_argument("--backup-id", help="default: derived from the encrypted blob")
    backup.set_defaults(handler=_handler(_backup))

    recover = actions.add_parser(
        "recover", parents=[common], help="restore a party on this machine from a host backup"
    )
    recover.add_argument("wallet_id", metavar="WALLET")
    recover.add_argument(
        "--public-key", required=True, type=_public_key, metavar="HEX",
        help="the wallet's 33-byte public key, as you know it (not as the host says)",
    )  # fmt: skip
    recover.add_argument("--party", type=int, metavar="I", help="the party to recover")
    recover.add_argument("--backup-id", help="default: the newest backup of the current epoch")
    recover.add_argument("--epoch", type=int, help="default: the host's current epoch")
    recover.add_argument("--force", action="store_true", help="replace the wallet in --state")
    recover.set_defaults(handler=_handler(_recover))

    listing = actions.add_parser("list", parents=[common], help="wallets in the state directory")
    listing.set_defaults(handler=_handler(_list, needs_passcode=False))

    reshare = actions.add_parser(
        "reshare", parents=[common], help="move to a new quorum (same public key)"
    )
    reshare.add_argument("wallet_id", metavar="WALLET")
    reshare.add_argument("--threshold", type=int, metavar="T")
    reshare.add_argument("--local-parties", type=int, metavar="N")
    refresh = actions.add_parser("refresh", parents=[common], help="refresh the key shares")
    refresh.add_argument("wallet_id", metavar="WALLET")
    export = actions.add_parser("export", parents=[common], help="export the full private key")
    export.add_argument("wallet_id", metavar="WALLET")
    export.add_argument("--out", type=Path, metavar="FILE", help="where to write the key")
    for name, parser in zip(LIFECYCLE, (reshare, refresh, export), strict=True):
        parser.set_defaults(handler=_not_available(name))


def _common_options() -> argparse.ArgumentParser:
    env = os.environ.get
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument("--host", default=env("SHARDKEEP_HOST"), help="host address")
    group.add_argument("--relay", default=env("SHARDKEEP_RELAY"), help="relay address")
    group.add_argument(
        "--coordinator-key", type=Path, metavar="PEM",
        default=_env_path("SHARDKEEP_COORDINATOR_KEY"),
        help="the Ed25519 coordinator key the enclave pins",
    )  # fmt: skip
    group.add_argument(
        "--root", type=Path, metavar="PEM", default=_env_path("SHARDKEEP_ROOT"),
        help="attestation root certificate (default: AWS Nitro root G1)",
    )  # fmt: skip
    group.add_argument(
        "--pcr", metavar="N=HEX", type=_pcr, action="append", default=[],
        help="expected PCR value of the enclave image (repeatable)",
    )  # fmt: skip
    group.add_argument(
        "--allow-debug", action="store_true", help="accept a debug-mode (all-zero PCR) enclave"
    )
    group.add_argument("--timeout", type=float, default=120.0, help="seconds per ceremony")
    state = common.add_argument_group("local state")
    state.add_argument(
        "--state", type=Path, metavar="DIR",
        default=_env_path("SHARDKEEP_STATE") or Path.home() / ".shardkeep",
        help="where wallets, shares and identities are kept (default ~/.shardkeep)",
    )  # fmt: skip
    state.add_argument(
        "--passcode-file", type=Path, metavar="FILE",
        help=f"file holding the passcode (else ${PASSCODE_ENV}, else a prompt)",
    )  # fmt: skip
    # Tests only: Argon2id at t=1, m=8 KiB; a passcode behind it falls to brute force.
    state.add_argument("--insecure-weak-kdf", action="store_true", help=argparse.SUPPRESS)
    output = common.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the result as JSON")
    output.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return common


### Argument types


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _hex(text: str, length: int | None, what: str) -> bytes:
    try:
        data = bytes.fromhex(text.removeprefix("0x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{what} is not hexadecimal") from e
    if length is not None and len(data) != length:
        raise argparse.ArgumentTypeError(f"{what} must be {length} bytes")
    return data


def _digest(text: str) -> bytes:
    return _hex(text, 32, "the digest")


def _hex32(text: str) -> bytes:
    return _hex(text, 32, "the merkle root")


def _public_key(text: str) -> bytes:
    return _hex(text, 33, "the public key")


def _pcr(text: str) -> tuple[int, bytes]:
    index, sep, value = text.partition("=")
    if not sep or not index.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected N=HEX, got {text!r}")
    return int(index), _hex(value, None, "the PCR value")


def _path(text: str) -> tuple[int, ...]:
    parts = [p for p in text.removeprefix("m").split("/") if p]
    if not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError("a path is non-hardened indices, e.g. 0/7")
    return tuple(int(p) for p in parts)


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

    @property
    def passcode(self) -> str:
        if self._passcode is None:
            raise UsageError("no passcode")
        return self._passcode

    def client(self) -> WalletClient:
        args = self.args
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
        )

    def host_channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.args.host)


Handler = Callable[[_Context], Coroutine[Any, Any, dict[str, Any]]]

# Failures -> exit status, most specific first (one table, as STYLE.md principle 5).
_FAILURES: Final[tuple[tuple[type[BaseException], int], ...]] = (
    (UsageError, EXIT_USAGE),
    (AttestationError, EXIT_FAILED),
    (StorageError, EXIT_FAILED),  # wrong passcode, damaged or mismatched files
    (WalletError, EXIT_FAILED),
    (ProtocolError, EXIT_FAILED),
    (InputError, EXIT_USAGE),
    (ShardkeepError, EXIT_FAILED),
    (FileNotFoundError, EXIT_USAGE),
    (OSError, EXIT_USAGE),
    (ValueError, EXIT_USAGE),  # e.g. a malformed PEM
    (grpc.aio.AioRpcError, EXIT_FAILED),
    (TimeoutError, EXIT_FAILED),
)


def _handler(
    body: Handler, *, needs_passcode: bool = True
) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        try:
            passcode = _read_passcode(args) if needs_passcode else None
        except (UsageError, OSError) as e:
            print(f"shardkeep: {_describe(e)}", file=err)
            return EXIT_USAGE
        context = _Context(args, err, passcode)
        try:
            result = asyncio.run(body(context))
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

    return run


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    if isinstance(error, OSError) and error.filename:
        return f"cannot read {error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


def _read_passcode(args: argparse.Namespace) -> str:
    text: str
    if args.passcode_file is not None:
        path: Path = args.passcode_file
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    elif os.environ.get(PASSCODE_ENV):
        text = os.environ[PASSCODE_ENV]
    elif sys.stdin.isatty():
        text = getpass.getpass("shardkeep passcode: ")
    else:
        raise UsageError(f"give the passcode with --passcode-file or ${PASSCODE_ENV}")
    if not text:
        raise UsageError("the passcode is empty")
    return text


def _emit(out: TextIO, result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True), file=out)
        return
    for key, value in result.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key}: {shown}", file=out)


def _not_available(name: str) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    def refuse(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        print(
            f"shardkeep: wallet {name} is not available yet: the SDK has no "
            f"WalletClient.{name} ceremony to run",
            file=err,
        )
        return EXIT_USAGE

    return refuse


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
    else:
        info["taproot_output_key"] = wallet_output_key(wallet).hex()
    return info


async def _create(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    if args.local_parties < 1:
        raise UsageError("--local-parties must be at least 1")
    passcode = ctx.passcode
    if args.wallet_id is not None:
        try:
            load_description(args.state, args.wallet_id)
        except FileNotFoundError:
            pass
        else:
            raise UsageError(f"wallet {args.wallet_id} already exists in {args.state}")
    devices = [PartyIdentity.generate() for _ in range(args.local_parties)]
    async with ctx.client() as client:
        ctx.progress.stage("keygen")
        wallet = await client.create_wallet(
            SCHEME_NAMES[args.scheme], devices, threshold=args.threshold,
            wallet_id=args.wallet_id, progress=ctx.progress,
        )  # fmt: skip
    ctx.progress.stage("")
    ctx.progress("encrypting the key shares")
    save_wallet(
        args.state, wallet, dict(enumerate(devices)), passcode, params=ctx.params,
        insecure_allow_weak_kdf=ctx.weak,
    )  # fmt: skip
    return _describe_wallet(wallet)


async def _sign(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    ctx.progress("decrypting the key shares")
    loaded = load_wallet(
        args.state, args.wallet_id, ctx.passcode, parties=args.parties,
        insecure_allow_weak_kdf=ctx.weak,
    )  # fmt: skip
    wallet = loaded.wallet
    options = SigningOptions(
        derivation_path=args.path, taproot=args.taproot, taproot_merkle_root=args.merkle_root
    )
    if wallet.scheme != "bip340" and (args.taproot or args.merkle_root):
        raise UsageError("--taproot and --merkle-root are for bip340 wallets")
    async with ctx.client() as client:
        ctx.progress.stage("sign")
        try:
            signature = await client.sign(
                wallet, args.digest, loaded.devices, options=options,
                with_server=not args.without_server, progress=ctx.progress,
            )  # fmt: skip
        except BaseException:
            if wallet.scheme == "ecdsa-secp256k1":
                # A failed DKLs23 check burns the pairwise OT setup in the share
                # (tss.keyshare): keep that, so it is never reused.
                save_shares(
                    args.state, wallet, loaded.devices, ctx.passcode, params=ctx.params,
                    insecure_allow_weak_kdf=ctx.weak,
                )  # fmt: skip
            raise
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


def _child_key(wallet: Wallet, path: tuple[int, ...]) -> bytes:
    """The 33-byte key the signature verifies under (before any taproot tweak)."""
    if not path:
        return wallet.public_key
    chain_code = wallet.shares[min(wallet.shares)].chain_code
    return derive_public(wallet.public_key, chain_code, path).public_key


async def _backup(ctx: _Context) -> dict[str, Any]:
    args = ctx.args
    description = load_description(args.state, args.wallet_id)
    if args.party is None and len(description.local) != 1:
        raise UsageError(f"choose --party among {list(description.local)}")
    party = args.party if args.party is not None else description.local[0]
    ctx.progress("decrypting the key share")
    loaded = load_wallet(
        args.state, args.wallet_id, ctx.passcode, parties=[party],
        insecure_allow_weak_kdf=ctx.weak,
    )  # fmt: skip
    ctx.progress("encrypting the backup")
    async with ctx.host_channel() as channel:
        stored = await backup_share(
            channel, loaded.wallet.shares[party], wallet_id=args.wallet_id,
            passcode=ctx.passcode, identity=loaded.devices[party],
            owner_key=loaded.wallet.owner_key, backup_id=args.backup_id, params=ctx.params,
            insecure_allow_weak_kdf=ctx.weak,
        )  # fmt: skip
    return {
        "wallet_id": stored.wallet_id,
        "backup_id": stored.backup_id,
        "party": stored.party_id,
        "epoch": stored.epoch,
        "bytes": len(stored.blob),
    }


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
        wallet = await restore_wallet(client, channel, recovered)
    ctx.progress("encrypting the key share")
    save_wallet(
        args.state, wallet, {recovered.share.party_id: recovered.identity}, passcode,
        params=ctx.params, insecure_allow_weak_kdf=ctx.weak,
    )  # fmt: skip
    return _describe_wallet(wallet)


async def _list(ctx: _Context) -> dict[str, Any]:
    wallets = list_wallets(ctx.args.state)
    return {
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
        ]
        if ctx.args.json
        else [d.wallet_id for d in wallets]
    }
