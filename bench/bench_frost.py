"""FROST (BIP 445) signing, all parties in one process: round 1 + round 2 + aggregate.

One ceremony = every signer's ``signer_round1``, every signer's ``signer_round2``
(each aggregates the nonces itself, signs and verifies its own partial signature),
and ``coordinator_aggregate``, measured with both strategies: verify every partial
signature, then aggregate and verify the signature (the default); or aggregate and
verify the signature first, checking partial signatures only on failure
(``verify_each=False``, as ZF's frost-core does). Keys come from a trusted dealer; key
generation is not timed. Peer: frost-rs 1.0.0 signs 2-of-3 in 1.48 ms CPU
(docs/benchmarks.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from bench.util import measure
from tss.curve import N, Point, schnorr_verify
from tss.frost import coordinator_aggregate, signer_round1, signer_round2
from tss.shamir import eval_point, poly_eval

CONFIGS = [(2, 2), (2, 3), (3, 5), (7, 10)]
RUNS = 50
PUBNONCE_BYTES, PSIG_BYTES = 66, 32


def _deal(t: int, n: int) -> tuple[bytes, list[bytes], list[int]]:
    coeffs = [secrets.randbelow(N - 1) + 1 for _ in range(t)]
    shares = [poly_eval(coeffs, eval_point(i)) for i in range(n)]
    return (
        Point.base_mul(coeffs[0]).to_bytes(),
        [Point.base_mul(s).to_bytes() for s in shares],
        shares,
    )


def _ceremony_fn(t: int, n: int, *, verify_each: bool) -> tuple[Callable[[], bytes], bytes, bytes]:
    """A closure running one full signing ceremony; also returns the message and key."""
    public_key, public_shares, secret_shares = _deal(t, n)
    signer_ids = list(range(t))
    msg = secrets.token_bytes(32)

    def ceremony() -> bytes:
        session_id = secrets.token_bytes(16)
        states, pubnonces = {}, {}
        for i in signer_ids:
            states[i], pubnonces[i] = signer_round1(
                i,
                secret_shares[i],
                public_key,
                public_shares,
                t,
                msg,
                session_id,
                secrets.token_bytes(32),
            )
        psigs = {i: signer_round2(states[i], signer_ids, pubnonces) for i in signer_ids}
        return coordinator_aggregate(
            public_key,
            public_shares,
            t,
            msg,
            signer_ids,
            pubnonces,
            psigs,
            verify_each=verify_each,
        )

    return ceremony, msg, public_key


def main() -> None:
    print("FROST BIP-445 sign, all parties in one process (rounds 1+2+aggregate):")
    for t, n in CONFIGS:
        sent = t * (PUBNONCE_BYTES + PSIG_BYTES)
        print(
            f"  sign {t}-of-{n}: 2 rounds, {sent} B sent ({t}x{PUBNONCE_BYTES} B pubnonce"
            f" + {t}x{PSIG_BYTES} B psig), 64 B signature"
        )
        for verify_each, label in ((True, "verify each psig"), (False, "aggregate first ")):
            ceremony, msg, public_key = _ceremony_fn(t, n, verify_each=verify_each)
            if not schnorr_verify(msg, public_key[1:], ceremony()):
                raise SystemExit("FROST signature does not verify")
            print(f"    {label}: {measure(ceremony, runs=RUNS, warmup=3)}")


if __name__ == "__main__":
    main()
