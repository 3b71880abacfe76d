"""Threshold ECDSA over secp256k1: DKLs23 (Doerner, Kondi, Lee, shelat; eprint 2023/765).

Layers, bottom up: ``base_ot`` (endemic OT, MR19) -> ``ote`` (KOS15 Fig. 10 with
the SoftSpokenOT consistency check, over ``gf128``) -> ``mul`` (RVOLE, DKLs23
Protocol 5.2) -> ``zero_share`` (F_Zero) -> ``keygen`` (the pairwise setup
ceremony, output ``setup.EcdsaSetup``) -> ``sign`` (Protocol 3.6).

Typical flow for party i (all functions are sans-IO: state + bytes in, state +
bytes out; randomness is passed in):

    s1, out1 = setup_round1(key, session_id, rand)          # {peer: bytes}
    s2, out2 = setup_round2(s1, in1)
    setup = setup_finalize(s2, in2)                          # store setup.to_bytes()

    st1, out1 = sign_round1(setup, key, signers, session_id, rand, digest)
    st2, out2 = sign_round2(st1, in1)
    st3, partial = sign_round3(st2, in2, digest)            # broadcast
    sig = sign_combine(st3, partials)                        # RecoverableSignature
"""

from __future__ import annotations

from tss.ecdsa.keygen import setup_finalize, setup_round1, setup_round2
from tss.ecdsa.setup import EcdsaSetup, KeyMaterial, PeerSetup, key_id
from tss.ecdsa.sign import (
    PartialState,
    Presignature,
    RecoverableSignature,
    SignRound1State,
    SignRound2State,
    presign_finish,
    presign_partial,
    sign_combine,
    sign_round1,
    sign_round2,
    sign_round3,
)

__all__ = [
    # Functions
    "setup_round1",
    "setup_round2",
    "setup_finalize",
    "sign_round1",
    "sign_round2",
    "sign_round3",
    "presign_finish",
    "presign_partial",
    "sign_combine",
    "key_id",
    # Types
    "EcdsaSetup",
    "PeerSetup",
    "KeyMaterial",
    "RecoverableSignature",
    "SignRound1State",
    "SignRound2State",
    "Presignature",
    "PartialState",
]
