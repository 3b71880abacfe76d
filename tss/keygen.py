"""Key generation ceremonies: ChillDKG for every scheme, plus the DKLs23 pairwise setup for ECDSA.

ChillDKG runs in the scheme's group (``tss.group.group_of``): secp256k1 for
bip340 and ecdsa-secp256k1, edwards25519 for ed25519 (``tss.dkg.suite``); the
parties' host keys are secp256k1 keys in every case. The session context every
signed round-1 message binds hashes the scheme, so a round-1 message of one
scheme's keygen is no evidence in another's.

Every participant also plays ChillDKG's coordinator on the broadcast messages
(``coordinator_step1`` / ``coordinator_finalize`` are deterministic
aggregations, draft BIP "ChillDKG", "Coordinator"), so no party is trusted to
aggregate. Without one coordinator, a party could send different round-1
messages to different peers: CertEq would fail for everyone (ChillDKG's
agreement property), but each party would find the *others'* certificate
signatures invalid on its own transcript and blame honest parties. So each
round-1 message goes with its sender's host-key signature over its hash, and
round 2 echoes every signed hash next to the CertEq signature
(``tss.equivocation``): certificate signatures are judged only when all
transcripts agree, and otherwise two signatures of one party prove its
equivocation. A bad encrypted share is traced to its sender by ChillDKG's
investigation, run locally on the round-1 messages every party holds.

BIP-32 chain code. Each party's signed round-1 message starts with 32 fresh
random bytes, its contribution; the chain code is a tagged hash of the
session context and every contribution in party order. Contributions travel
only inside the parties' end-to-end encrypted envelopes, so nobody outside the
keyring (not the relay, not the host) can compute the chain code, and one
honest party's randomness makes it unpredictable: child keys derived with it
cannot be linked to the wallet's public key. Being part of the signed and
echoed round-1 messages, the contributions are agreed like the rest: a party
that sends different ones to different peers is named by its two signatures.

Pending before agreement: once a party's share exists (ChillDKG's
``participant_step2``), the ceremony holds its CertEq signature until the runner
has saved ``pending`` (a ``tss.certificate.PendingKeygen``) and calls
``confirm_saved`` (``tss.ceremony``), so a certificate can never exist for a
share that was lost (ChillDKG's warning on ``participant_step2``).

A party that aborts on a bad certificate signature sent only to it (the
others finish), or that never got the last message, keeps its ChillDKG state:
``finish_from_certificate`` completes it from a complete certificate another
party holds (ChillDKG's recovery: the certificate is the proof of success).
For ecdsa-secp256k1 the result then has no DKLs23 pair setup: the DKG alone
makes the key, and pair setups are made on demand (``PairSetup``) before the
first signature; the same goes for a share saved as pending and finished
after a crash (``PendingKeygen.verify`` with the certificate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tss.ceremony import Ceremony, Message, Random
from tss.certificate import PendingKeygen
from tss.curve import tagged_hash
from tss.dkg import chilldkg
from tss.ecdsa import keygen as ecdsa_setup
from tss.ecdsa.setup import EcdsaSetup, PeerSetup, key_id
from tss.ecdsa.setup import KeyMaterial as SetupKeyMaterial
from tss.equivocation import SignedStatement, Statements
from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    InputError,
    SessionStateError,
    UnknownFaultyParticipantOrCoordinatorError,
)
from tss.group import group_of
from tss.keyshare import KeyShare, Scheme
from tss.tags import (
    KEYGEN_SIGNED_ROUND1_PREFIX,
    KEYGEN_TAG_CHAIN_CODE,
    KEYGEN_TAG_ROUND1_CONTEXT,
    KEYGEN_TAG_ROUND1_HASH,
    KEYGEN_TAG_SETUP_SESSION,
    PAIR_SETUP_TAG_SESSION,
)

__all__ = ["Keygen", "EcdsaSetupCeremony", "PairSetup", "KeyMaterial", "ROUND1", "round1_hash"]

ROUND1 = Statements(KEYGEN_SIGNED_ROUND1_PREFIX, 32, "round-1 message")
"""A party's statement "my ChillDKG round-1 message hashes to H" (``tss.equivocation``)."""


@dataclass(frozen=True)
class KeyMaterial:
    """One party's shares of a key before any ECDSA setup (fits ``tss.ecdsa.setup.KeyMaterial``)."""

    party_id: int
    threshold: int
    public_key: bytes
    public_shares: tuple[bytes, ...]
    secret_share: int = field(repr=False)
    chain_code: bytes = field(repr=False)
    epoch: int = 0

    def key_share(self, scheme: Scheme, setup: EcdsaSetup | None) -> KeyShare:
        if scheme == "ecdsa-secp256k1" and setup is None:
            # No pair setup yet: each is made on demand before a signature.
            setup = EcdsaSetup(self.party_id, len(self.public_shares), key_id(self), {})
        return KeyShare(
            scheme, self.party_id, self.threshold, self.public_key, self.public_shares,
            self.secret_share, self.chain_code, self.epoch, setup,
        )  # fmt: skip


