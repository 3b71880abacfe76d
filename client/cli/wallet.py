"""``shardkeep wallet ...``: wallets with the server share, from the command line.

Subcommands (each against a running host and relay, as the relay coordinator):

* ``create``  keygen among this machine's local parties and the server share;
* ``sign``    sign a 32-byte digest (BIP-32 path, BIP-341 taproot tweak), or for
  ed25519 the message itself;
* ``sign-message``, ``sign-typed-data``  ecdsa: an EIP-191 personal message, EIP-712
  typed data (a JSON file), as ``r || s || v`` with the signing address;
* ``sign-psbt`` bip340: sign the wallet's Taproot key-path inputs of a PSBT;
* ``sign-solana`` ed25519: sign a Solana message, printing the wire transaction;
* ``address`` the Ethereum (ecdsa), Taproot (bip340) or Solana (ed25519) address;
* ``xpub``    the BIP-32 extended public key, for watch-only wallets;
* ``backup``  encrypt a local party's share and identity and store them at the host
  (``--all``: every local party of the wallet, or of every wallet);
* ``recover`` fetch a backup from the host and restore the party on this machine;
* ``list``    the wallets in the state directory, damaged ones marked as such
  (``--remote``: also those the host stores);
* ``passcode`` change the passcode that encrypts a wallet's local shares;
* ``refresh`` new shares for every party, same key (all parties take part);
* ``reshare`` move the key to fresh local parties and a new threshold;
* ``resume``  finish or discard a key change that was interrupted after its new
  shares were saved (every other command does it first, automatically);
* ``export``  reconstruct the private key into a new 0600 file (owner-authorised);
  ``export --offline SHAREFILE...`` does it from share files alone, with no
  host or relay (e.g. ``party-<i>.share`` files of state directories);
* ``import``  split an existing private key among local parties and the server
  share (same public key, so the same addresses).

Connection options (or environment): ``--host`` (SHARDKEEP_HOST), ``--relay``
(SHARDKEEP_RELAY), ``--coordinator-key`` PEM Ed25519 key (SHARDKEEP_COORDINATOR_KEY),
``--root`` attestation root certificate, PEM or DER (SHARDKEEP_ROOT; default
the AWS Nitro root G1); TLS, mutual TLS and the host's API token:
``--server-ca``, ``--client-cert``, ``--client-key``, ``--api-token-file``
(and ``--tls``, ``--server-name``); each also from its ``SHARDKEEP_*`` variable
or a configuration file (``client.cli.connection``). Local state:
``--state DIR`` (SHARDKEEP_STATE; default
``~/.shardkeep``), laid out as ``client.cli.state`` says; the passcode that
encrypts it comes from ``--passcode-file`` or SHARDKEEP_PASSCODE (or a prompt
on a terminal, typed twice when it is new). ``--json`` prints the result as
JSON; progress goes to stderr.

The handlers live in ``client.cli.wallet_run``, imported only when a wallet
command runs, so that ``shardkeep attestation verify`` stays quick to start.

Exit status: 0 success, 1 the operation failed (ceremony, host, relay,
attestation, wrong passcode), 2 bad usage or input, 130 interrupted (Ctrl-C),
141 the reader of the output went away (a closed pipe).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TextIO

from client.cli.connection import CONFIG_ENV, SETTINGS, TOKEN_ENV, add_transport_options
from client.cli.passcode import NEW_PASSCODE_ENV, PASSCODE_ENV

__all__ = [
    # Functions
    "add_wallet_commands",
]

SCHEMES: Final = ("bip340", "ecdsa", "ecdsa-secp256k1", "ed25519", "schnorr", "solana")
# Every environment variable the CLI reads, listed in --help.
ENVIRONMENT: Final = {
    **{variable: f"--{name.replace('_', '-')}" for name, (variable, _) in SETTINGS.items()},
    CONFIG_ENV: "--config: the connection settings file",
    TOKEN_ENV: "the host's API token itself (else --api-token-file)",
    "SHARDKEEP_STATE": "--state (default ~/.shardkeep)",
    PASSCODE_ENV: "the passcode of the local shares (else --passcode-file, else a prompt)",
    NEW_PASSCODE_ENV: "`wallet passcode`: the new one (else --new-passcode-file, else a prompt)",
}
WALLET_HELP: Final = "the wallet's id (see `shardkeep wallet list`)"
PATH_HELP: Final = "BIP-32 non-hardened path below the wallet's key, e.g. 0/7"
NETWORKS: Final = ("mainnet", "testnet", "signet", "regtest")
NETWORK_HELP: Final = "the Bitcoin network of a Taproot address (default mainnet)"
SCHEME_HELP: Final = (
    "bip340 (alias schnorr), ecdsa (alias ecdsa-secp256k1) or ed25519 (alias solana); default ecdsa"
)


def environment_help() -> str:
    """The epilog that lists the environment variables, for --help."""
    width = max(map(len, ENVIRONMENT))
    lines = [f"  {name:<{width}}  {what}" for name, what in ENVIRONMENT.items()]
    return "environment variables:\n" + "\n".join(lines)


def add_wallet_commands(commands: Any) -> None:
    """Register ``wallet`` and its subcommands on the top-level subparsers.

    Arguments:
        commands: the ``add_subparsers()`` object of the ``shardkeep`` parser.
    """
    common = _common_options()
    local = _common_options(attested=False)
    wallet = commands.add_parser(
        "wallet", help="wallets shared with the server share",
        epilog=environment_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    actions = wallet.add_subparsers(dest="wallet_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", parents=[common], help="create a wallet (keygen with the server share)"
    )
    create.add_argument("--scheme", choices=SCHEMES, default="ecdsa", help=SCHEME_HELP)
    create.add_argument(
        "--local-parties", type=int, default=1, metavar="N",
        help="parties this machine holds (default 1; the server share is one more)",
    )  # fmt: skip
    create.add_argument(
        "--threshold", type=int, default=2, metavar="T",
        help="parties needed to sign, 2 to local parties + 1 (default 2)",
    )  # fmt: skip
    create.add_argument("--wallet-id", help="the wallet's id (default: a fresh one)")
    create.add_argument(
        "--policy", type=Path, metavar="FILE",
        help="a policy file (JSON): its authenticators must approve what the server share signs"
        " (default: this machine's owner key approves every parsed transaction, message and"
        " key change, and no raw digest)",
    )  # fmt: skip
    create.add_argument(
        "--allow-raw-digest", action="store_true",
        help="with the default policy: the owner key may also approve raw digests (`wallet sign"
        " --digest`, an ed25519 --message that is no Solana message)",
    )  # fmt: skip
    create.set_defaults(handler=_run("create"))

    sign = actions.add_parser(
        "sign", parents=[common], help="sign a 32-byte digest (ed25519: the message itself)"
    )
    sign.add_argument("wallet_id", metavar="WALLET", help=WALLET_HELP)
    signed = sign.add_mutually_exclusive_group(required=True)
    signed.add_argument(
        "--digest", type=_digest, metavar="HEX",
        help="bip340, ecdsa: the 32-byte message digest to sign, in hex (e.g. a sighash)",
    )  # fmt: skip
    signed.add_argument(
        "--message", type=_message, metavar="HEX",
        help="ed25519: the message itself, in hex (e.g. a Solana transaction message;"
        " Ed25519 signs the message, not a digest)",
    )  # fmt: skip
    _signer_options(sign)
    _approval_options(sign)
    sign.add_argument("--taproot", action="store_true", help="bip340: sign for the BIP-341 key")
    sign.add_argument("--merkle-root", type=_hex32, help="bip340: the taproot script tree root")
    sign.set_defaults(handler=_run("sign"))

    sol = actions.add_parser(
        "sign-solana", parents=[common],
        help="ed25519: sign a Solana transaction message whose fee payer is the wallet",
        description="Sign a compiled Solana message (legacy or v0, the wallet its only signer "
        "and fee payer); the server share parses it for the wallet's policy. Prints the wire "
        "transaction in base64 (as sendTransaction takes it) and its signature in base58.",
    )  # fmt: skip
    sol.add_argument("wallet_id", metavar="WALLET", help=WALLET_HELP)
    sol.add_argument(
        "--message", type=_message, required=True, metavar="HEX",
        help="the compiled message bytes, in hex",
    )  # fmt: skip
    _signer_options(sol, path=False)
    _approval_options(sol)
    sol.set_defaults(handler=_run("sign-solana"))

    message = actions.add_parser(
        "sign-message", parents=[common],
        help="ecdsa: sign an EIP-191 personal message (personal_sign)",
        description="Sign keccak256(0x19 'Ethereum Signed Message:\\n' len message) and print "
        "the 65-byte r||s||v signature (v 27 or 28) and the signing address.",
    )  # fmt: skip
    message.add_argument("wallet_id", metavar="WALLET", help=WALLET_HELP)
    text = message.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the message, as text (signed as its UTF-8)")
    text.add_argument("--hex", type=_any_hex, metavar="HEX", help="the message's bytes, in hex")
    text.add_argument("--file", type=Path, metavar="FILE", help="a file holding the message")
    _signer_options(message)
    _approval_options(message)
    message.set_defaults(handler=_run("sign-message"))

    typed = actions.add_parser(
        "sign-typed-data", parents=[common],
        help="ecdsa: sign EIP-712 typed data (eth_signTypedData_v4 JSON)",
        description="Sign EIP-712 typed data read from a JSON file with types, primaryType, "
        "domain and message. Duplicate keys, floats, members missing or added, bad "
        "checksums and out-of-range values are refused before anything is signed.",
    )  # fmt: skip
    typed.add_argument("wallet_id", metavar="WALLET", help=WALLET_HELP)
    typed.add_argument("typed_data_file", type=Path, metavar="FILE", help="the typed data (JSON)")
    _signer_options(typed)
    _approval_options(typed)
    typed.set_defaults(handler=_run("sign-typed-data"))

    psbt = actions.add_parser(
        "sign-psbt", parents=[common],
        help="bip340: sign the wallet's Taproot key-path inputs of a PSBT",
        description="Sign every input of FILE (a BIP-174 PSBT, binary or Base64) whose "
        "Taproot internal key is the wallet's key or a child of it (named by "
        "PSBT_IN_TAP_BIP32_DERIVATION under the wallet's fingerprint), one ceremony per "
        "input. Other inputs are left as they are; an input of this wallet that does not "
        "spend the output its internal key makes is refused. The result lists the outputs "
        "and the fee the signatures commit to.",
    )  # fmt: skip
    psbt.add_argument("wallet_id", metavar="WALLET", help=WALLET_HELP)
    psbt.add_argument("psbt_file", type=Path, metavar="FILE", help="the PSBT (binary or Base64)")
    psbt.add_argument(
        "--out", type=Path, metavar="FILE",
        help="write the signed PSBT (Base64) to this new file instead of printing it",
    )  # fmt: skip
    psbt.add_argument(
        "--finalize", action="store_true",
        help="also finalise the signed inputs and, when every input is final, print the "
        "transaction ready to broadcast",
    )  # fmt: skip
    psbt.add_argument(
        "--network", choices=NETWORKS, default="mainnet",
        help="the network whose addresses the outputs are shown as (default mainnet)",
    )  # fmt: skip
    _signer_options(psbt, path=False)  # each input's path comes from the PSBT
    _approval_options(psbt)
    psbt.set_defaults(handler=_run("sign-psbt"))

    address = actions.add_parser(
        "address", parents=[local],
        help="the wallet's address: Ethereum (ecdsa), Taproot (bip340) or Solana (ed25519)",
        description="Print the wallet's address at --path: the EIP-55 checksummed Ethereum "
        "address of an ecdsa wallet, the Bech32m (BIP-350) key-path-only Taproot address of "
        "a bip340 wallet (the BIP-86 output of the internal key), the base58 Solana address "
        "of an ed25519 wallet (no --path: Ed25519 has no public derivation). Without --path "
        "no passcode is needed (the wallet's key is public); a child key needs the chain "
        "code inside the encrypted shares.",
    )  # fmt: skip
    address.add_argument("wallet_id", metavar="WALLET", help=WALLET_HELP)
    address.add_argument("--path", type=_path, default=(), help=PATH_HELP)
    address.add_argument("--network", choices=NETWORKS, default="mainnet", help=NETWORK_HELP)
    address.set_defaults(handler=_run("address"))

    xpub = actions.add_parser(
        "xpub", parents=[local],
        help="the wallet's BIP-32 extended public key, for a watch-only wallet",
        description="Print the BIP-32 extended public key of the wallet's key (the master: "
        "depth 0) or of its child at --path, with the master's fingerprint. A watch-only "
        "wallet derives from it the keys the wallet signs for with --path; it reveals "
        "every such address. For a bip340 wallet also the BIP-386 descriptors "
        "tr([fingerprint]xpub/0/*) and /1/* (receive, change) with their BIP-380 checksums.",
    )  # fmt: skip
    xpub.add_argument("wallet_id", metavar="WALLET", help=WALLET_HELP)
    xpub.add_argument("--path", type=_path, default=(), help=PATH_HELP)
    xpub.add_argument(
        "--network", choices=NETWORKS, default="mainnet",
        help="mainnet: xpub; testnet, signet, regtest: tpub (default mainnet)",
    )  # fmt: skip
    xpub.set_defaults(handler=_run("xpub"))

    backup = actions.add_parser(
        "backup", parents=[local],
        help="store a local party's share and identity, encrypted, at the host",
    )  # fmt: skip
    backup.add_argument(
        "wallet_id", metavar="WALLET", nargs="?", help="the wallet to back up (optional with --all)"
    )
    chosen = backup.add_mutually_exclusive_group()
    chosen.add_argument("--party", type=int, metavar="I", help="default: the only local party")
    chosen.add_argument(
        "--all", action="store_true",
        help="every local party of WALLET, or of every wallet in --state without WALLET",
    )  # fmt: skip
    backup.add_argument(
        "--backup-id", help="default: derived from the encrypted blob (not with --all)"
    )
    backup.set_defaults(handler=_run("backup"))

    recover = actions.add_parser(
        "recover", parents=[common], help="restore a party on this machine from a host backup"
    )
    recover.add_argument("wallet_id", metavar="WALLET", help="the id of the wallet to recover")
    recover.add_argument(
        "--public-key", required=True, type=_public_key, metavar="HEX",
        help="the wallet's public key (33 bytes; ed25519: 32), as you know it (not as the host"
        " says)",
    )  # fmt: skip
    recover.add_argument("--party", type=int, metavar="I", help="the party to recover")
    recover.add_argument("--backup-id", help="default: the newest backup of the current epoch")
    recover.add_argument("--epoch", type=int, help="default: the host's current epoch")
    recover.add_argument("--force", action="store_true", help="replace the wallet in --state")
    recover.add_argument(
        "--policy", type=Path, metavar="FILE",
        help="the wallet's policy file, as in force (default: the set the backup carries,"
        " else the default policy)",
    )  # fmt: skip
    recover.add_argument(
        "--allow-raw-digest", action="store_true",
        help="the wallet was created with --allow-raw-digest (its default policy allows them)",
    )  # fmt: skip
    recover.set_defaults(handler=_run("recover"))

    listing = actions.add_parser(
        "list", parents=[local], help="wallets in the state directory (damaged ones marked)"
    )
    listing.add_argument(
        "--remote", action="store_true",
        help="also list the wallets the host stores (--host), each marked whether "
        "this machine holds a party of it",
    )  # fmt: skip
    listing.set_defaults(handler=_run("list"))

    passcode = actions.add_parser(
        "passcode", parents=[local],
        help="change the passcode that encrypts a wallet's local shares",
        description="Re-encrypt WALLET's local shares and identities under a new passcode. "
        "Backups already stored at the host keep the passcode they were made with.",
    )  # fmt: skip
    passcode.add_argument("wallet_id", metavar="WALLET", help=WALLET_HELP)
    passcode.add_argument(
        "--new-passcode-file", type=Path, metavar="FILE",
        help=f"file holding the new passcode (else ${NEW_PASSCODE_ENV}, else a prompt, twice)",
    )  # fmt: skip
    passcode.set_defaults(handler=_run("passcode"))

    reshare = actions.add_parser(
        "reshare", parents=[common],
        help="move the key to new local parties and threshold (same public key)",
    )  # fmt: skip
    reshare.add_argument("wallet_id", metavar="WALLET", help=WALLET_HELP)
    reshare.add_argument(
        "--threshold", type=int, metavar="T",
        help="the new threshold, at most the new party count (default: the current one)",
    )  # fmt: skip
    reshare.add_argument(
        "--local-parties", type=int, metavar="N",
        help="fresh local parties of the new keyring (default: as many as now)",
    )  # fmt: skip
    reshare.add_argument(
        "--without-server",
        action="store_true",
        help="drop the server share from the new keyring",
    )
    reshare.set_defaults(handler=_run("reshare"))

    refresh = actions.add_parser(
        "refresh", parents=[common], help="new key shares for every party (same public key)"
    )
    refresh.add_argument("wallet_id", metavar="WALLET", help=WALLET_HELP)
    _approval_options(refresh)
    refresh.add_argument(
        "--new-policy", type=Path, metavar="FILE",
        help="replace the wallet's policy set with this file's (a higher version), approved"
        " under --policy",
    )  # fmt: skip
    refresh.set_defaults(handler=_run("refresh"))

    resume = actions.add_parser(
        "resume",
        parents=[common],
        help="finish (with the host's certificate) or discard an interrupted key change",
    )
    resume.add_argument("wallet_id", metavar="WALLET", help="the wallet whose key change to settle")
    resume.set_defaults(handler=_run("resume"))

    export = actions.add_parser(
        "export", parents=[common], help="reconstruct the full private key into a file"
    )
    export.add_argument(
        "wallet_id", metavar="WALLET", nargs="?", help="the wallet to export (not with --offline)"
    )
    export.add_argument(
        "--out", type=Path, metavar="FILE", required=True,
        help="new file (mode 0600) to write the private key to, in hex",
    )  # fmt: skip
    export.add_argument(
        "--without-server", action="store_true", help="reconstruct from local parties only"
    )
    export.add_argument(
        "--offline", type=Path, nargs="+", metavar="SHAREFILE",
        help="reconstruct from these share files (at least the threshold), no host or relay",
    )  # fmt: skip
    export.add_argument(
        "--public-key", type=_public_key, metavar="HEX",
        help="with --offline: the wallet's public key (33 bytes; ed25519: 32), to check",
    )  # fmt: skip
    export.set_defaults(handler=_run("export"))

    imported = actions.add_parser(
        "import", parents=[common],
        help="split an existing private key with the server share (same public key)",
    )  # fmt: skip
    imported.add_argument("--scheme", choices=SCHEMES, default="ecdsa", help=SCHEME_HELP)
    imported.add_argument(
        "--key-file", type=Path, required=True, metavar="FILE",
        help="the 32-byte private key in hex (as `wallet export` writes it); ed25519: a"
        " 32-byte RFC 8032 seed in hex, or a Solana keypair (64 bytes) in hex, base58 or"
        " solana-keygen's JSON array",
    )  # fmt: skip
    imported.add_argument(
        "--local-parties", type=int, default=1, metavar="N",
        help="parties this machine holds (default 1; the server share is one more)",
    )  # fmt: skip
    imported.add_argument(
        "--threshold", type=int, default=2, metavar="T",
        help="parties needed to sign, 2 to local parties + 1 (default 2)",
    )  # fmt: skip
    imported.add_argument("--wallet-id", help="the wallet's id (default: a fresh one)")
    imported.add_argument(
        "--policy", type=Path, metavar="FILE",
        help="a policy file (JSON), as for `wallet create` (default: the default policy)",
    )  # fmt: skip
    imported.add_argument(
        "--allow-raw-digest", action="store_true",
        help="with the default policy: the owner key may also approve raw digests",
    )  # fmt: skip
    imported.set_defaults(handler=_run("import"))


def _signer_options(parser: argparse.ArgumentParser, *, path: bool = True) -> None:
    """Which local parties sign, whether the server share joins, and the key's path."""
    parser.add_argument(
        "--party", type=int, action="append", dest="parties", metavar="I",
        help="local party index to sign with (repeatable; default: every local party)",
    )  # fmt: skip
    parser.add_argument(
        "--without-server", action="store_true",
        help="sign with local parties only (they must reach the threshold)",
    )  # fmt: skip
    parser.add_argument("--path", type=_path, default=(), help="BIP-32 non-hardened path, e.g. 0/7")


