"""What a user of ``tss.local`` gets: whole ceremonies, each party's object in one process.

Unlike bench_dkg/bench_frost (protocol functions with one coordinator), each
party here runs the full ceremony object the service runs: every party also
aggregates (no trusted coordinator) and checks the result itself. CPU ms are
for all parties together. Peers (docs/benchmarks.md, this machine): frost-rs DKG
2-of-3 5.6 ms, sign 2-of-3 1.48 ms; DKLs23 WASM keygen 2-of-2 1,213 / 2,572 ms,
2-of-3 3,636 / 7,409 ms, sign 2-of-2 71 / 55 ms.
"""

from __future__ import annotations

import functools

from bench.util import measure
from tss import local

CASES = {
    "bip340": [(2, 2), (2, 3), (3, 5), (7, 10)],
    "ecdsa-secp256k1": [(2, 2), (2, 3), (3, 5)],
}
DIGEST = bytes(32)


def main() -> None:
    print(f"{'scheme':16} {'t-of-n':7} {'keygen':>38}   {'sign (t signers)':>38}")
    for scheme, cases in CASES.items():
        runs = 20 if scheme == "bip340" else 5
        for t, n in cases:
            keygen = measure(functools.partial(local.keygen, scheme, threshold=t, parties=n), runs)
            quorum = local.keygen(scheme, threshold=t, parties=n)[:t]
            sign = measure(functools.partial(local.sign, quorum, DIGEST), max(runs, 20))
            print(f"{scheme:16} {t}-of-{n:<4} {keygen}   {sign}")


if __name__ == "__main__":
    main()