class Keygen(Ceremony[KeyShare]):
    """One party's key generation; ``result`` is its ``KeyShare``.

    Rounds: 1 broadcasts ChillDKG's first message with the party's host-key
    signature on its hash; 2 its CertEq signature and the echo of every signed
    round-1 hash it used, released only after the runner saved ``pending``
    (``confirm_saved``). For ecdsa-secp256k1, rounds 3 and 4 run the DKLs23
    pairwise setup (``tss.ecdsa.keygen``) point to point, bound to the DKG's
    certificate.

    Arguments:
        scheme: "bip340", "ecdsa-secp256k1" or "ed25519".
        hostseckey: this party's 32-byte ChillDKG host secret key.
        hostpubkeys: every party's 33-byte host public key, in party-id order.
        threshold: t.
        rand: fresh randomness.
        session_id: never reused (signed round-1 messages are evidence only
            within one session).

    Raises (from ``receive``):
        FaultyParticipantError / ProtocolError: a malformed or unsigned
            message, a bad encrypted share (its sender, by investigation), or,
            when all transcripts agree, a bad certificate signature.
        EquivocationError: transcripts differ; names the parties proven to
            have signed two round-1 messages, and those that echoed a forgery.
    """

    def __init__(
        self,
        scheme: Scheme,
        hostseckey: bytes,
        hostpubkeys: Sequence[bytes],
        threshold: int,
        rand: Random,
        *,
        session_id: bytes,
    ) -> None:
        if scheme not in ("bip340", "ecdsa-secp256k1", "ed25519"):
            raise InputError(f"no key generation for {scheme!r}")
        if scheme == "ecdsa-secp256k1" and threshold < 2:
            raise InputError("ECDSA keyrings need a threshold of at least 2")
        if not session_id:
            raise InputError("a keygen needs a session id")
        self.rounds = 4 if scheme == "ecdsa-secp256k1" else 2
        self._group = group_of(scheme)
        self._params = chilldkg.SessionParams(tuple(hostpubkeys), threshold, self._group)
        me = self._params.hostpubkeys.index(chilldkg.hostpubkey_gen(hostseckey))
        super().__init__(me, range(len(hostpubkeys)), rand)
        self.scheme = scheme
        self._hostseckey = hostseckey
        # params_hash already binds the group; the scheme also tells bip340 from
        # ecdsa-secp256k1, which share it.
        scheme_bytes = scheme.encode()
        self._context = tagged_hash(
            KEYGEN_TAG_ROUND1_CONTEXT,
            len(session_id).to_bytes(4, "big")
            + session_id
            + chilldkg.params_hash(self._params)
            + len(scheme_bytes).to_bytes(1, "big")
            + scheme_bytes,
        )
        self._pmsgs1: dict[int, bytes] = {}
        self._contributions: dict[int, bytes] = {}  # to the chain code, by party
        self._round1: dict[int, SignedStatement] = {}
        self._pmsgs2: dict[int, bytes] = {}
        self._setup: EcdsaSetupCeremony | None = None
        self._pending_key: tuple[KeyMaterial, KeyShare] | None = None
        self.recovery_data: bytes | None = None
        """ChillDKG's recovery data (transcript and complete certificate), once finalized."""

    @property
    def context(self) -> bytes:
        """The context every signed round-1 message of this session binds."""
        return self._context

    def _start(self) -> list[Message]:
        self._state1, pmsg1 = chilldkg.participant_step1(
            self._hostseckey, self._params, self._rand(32)
        )
        contribution = self._rand(_CONTRIBUTION)
        message = contribution + pmsg1
        signed = ROUND1.sign(
            self._hostseckey, self._context, self.me, round1_hash(message), self._rand(32)
        )
        self._pmsgs1[self.me], self._round1[self.me] = pmsg1, signed
        self._contributions[self.me] = contribution
        return self._broadcast(1, message + signed.signature)

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        if self._setup is not None:  # rounds 3 and 4: the ECDSA setup's rounds 1 and 2
            out = _shift(self._setup.step(round_ - 2, payloads), 2)
            if self._setup.done:
                self._finish(self._setup.result)
            return out
        if round_ == 1:
            return self._round1_messages(payloads)
        return self._certify(payloads)

    def _round1_messages(self, payloads: Mapping[int, bytes]) -> list[Message]:
        """Check every signed round-1 message, aggregate as the coordinator, sign CertEq."""
        size = _CONTRIBUTION + chilldkg.pmsg1_len(self._params.t, self._params.n, self._group)
        for sender, payload in payloads.items():
            if len(payload) != size + 64:
                raise FaultyParticipantError(sender, "round-1 message has the wrong length")
            message = payload[:size]
            self._contributions[sender] = message[:_CONTRIBUTION]
            self._pmsgs1[sender] = message[_CONTRIBUTION:]
            self._round1[sender] = SignedStatement(round1_hash(message), payload[size:])
        others = {i: s for i, s in self._round1.items() if i != self.me}
        ROUND1.verify_all(self._context, self._params.hostpubkeys, others)
        pmsgs1 = [self._pmsgs1[i] for i in self.parties]
        self._cstate, _ = chilldkg.coordinator_step1(pmsgs1, self._params)
        try:
            self._state2, pmsg2 = chilldkg.participant_step2_as_coordinator(
                self._hostseckey, self._state1, self._cstate, self._rand(32)
            )
        except UnknownFaultyParticipantOrCoordinatorError as e:
            # ChillDKG's investigation, with ourselves as the coordinator: the
            # round-1 messages we hold (each sealed and signed by its sender)
            # say whose encrypted share to us is bad.
            cinv = chilldkg.coordinator_investigate(pmsgs1, self._params)[self.me]
            chilldkg.participant_investigate(e, cinv)
        self._pmsgs2[self.me] = pmsg2
        # Pending before agreement: pmsg2 is our CertEq signature, the message
        # that can complete a certificate, so our share is saved first.
        output = chilldkg.uncertified_output(self._state2)
        material = self._key_material(output)
        self._pending_key = (material, material.key_share(self.scheme, None))
        pending = PendingKeygen(
            self._pending_key[1], output.thresh_pk, 0,
            self._context, self._state2.eq_input, tuple(self._params.hostpubkeys), self.me,
        )  # fmt: skip
        return self._hold(pending, self._broadcast(2, pmsg2 + ROUND1.encode_view(self._view())))

    def _certify(self, payloads: Mapping[int, bytes]) -> list[Message]:
        """Judge the echoed transcripts, then the certificate; finalize ChillDKG."""
        views = {}
        for sender, payload in payloads.items():
            self._pmsgs2[sender] = payload[:64]
            views[sender] = ROUND1.parse_view(payload[64:], self._params.n, sender)
        # Certificate signatures are judged only once every party is shown to
        # have used our round-1 messages: on another transcript an honest
        # party's signature is invalid.
        ROUND1.judge_views(
            self._context, self.parties, self._params.hostpubkeys, self._view(), views
        )
        return self._finalize(b"".join(self._pmsgs2[i] for i in self.parties))

    def _finalize(self, certificate: bytes) -> list[Message]:
        try:
            key = self._key_from(certificate)
        except FaultyCoordinatorError:
            # Every transcript agrees, so an invalid signature is its signer's fault.
            pmsgs2 = [certificate[64 * i : 64 * (i + 1)] for i in self.parties]
            chilldkg.coordinator_finalize(self._cstate, pmsgs2)  # raises, blaming the signer
            raise
        self._key = key
        if self.scheme != "ecdsa-secp256k1":
            self._finish(self._share_of(key))
            return []
        # The certificate is the same for every party and fresh per ceremony.
        session_id = tagged_hash(KEYGEN_TAG_SETUP_SESSION, certificate + key.public_key)
        self._setup = EcdsaSetupCeremony(key, session_id, self._rand)
        return _shift(self._setup.first_messages(), 2)

    def _key_from(self, certificate: bytes) -> KeyMaterial:
        """ChillDKG's ``participant_finalize``: check the certificate, keep the recovery data."""
        output, recovery = chilldkg.participant_finalize(self._state2, certificate)
        self.recovery_data = bytes(recovery)
        return self._key_material(output)

    def _share_of(self, key: KeyMaterial) -> KeyShare:
        """The ``KeyShare`` of the certified ``key``: the pending share when it holds the
        same material (ChillDKG certifies the output it saved), so its checks (every
        point decoded, the secret share against its public share) run once."""
        if self._pending_key is not None and self._pending_key[0] == key:
            return self._pending_key[1]
        return key.key_share(self.scheme, None)

    def _key_material(self, output: chilldkg.DKGOutput) -> KeyMaterial:
        if output.secshare is None or output.participant != self.me:
            raise InputError("DKG output is not this participant's")
        chain_code = tagged_hash(
            KEYGEN_TAG_CHAIN_CODE,
            self._context + b"".join(self._contributions[i] for i in self.parties),
        )
        return KeyMaterial(
            self.me, self._params.t, output.thresh_pk, output.pubshares,
            self._group.decode_scalar(output.secshare), chain_code,
        )  # fmt: skip

    def finish_from_certificate(self, certificate: bytes) -> KeyShare:
        """Finish a keygen that aborted, or never got its last messages, from the
        complete certificate another party holds (the host keeps it with the
        wallet's epoch 0; a finished party has it as the last ``64n`` bytes of
        its ``recovery_data``).

        ChillDKG: a failed ``participant_finalize`` leaves the state usable, and
        a complete certificate over this party's own transcript proves the
        session succeeded for everyone. For ecdsa-secp256k1, the pairwise setup
        rounds that may be unfinished are abandoned: the share has no pair
        setup, and each is made on demand (``PairSetup``).

        Raises:
            SessionStateError: the keygen did not get as far as its CertEq
                signature, or already finished.
            FaultyCoordinatorError: ``certificate`` is not complete and valid.
        """
        if not hasattr(self, "_state2") or self.done:
            raise SessionStateError("nothing to finish from a certificate")
        if self._setup is None:  # the DKG is not finalized yet
            key = self._key_from(certificate)
        else:  # finalized; only the pairwise setup is unfinished
            try:
                chilldkg.certeq_verify(self._params, self._state2.eq_input, certificate)
            except (InputError, FaultyParticipantError) as e:
                raise FaultyCoordinatorError("the certificate is not valid") from e
            key = self._key
        share = key.key_share(self.scheme, None)
        self._finish(share)
        return share

    def _view(self) -> list[SignedStatement]:
        return [self._round1[i] for i in self.parties]


