"""Key generation ceremonies: ChillDKG for every scheme, plus the DKLs23 pairwise setup for ECDSA.

Every participant also plays ChillDKG's coordinator on the broadcast messages
(``coordinator_step1`` / ``coordinator_finalize`` are deterministic
aggregations, draft BIP "ChillDKG", "Coordinator"), so no party is trusted to
aggregate. A party that equivocates, sending different round-1 messages to
different peers, makes the CertEq check fail for everyone, and the session
aborts (ChillDKG's agreement property); the blamed signer is then the first
party whose certificate signature does not match *this* party's transcript.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tss.ceremony import Ceremony, Message, Random
from tss.curve import tagged_hash
from tss.dkg import chilldkg
from tss.ecdsa import keygen as ecdsa_setup
from tss.ecdsa.setup import EcdsaSetup
from tss.errors import FaultyCoordinatorError, InputError
from tss.keyshare import KeyShare, Scheme, default_chain_code
from tss.tags import KEYGEN_TAG_SETUP_SESSION

__all__ = ["Keygen", "EcdsaSetupCeremony", "KeyMaterial"]


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
        return KeyShare(
            scheme, self.party_id, self.threshold, self.public_key, self.public_shares,
            self.secret_share, self.chain_code, self.epoch, setup,
        )  # fmt: skip


class Keygen(Ceremony[KeyShare]):
    """One party's key generation; ``result`` is its ``KeyShare``.

    Rounds: 1 broadcasts ChillDKG's first message, 2 its CertEq signature. For
    ecdsa-secp256k1, rounds 3 and 4 run the DKLs23 pairwise setup
    (``tss.ecdsa.keygen``) point to point, bound to the DKG's certificate.

    Arguments:
        scheme: "bip340" or "ecdsa-secp256k1".
        hostseckey: this party's 32-byte ChillDKG host secret key.
        hostpubkeys: every party's 33-byte host public key, in party-id order.
        threshold: t.
        rand: fresh randomness.
    """

    def __init__(
        self,
        scheme: Scheme,
        hostseckey: bytes,
        hostpubkeys: Sequence[bytes],
        threshold: int,
        rand: Random,
    ) -> None:
        if scheme == "ecdsa-secp256k1" and threshold < 2:
            raise InputError("ECDSA keyrings need a threshold of at least 2")
        self.rounds = 2 if scheme == "bip340" else 4
        self._params = chilldkg.SessionParams(tuple(hostpubkeys), threshold)
        me = self._params.hostpubkeys.index(chilldkg.hostpubkey_gen(hostseckey))
        super().__init__(me, range(len(hostpubkeys)), rand)
        self.scheme = scheme
        self._hostseckey = hostseckey
        self._pmsgs1: dict[int, bytes] = {}
        self._pmsgs2: dict[int, bytes] = {}
        self._setup: EcdsaSetupCeremony | None = None

    def _start(self) -> list[Message]:
        self._state1, pmsg1 = chilldkg.participant_step1(
            self._hostseckey, self._params, self._rand(32)
        )
        self._pmsgs1[self.me] = pmsg1
        return self._broadcast(1, pmsg1)

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        if self._setup is not None:  # rounds 3 and 4: the ECDSA setup's rounds 1 and 2
            out = _shift(self._setup.step(round_ - 2, payloads), 2)
            if self._setup.done:
                self._finish(self._setup.result)
            return out
        if round_ == 1:
            self._pmsgs1.update(payloads)
            pmsgs1 = [self._pmsgs1[i] for i in self.parties]
            self._cstate, cmsg1 = chilldkg.coordinator_step1(pmsgs1, self._params)
            self._state2, pmsg2 = chilldkg.participant_step2(
                self._hostseckey, self._state1, cmsg1, self._rand(32)
            )
            self._pmsgs2[self.me] = pmsg2
            return self._broadcast(2, pmsg2)
        self._pmsgs2.update(payloads)
        pmsgs2 = [self._pmsgs2[i] for i in self.parties]
        # We are our own coordinator: the certificate is the signatures in
        # order. participant_finalize checks every signature, so the
        # coordinator's identical check runs only to name a culprit.
        cmsg2 = b"".join(pmsgs2)
        try:
            output, _recovery = chilldkg.participant_finalize(self._state2, cmsg2)
        except FaultyCoordinatorError:
            chilldkg.coordinator_finalize(self._cstate, pmsgs2)  # raises, blaming the signer
            raise
        if output.secshare is None or output.participant != self.me:
            raise InputError("DKG output is not this participant's")
        key = KeyMaterial(
            self.me, self._params.t, output.thresh_pk, output.pubshares,
            int.from_bytes(output.secshare, "big"), default_chain_code(output.thresh_pk),
        )  # fmt: skip
        if self.scheme == "bip340":
            self._finish(key.key_share("bip340", None))
            return []
        # The certificate is the same for every party and fresh per ceremony.
        session_id = tagged_hash(KEYGEN_TAG_SETUP_SESSION, cmsg2 + output.thresh_pk)
        self._setup = EcdsaSetupCeremony(key, session_id, self._rand)
        return _shift(self._setup.first_messages(), 2)


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


def _shift(messages: list[Message], rounds: int) -> list[Message]:
    """Renumber an embedded ceremony's messages into the embedding one's rounds."""
    return [Message(m.round + rounds, m.sender, m.recipient, m.payload) for m in messages]