def _approval_options(parser: argparse.ArgumentParser) -> None:
    """For a wallet with a policy set: the set in force and who approves."""
    parser.add_argument(
        "--policy", type=Path, metavar="FILE",
        help="the wallet's policy file, as in force (approvals sign its hash; default: the set"
        " the wallet's state keeps)",
    )  # fmt: skip
    parser.add_argument(
        "--approver", type=Path, action="append", default=[], metavar="KEYFILE",
        help="an API key or passkey file that approves (repeatable; `shardkeep policy "
        "new-key` or `new-passkey`)",
    )  # fmt: skip


def _common_options(*, attested: bool = True) -> argparse.ArgumentParser:
    """The options every wallet command shares. ``attested``: the command verifies the
    enclave's attestation, so it takes --pcr and --allow-debug; commands that never talk
    to the enclave do not accept them, rather than ignore them."""
    env = os.environ.get
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--host", default=env("SHARDKEEP_HOST"), help="the host's address ($SHARDKEEP_HOST)"
    )
    group.add_argument(
        "--relay", default=env("SHARDKEEP_RELAY"), help="the relay's address ($SHARDKEEP_RELAY)"
    )
    group.add_argument(
        "--coordinator-key", type=Path, metavar="PEM",
        default=_env_path("SHARDKEEP_COORDINATOR_KEY"),
        help="the Ed25519 coordinator key the enclave pins ($SHARDKEEP_COORDINATOR_KEY)",
    )  # fmt: skip
    group.add_argument(
        "--root", type=Path, metavar="PEM", default=_env_path("SHARDKEEP_ROOT"),
        help="attestation root certificate (default: AWS Nitro root G1; $SHARDKEEP_ROOT)",
    )  # fmt: skip
    if attested:
        group.add_argument(
            "--pcr", metavar="N=HEX", type=_pcr, action="append", default=[],
            help="expected PCR value of the enclave image, checked in its attestation "
            "(repeatable)",
        )  # fmt: skip
        group.add_argument(
            "--allow-debug", action="store_true",
            help="accept a debug-mode (all-zero PCR) enclave",
        )  # fmt: skip
    group.add_argument("--timeout", type=float, default=120.0, help="seconds per ceremony")
    add_transport_options(group)
    state = common.add_argument_group("local state")
    state.add_argument(
        "--state", type=Path, metavar="DIR",
        default=_env_path("SHARDKEEP_STATE") or Path.home() / ".shardkeep",
        help="where wallets, shares and identities are kept (default ~/.shardkeep; "
        "$SHARDKEEP_STATE)",
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


def _any_hex(text: str) -> bytes:
    return _hex(text, None, "the message")


def _digest(text: str) -> bytes:
    return _hex(text, 32, "the digest")


def _message(text: str) -> bytes:
    return _hex(text, None, "the message")


def _hex32(text: str) -> bytes:
    return _hex(text, 32, "the merkle root")


def _public_key(text: str) -> bytes:
    key = _hex(text, None, "the public key")
    if len(key) not in (32, 33):
        raise argparse.ArgumentTypeError("the public key must be 33 bytes (ed25519: 32)")
    return key


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


def _run(command: str) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    """The handler of ``command``; the SDK is imported only when a wallet command runs."""

    def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        from client.cli.wallet_run import run_command

        return run_command(command, args, out, err)

    return run
