"""Key lifecycle ceremonies, all parties in one process: reshare, refresh, export, import, derive.

For 2-of-3 and 3-of-5 keyrings of both schemes, median wall and CPU
milliseconds of one whole ceremony (every party's work together), its rounds
and the payload bytes all parties send (before the channel's encryption):

- reshare t-of-n -> t-of-n to n fresh parties (the first t old parties deal;
  ECDSA includes the new DKLs23 pairwise setups, 3 rounds instead of 2);
- refresh (every party deals a sharing of zero; ECDSA: new pairwise setups);
- export to an outside recipient (one round, contributions sealed to its X25519
  key) and offline export from t backup shares;
- import (``tss.local.import_key``: split, plus the pairwise setup for ECDSA);
- derivation: public BIP-32 derivation of a 3-step path (no ceremony).

Keys are imported, not generated, so no DKG is timed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bench.util import measure
from tests.lifecycle_support import run
from tss import local
from tss.bip32 import derive_public
from tss.ceremony import Ceremony, Message
from tss.export import Export, ExportPlan, offline_export
from tss.keyshare import KeyShare, Scheme
from tss.reshare import PublicKeyring, Reshare, ResharePlan

CONFIGS = [(2, 3), (3, 5)]
SCHEMES: list[tuple[Scheme, int]] = [("bip340", 20), ("ecdsa-secp256k1", 3)]
R = TypeVar("R")


def _count(ceremonies: Sequence[Ceremony[R]]) -> tuple[int, int]:
    """Run once, counting (rounds, payload bytes sent)."""
    sent = [0]
    rounds = [0]

    def tally(m: Message) -> bytes:
        sent[0] += len(m.payload)
        rounds[0] = max(rounds[0], m.round)
        return m.payload

    run(ceremonies, tally)
    return rounds[0], sent[0]


def _reshare_ceremonies(shares: list[KeyShare], t: int, n: int) -> list[Reshare]:
    plan = ResharePlan(
        secrets.token_bytes(32),
        PublicKeyring.from_share(shares[0]),
        tuple(range(t)),
        tuple(n + j for j in range(n)),
        t,
    )
    rand = secrets.token_bytes
    return [Reshare(plan, i, shares[i], rand) for i in range(t)] + [
        Reshare(plan, seat, None, rand) for seat in plan.holders
    ]


def _refresh_ceremonies(shares: list[KeyShare]) -> list[Reshare]:
    plan = ResharePlan.refresh(PublicKeyring.from_share(shares[0]), secrets.token_bytes(32))
    return [Reshare(plan, s.party_id, s, secrets.token_bytes) for s in shares]


def _export_ceremonies(shares: list[KeyShare], t: int, n: int) -> list[Export]:
    recipient = X25519PrivateKey.generate()
    plan = ExportPlan(
        secrets.token_bytes(32),
        PublicKeyring.from_share(shares[0]),
        tuple(range(t)),
        n,
        recipient.public_key().public_bytes_raw(),
    )
    rand = secrets.token_bytes
    return [Export(plan, i, shares[i], rand) for i in range(t)] + [
        Export(plan, n, None, rand, recipient.private_bytes_raw())
    ]


def _line(name: str, fn: Callable[[], object], runs: int, extra: str = "") -> None:
    print(f"    {name:<15} {measure(fn, runs=runs)}{extra}", flush=True)


def main() -> None:
    print("Key lifecycle, all parties in one process:")
    for scheme, runs in SCHEMES:
        for t, n in CONFIGS:
            key = secrets.token_bytes(32)
            shares = local.import_key(scheme, key, threshold=t, parties=n)
            print(f"  {scheme} {t}-of-{n}:", flush=True)
            rounds, sent = _count(_reshare_ceremonies(shares, t, n))
            _line(
                "reshare",
                lambda: local.reshare(shares[:t], threshold=t, parties=n),  # noqa: B023
                runs,
                f"  {rounds} rounds, {sent / 1024:.1f} KiB sent",
            )
            rounds, sent = _count(_refresh_ceremonies(shares))
            _line(
                "refresh",
                lambda: local.refresh(shares),  # noqa: B023
                runs,
                f"  {rounds} rounds, {sent / 1024:.1f} KiB sent",
            )
            rounds, sent = _count(_export_ceremonies(shares, t, n))
            _line(
                "export",
                lambda: run(_export_ceremonies(shares, t, n)),  # noqa: B023
                max(runs, 20),
                f"  {rounds} round, {sent} B sent",
            )
            _line("offline export", lambda: offline_export(shares[:t]), max(runs, 20))  # noqa: B023
            _line(
                "import",
                lambda: local.import_key(scheme, key, threshold=t, parties=n),  # noqa: B023
                runs,
            )
            pk, chain = shares[0].public_key, shares[0].chain_code
            _line("derive (3 steps)", lambda: derive_public(pk, chain, (0, 1, 2)), 50)  # noqa: B023


if __name__ == "__main__":
    main()
