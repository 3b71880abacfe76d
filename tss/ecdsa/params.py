"""Parameters of the DKLs23 instantiation (eprint 2023/765), in one place.

- ``KAPPA`` = |q| = 256: the number of base OTs and the bit length of the OT
  extension's rows (DKLs23 §5 sets kappa = |q|; 0xCarbon/DKLs23 and Silence
  Labs' sl-oblivious both use 256 base OTs of 256-bit strings).
- ``LAMBDA_S`` = 80: statistical security, as DKLs23 §5 and DKLs19 §5 state it.
- ``XI`` = kappa + 2 * lambda_s = 416: the batch size of the random vector OLE
  (DKLs23 Protocol 5.2 / DKLs19 Protocol 1, "xi").
- ``ELL`` = 2: the RVOLE input width used by signing (Protocol 3.6 multiplies
  Bob's chi by Alice's (r_i, sk_i)); ``RHO`` = 1 check column (Protocol 5.2,
  rho = ceil(lambda_s / kappa)); ``OT_WIDTH`` = ell + rho scalars per OT.
- The OT-extension consistency check (KOS15 Fig. 10 as corrected with
  SoftSpokenOT, eprint 2022/192) hashes each column with a universal hash over
  GF(2^128): ``CHECK_BLOCKS`` blocks of 128 bits plus one 128-bit mask block, so
  the receiver extends ``XI_EXT`` = 4 * 128 + 128 = 640 OTs and uses the first XI.
"""

from __future__ import annotations

__all__ = [
    "KAPPA",
    "KAPPA_BYTES",
    "LAMBDA_S",
    "XI",
    "ELL",
    "RHO",
    "OT_WIDTH",
    "FIELD_BITS",
    "CHECK_BLOCKS",
    "XI_EXT",
    "XI_EXT_BYTES",
    "MAX_PARTIES",
]

KAPPA = 256
KAPPA_BYTES = KAPPA // 8
LAMBDA_S = 80
XI = KAPPA + 2 * LAMBDA_S
ELL = 2
RHO = 1
OT_WIDTH = ELL + RHO
FIELD_BITS = 128
CHECK_BLOCKS = -(-XI // FIELD_BITS)
XI_EXT = (CHECK_BLOCKS + 1) * FIELD_BITS
XI_EXT_BYTES = XI_EXT // 8
MAX_PARTIES = 32
"""Party indices travel in one byte; tss.keyshare allows up to 32 parties."""
