"""The enclave's randomness: the kernel's CSPRNG and the NSM's random source, combined.

Every draw is ``HKDF-SHA256(ikm = os.urandom(32) || NSM GetRandom(32),
salt = none, info = "shardkeep/enclave-random/v1", L = n)`` (RFC 5869 §2).
HKDF-Extract is a randomness extractor and HKDF-Expand a PRF (RFC 5869 §3.3;
Krawczyk, "Cryptographic Extraction and Key Derivation", CRYPTO 2010), so the
output is unpredictable as long as either input is: a weak or backdoored
kernel RNG early in an enclave's boot is covered by the NSM's hardware
source, and a faulty NSM by the kernel's. Both inputs are fresh per draw, so
no state is kept to leak or to be cloned with a snapshot. A failing NSM
raises instead of silently degrading to one source.

The protocol core's secrets (shares, nonces, identity keys, channel
ephemerals) all come from this function (``EnclaveDeps.rand``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enclave.nsm import Nsm

__all__ = ["INFO", "SEED_SIZE", "mixed_random"]

SEED_SIZE: Final = 32
"""Bytes drawn from each source per call: SHA-256's security level."""
INFO: Final = b"shardkeep/enclave-random/v1"
_MAX_OUTPUT: Final = 255 * 32  # RFC 5869 §2.3: L <= 255 * HashLen


def mixed_random(
    nsm: Nsm, *, os_random: Callable[[int], bytes] = os.urandom
) -> Callable[[int], bytes]:
    """A ``rand(n)`` drawing on both the kernel and the NSM for every call.

    Arguments:
        nsm: the enclave's NSM (``/dev/nsm`` on Nitro, simulated elsewhere).
        os_random: the kernel source (tests pass a fixed one).

    Returns:
        A function returning ``n`` random bytes, ``0 <= n <= 8160``.
    """

    def rand(n: int) -> bytes:
        if not 0 <= n <= _MAX_OUTPUT:
            raise ValueError(f"can draw 0..{_MAX_OUTPUT} bytes at once, not {n}")
        kernel = os_random(SEED_SIZE)
        device = nsm.get_random(SEED_SIZE)
        if len(kernel) != SEED_SIZE or len(device) != SEED_SIZE:
            raise ValueError("a randomness source returned the wrong number of bytes")
        if n == 0:
            return b""
        return HKDF(hashes.SHA256(), n, salt=None, info=INFO).derive(kernel + device)

    return rand
