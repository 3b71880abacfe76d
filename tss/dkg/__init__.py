"""Distributed key generation: ChillDKG (draft BIP, BlockstreamResearch/bip-frost-dkg).

Three layers, one module each, as in the reference implementation:

- ``simplpedpop``: Pedersen DKG with proofs of possession (CGRS23, Section 4);
- ``encpedpop``: the same with shares encrypted by ECDH pads to static keys;
- ``chilldkg``: EncPedPop plus the CertEq equality check (BIP-340 signatures
  by host keys), recovery data and blame.

Only ``chilldkg`` is an API (re-exported here); the lower layers are building
blocks that are not safe to use as a DKG on their own (draft BIP, "Internals").

The key is shared in the group ``SessionParams.group`` names: secp256k1 as in
the draft BIP, or edwards25519 for Ed25519 keys (``tss.dkg.suite``); host keys
are secp256k1 keys either way.

What a participant keeps (``participant_finalize`` returns it; recovery
reproduces it): ``DKGOutput.participant`` (0-based index; Shamir point index + 1),
``.secshare`` (32-byte scalar in the group's encoding), ``.thresh_pk`` (33-byte
compressed secp256k1 key, or 32-byte RFC 8032 key), ``.pubshares`` (encoded as
``thresh_pk``, by index), ``.params`` (``hostpubkeys``, ``t``, ``group``), and
the ``RecoveryData`` bytes. Any ``1 <= t <= n`` works.
"""

from __future__ import annotations

from tss.dkg.chilldkg import (
    CoordinatorState,
    DKGOutput,
    ParticipantState1,
    ParticipantState2,
    RecoveryData,
    SessionParams,
    cinv_len,
    cmsg1_len,
    cmsg2_len,
    coordinator_finalize,
    coordinator_investigate,
    coordinator_recover,
    coordinator_step1,
    hostpubkey_gen,
    params_hash,
    participant_finalize,
    participant_investigate,
    participant_recover,
    participant_recovery_ack_sign,
    participant_recovery_acks_verify,
    participant_step1,
    participant_step2,
    participant_step2_as_coordinator,
    pmsg1_len,
)
from tss.dkg.errors import (
    CoordinatorMsgLengthError,
    DuplicateHostPubkeyError,
    FaultyParticipantOrCoordinatorError,
    HostSeckeyError,
    InvalidHostPubkeyError,
    InvalidRecoveryAckError,
    ParticipantMsgLengthError,
    RandomnessError,
    RecoveryDataError,
    SessionParamsError,
    ThresholdOrCountError,
)
from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    ProtocolError,
    UnknownFaultyParticipantOrCoordinatorError,
)

__all__ = [
    # Functions
    "hostpubkey_gen",
    "params_hash",
    "participant_step1",
    "participant_step2",
    "participant_step2_as_coordinator",
    "participant_finalize",
    "participant_investigate",
    "coordinator_step1",
    "coordinator_finalize",
    "coordinator_investigate",
    "participant_recover",
    "coordinator_recover",
    "participant_recovery_ack_sign",
    "participant_recovery_acks_verify",
    "pmsg1_len",
    "cmsg1_len",
    "cmsg2_len",
    "cinv_len",
    # Exceptions
    "HostSeckeyError",
    "SessionParamsError",
    "InvalidHostPubkeyError",
    "DuplicateHostPubkeyError",
    "ThresholdOrCountError",
    "RandomnessError",
    "RecoveryDataError",
    "ProtocolError",
    "FaultyParticipantError",
    "FaultyParticipantOrCoordinatorError",
    "FaultyCoordinatorError",
    "UnknownFaultyParticipantOrCoordinatorError",
    "ParticipantMsgLengthError",
    "CoordinatorMsgLengthError",
    "InvalidRecoveryAckError",
    # Types
    "SessionParams",
    "DKGOutput",
    "RecoveryData",
    "ParticipantState1",
    "ParticipantState2",
    "CoordinatorState",
]
