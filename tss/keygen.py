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

from tss.ceremony import Ceremony, Message, Random
from tss.dkg import chilldkg
from tss.errors import InputError
from tss.keyshare import KeyShare, Scheme, default_chain_code

__all__ = ["Keygen"]


class Keygen(Ceremony[KeyShare]):
    """One party's key generation; ``result`` is its ``KeyShare``.

    Rounds: 1 broadcasts ChillDKG's first message, 2 its CertEq signature.

    Arguments:
        scheme: "bip340" (ECDSA keyrings are made by ``EcdsaKeygen``).
        hostseckey: this party's 32-byte ChillDKG host secret key.
        hostpubkeys: every party's 33-byte host public key, in party-id order.
        threshold: t.
        rand: fresh randomness.
    """

    rounds = 2

    def __init__(
        self,
        scheme: Scheme,
        hostseckey: bytes,
        hostpubkeys: Sequence[bytes],
        threshold: int,
        rand: Random,
    ) -> None:
        if scheme != "bip340":
            raise InputError("Keygen makes bip340 keyrings; use EcdsaKeygen for ECDSA")
        self._params = chilldkg.SessionParams(tuple(hostpubkeys), threshold)
        me = self._params.hostpubkeys.index(chilldkg.hostpubkey_gen(hostseckey))
        super().__init__(me, range(len(hostpubkeys)), rand)
        self.scheme = scheme
        self._hostseckey = hostseckey
        self._pmsgs1: dict[int, bytes] = {}
        self._pmsgs2: dict[int, bytes] = {}

    def _start(self) -> list[Message]:
        self._state1, pmsg1 = chilldkg.participant_step1(
            self._hostseckey, self._params, self._rand(32)
        )
        self._pmsgs1[self.me] = pmsg1
        return self._broadcast(1, pmsg1)

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
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
        cmsg2, _, _ = chilldkg.coordinator_finalize(
            self._cstate, [self._pmsgs2[i] for i in self.parties]
        )
        output, _recovery = chilldkg.participant_finalize(self._state2, cmsg2)
        self._finish(self._key_share(output))
        return []

    def _key_share(self, output: chilldkg.DKGOutput) -> KeyShare:
        if output.secshare is None or output.participant != self.me:
            raise InputError("DKG output is not this participant's")
        return KeyShare(
            scheme=self.scheme,
            party_id=self.me,
            threshold=self._params.t,
            public_key=output.thresh_pk,
            public_shares=output.pubshares,
            secret_share=int.from_bytes(output.secshare, "big"),
            chain_code=default_chain_code(output.thresh_pk),
        )
