"""DKLs23 threshold ECDSA: setup ceremony and signing, all parties in one process.

Reports median wall and CPU milliseconds for all parties together, rounds, the
bytes every party sends in one ceremony, and the stored setup size per peer.
The trusted dealer (test helper) stands in for the DKG; "keygen" below is the
dealer plus the DKLs23 pairwise setup (base OTs both ways and zero-share seeds).
"""

from __future__ import annotations

import hashlib

from bench.util import measure
from tests.test_ecdsa_support import dealer_keygen, run_setup, run_sign

_CASES = [(2, 2), (2, 3), (3, 5)]
_DIGEST = hashlib.sha256(b"bench").digest()


class _ByteCounter:
    """A ``tamper`` hook of the in-process runner that counts the bytes sent."""

    def __init__(self) -> None:
        self.total = 0

    def __call__(self, _rnd: int, _sender: int, _recipient: int, msg: bytes) -> bytes:
        self.total += len(msg)
        return msg


def _bench_case(t: int, n: int) -> None:
    shares = dealer_keygen(t, n)
    counter = _ByteCounter()
    setups = run_setup(shares, tamper=counter)
    per_peer = (len(setups[0].to_bytes()) - 48) // (n - 1)

    def keygen() -> None:
        run_setup(dealer_keygen(t, n))

    stats = measure(keygen, runs=5)
    print(
        f"keygen {t}-of-{n}: {stats}  rounds 2  sent {counter.total / 1024:.0f} KiB  "
        f"setup {per_peer / 1024:.1f} KiB/peer",
        flush=True,
    )
    signers = list(range(t))
    counter = _ByteCounter()
    run_sign(shares, setups, signers, _DIGEST, session=1, tamper=counter)
    sessions = iter(range(2, 1_000_000))

    def sign() -> None:
        run_sign(shares, setups, signers, _DIGEST, session=next(sessions))

    stats = measure(sign, runs=20)
    print(f"sign   {t}-of-{n}: {stats}  rounds 3  sent {counter.total / 1024:.0f} KiB", flush=True)


def main() -> None:
    for t, n in _CASES:
        _bench_case(t, n)


if __name__ == "__main__":
    main()
