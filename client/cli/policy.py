"""``shardkeep policy``: API keys and passkeys that approve, and the hash of a policy file.

``new-key`` writes an Ed25519 or P-256 API key to a new file (mode 0600) and
prints the authenticator entry to put in a policy file; ``new-passkey`` does
the same for a software passkey (``webauthn-es256``, bound to an RP id and
origin; ``client.sdk.policy_files``: no security key, its private key is in
the file). ``show`` checks a
policy file (its structure and every condition, as the enclave will) and
prints, for a wallet and epoch, the hash its approvals sign, which an
approver compares with what it is asked to approve under
(docs/security/policy.md).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from client.cli.exits import EXIT_OK, EXIT_USAGE
from client.sdk.approvals import ApiKey, SoftwarePasskey
from client.sdk.policy_files import load_policy_file, save_api_key, save_passkey
from shardkeep.policy_conditions import compile_condition
from shardkeep.policy_documents import authenticator_entry
from shardkeep.policyset import policy_set_hash
from tss.errors import InputError

__all__ = ["add_policy_commands"]


def add_policy_commands(commands: Any) -> None:
    """Add ``policy new-key``, ``new-passkey`` and ``show`` to the ``shardkeep`` parser."""
    policy = commands.add_parser("policy", help="approvers and policy files of wallets")
    actions = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")

    new_key = actions.add_parser("new-key", help="write a new API key that approves")
    new_key.add_argument("--name", required=True, help="its name in policy files")
    new_key.add_argument(
        "--kind", choices=["ed25519", "p256"], default="ed25519",
        help="Ed25519, or P-256 with ECDSA-SHA256 (default ed25519)",
    )  # fmt: skip
    new_key.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    new_key.add_argument("--out", type=Path, required=True, metavar="FILE", help="a new file")
    new_key.set_defaults(handler=_new_key)

    new_passkey = actions.add_parser(
        "new-passkey", help="write a new software passkey (webauthn-es256) that approves"
    )
    new_passkey.add_argument("--name", required=True, help="its name in policy files")
    new_passkey.add_argument(
        "--rp-id", required=True, help="the WebAuthn relying party id, e.g. wallet.example"
    )
    new_passkey.add_argument(
        "--origin",
        required=True,
        help="the origin its assertions name, e.g. https://wallet.example",
    )
    new_passkey.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    new_passkey.add_argument("--out", type=Path, required=True, metavar="FILE", help="a new file")
    new_passkey.set_defaults(handler=_new_passkey)

    show = actions.add_parser("show", help="check a policy file and print its hash")
    show.add_argument("policy", type=Path, metavar="FILE", help="the policy file (JSON)")
    show.add_argument("--wallet", help="the wallet the set is in force for")
    show.add_argument("--epoch", type=int, default=0, help="the wallet's epoch (default 0)")
    show.set_defaults(handler=_show)


def _new_key(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        key = ApiKey.generate(args.name, args.kind)
        entry = authenticator_entry(key.authenticator(*args.tag))
        save_api_key(key, args.out)
    except (InputError, OSError) as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_USAGE
    print(json.dumps(entry, indent=2), file=out)
    return EXIT_OK


def _new_passkey(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        passkey = SoftwarePasskey(args.name, args.rp_id, args.origin)
        entry = authenticator_entry(passkey.authenticator(*args.tag))
        save_passkey(passkey, args.out)
    except (InputError, OSError) as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_USAGE
    print(json.dumps(entry, indent=2), file=out)
    return EXIT_OK


def _show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        policy_set = load_policy_file(args.policy)
        for policy in policy_set.policies:  # the enclave checks again; this fails early
            compile_condition(policy.name, policy.condition)
    except (InputError, OSError) as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_USAGE
    result: dict[str, Any] = {
        "version": policy_set.version,
        "authenticators": [a.name for a in policy_set.authenticators],
        "policies": [p.name for p in policy_set.policies],
    }
    if args.wallet:
        bound = replace(policy_set, wallet_id=args.wallet, epoch=args.epoch)
        result["policy_set_hash"] = policy_set_hash(bound).hex()
    print(json.dumps(result, indent=2), file=out)
    return EXIT_OK