_CONTRIBUTION = 32  # a party's chain code contribution, first in its round-1 message


def round1_hash(message: bytes) -> bytes:
    """The value a party signs and echoes for its round-1 message (its chain code
    contribution, then its ChillDKG round-1 message)."""
    return tagged_hash(KEYGEN_TAG_ROUND1_HASH, message)


class EcdsaSetupCeremony(Ceremony[KeyShare]):
    """The DKLs23 pairwise setup (``tss.ecdsa.keygen``) for a key whose shares exist.

    Two point-to-point rounds among all parties of the keyring; ``result`` is
    the party's complete ecdsa-secp256k1 ``KeyShare``. Used after a DKG, an
    import and a reshare or refresh, which all need fresh setups for every pair.

    Arguments:
        key: this party's shares of the key.
        session_id: 32 bytes, the same for every party and fresh per ceremony.
        rand: fresh randomness.
    """

    rounds = 2

    def __init__(self, key: KeyMaterial, session_id: bytes, rand: Random) -> None:
        super().__init__(key.party_id, range(len(key.public_shares)), rand)
        self._key = key
        self._session_id = session_id

    def _start(self) -> list[Message]:
        self._state1, msgs = ecdsa_setup.setup_round1(self._key, self._session_id, self._rand(32))
        return self._p2p(1, msgs)

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        if round_ == 1:
            self._state2, msgs = ecdsa_setup.setup_round2(self._state1, payloads)
            return self._p2p(2, msgs)
        setup = ecdsa_setup.setup_finalize(self._state2, payloads)
        self._finish(self._key.key_share("ecdsa-secp256k1", setup))
        return []


class PairSetup(Ceremony[PeerSetup]):
    """A new DKLs23 setup for one pair of an existing ECDSA keyring (``tss.ecdsa.keygen``).

    The same two point-to-point rounds as ``EcdsaSetupCeremony``, between this
    party and ``peer`` only; ``result`` is this party's new ``PeerSetup`` for the
    pair (its ``setup_id`` is the same on both sides). It replaces the pair's
    previous setup, e.g. after a failed check burned it, or when the other side
    keeps its setups in memory only and has restarted (the enclave).

    Arguments:
        key: this party's shares of the key (a ``KeyShare`` fits).
        peer: the other party's index.
        session_id: any bytes, the same on both sides, fresh per ceremony.
        rand: fresh randomness.
    """

    rounds = 2

    def __init__(self, key: SetupKeyMaterial, peer: int, session_id: bytes, rand: Random) -> None:
        if peer == key.party_id or not 0 <= peer < len(key.public_shares):
            raise InputError("a pair setup needs another party of the keyring")
        super().__init__(key.party_id, sorted((key.party_id, peer)), rand)
        self._key = key
        self._peer = peer
        self._session_id = tagged_hash(PAIR_SETUP_TAG_SESSION, session_id)

    def _start(self) -> list[Message]:
        self._state1, msgs = ecdsa_setup.setup_round1(
            self._key, self._session_id, self._rand(32), [self._peer]
        )
        return self._p2p(1, msgs)

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        if round_ == 1:
            self._state2, msgs = ecdsa_setup.setup_round2(self._state1, payloads)
            return self._p2p(2, msgs)
        setup = ecdsa_setup.setup_finalize(self._state2, payloads)
        self._finish(setup.peer(self._peer))
        return []


def _shift(messages: list[Message], rounds: int) -> list[Message]:
    """Renumber an embedded ceremony's messages into the embedding one's rounds."""
    return [Message(m.round + rounds, m.sender, m.recipient, m.payload) for m in messages]
