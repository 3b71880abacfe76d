"""Signing ceremonies: one object per signer, for either scheme.

BIP-340 signing is FROST as BIP 445 specifies it (``tss.frost``): round 1
broadcasts public nonces, round 2 broadcasts partial signatures, and every
signer aggregates and verifies the final signature itself, blaming any signer
whose partial signature fails ``PartialSigVerify``.

ECDSA signing is DKLs23 Protocol 3.6 (``tss.ecdsa.sign``): rounds 1 and 2 are
point to point, round 3 broadcasts the partial signatures, and every signer
combines and verifies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tss import frost
from tss.bip32 import derive_public
from tss.ceremony import Ceremony, Message, Random
from tss.curve import tagged_hash
from tss.ecdsa import sign as dkls
from tss.ecdsa.sign import RecoverableSignature
from tss.errors import InputError
from tss.keyshare import KeyShare
from tss.tags import SIGN_TAG_ECDSA_SESSION
from tss.taproot import taproot_tweak

__all__ = [
    "SigningOptions",
    "Bip340Signing",
    "EcdsaSigning",
    "RecoverableSignature",
    "signing_tweaks",
]


@dataclass(frozen=True)
class SigningOptions:
    """What to sign for besides the keyring's own key.

    Attributes:
        derivation_path: BIP-32 non-hardened child indices (empty: the keyring's key).
        taproot: bip340 only: sign for the BIP-341 output key of the (derived) key.
        taproot_merkle_root: the 32-byte script tree root, or None for key-path only.
    """

    derivation_path: tuple[int, ...] = ()
    taproot: bool = False
    taproot_merkle_root: bytes | None = None


NO_OPTIONS = SigningOptions()
"""Sign for the keyring's own key: no derivation, no taproot tweak."""


def signing_tweaks(share: KeyShare, options: SigningOptions) -> list[frost.Tweak]:
    """The BIP 445 tweaks for ``options``: the BIP-32 plain tweak, then the BIP-341 x-only one."""
    tweaks: list[frost.Tweak] = []
    key = share.public_key
    if options.derivation_path:
        child = derive_public(share.public_key, share.chain_code, options.derivation_path)
        tweaks.append((child.tweak, False))
        key = child.public_key
    if options.taproot:
        tweaks.append((taproot_tweak(key[1:], options.taproot_merkle_root), True))
    elif options.taproot_merkle_root is not None:
        raise InputError("a taproot merkle root needs taproot=True")
    return tweaks


class Bip340Signing(Ceremony[bytes]):
    """One signer's FROST ceremony; ``result`` is the 64-byte BIP-340 signature."""

    rounds = 2

    def __init__(
        self,
        share: KeyShare,
        signers: Sequence[int],
        message: bytes,
        session_id: bytes,
        rand: Random,
        options: SigningOptions = NO_OPTIONS,
    ) -> None:
        if share.scheme != "bip340":
            raise InputError("Bip340Signing needs a bip340 key share")
        if len(signers) < share.threshold:
            raise InputError(f"need at least {share.threshold} signers")
        super().__init__(share.party_id, sorted(signers), rand)
        self._share = share
        self._message = message
        self._session_id = session_id
        self._tweaks = signing_tweaks(share, options)
        self._pubnonces: dict[int, bytes] = {}
        self._psigs: dict[int, bytes] = {}

    def _start(self) -> list[Message]:
        s = self._share
        self._state, pubnonce = frost.signer_round1(
            s.party_id, s.secret_share, s.public_key, s.public_shares, s.threshold,
            self._message, self._session_id, self._rand(32),
        )  # fmt: skip
        self._pubnonces[self.me] = pubnonce
        return self._broadcast(1, pubnonce)

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        if round_ == 1:
            self._pubnonces.update(payloads)
            psig = frost.signer_round2(self._state, self.parties, self._pubnonces, self._tweaks)
            self._psigs[self.me] = psig
            return self._broadcast(2, psig)
        self._psigs.update(payloads)
        # Aggregate first, reusing round 2's session; partial signatures are
        # checked one by one only when the aggregate fails (as frost-rs does):
        # culprits are still named on every abort, and a released signature
        # always verifies (the self-check).
        signature = frost.signer_aggregate(self._state, self._psigs)
        self._finish(signature)
        return []


class EcdsaSigning(Ceremony[RecoverableSignature]):
    """One signer's DKLs23 ceremony; ``result`` is the low-s signature with its recovery id.

    Only 32-byte digests are signed. A failed check burns the pair with the
    culprit inside ``share.ecdsa``: persist the share again after a failure.
    """

    rounds = 3

    def __init__(
        self,
        share: KeyShare,
        signers: Sequence[int],
        digest: bytes,
        session_id: bytes,
        rand: Random,
        options: SigningOptions = NO_OPTIONS,
    ) -> None:
        if share.scheme != "ecdsa-secp256k1" or share.ecdsa is None:
            raise InputError("EcdsaSigning needs an ecdsa-secp256k1 key share")
        if len(digest) != 32:
            raise InputError("ECDSA signs 32-byte digests only")
        if options.taproot or options.taproot_merkle_root is not None:
            raise InputError("taproot tweaks apply to bip340 keyrings only")
        super().__init__(share.party_id, sorted(signers), rand)
        self._share = share
        self._setup = share.ecdsa
        self._digest = digest
        # DKLs23 takes a 32-byte session id; any caller-given id is hashed to one.
        self._session_id = tagged_hash(SIGN_TAG_ECDSA_SESSION, session_id)
        path = options.derivation_path
        self._tweak = (
            int.from_bytes(derive_public(share.public_key, share.chain_code, path).tweak, "big")
            if path
            else 0
        )

    def _start(self) -> list[Message]:
        self._state1, msgs = dkls.sign_round1(
            self._setup, self._share, self.parties, self._session_id, self._rand(32),
            self._digest, self._tweak,
        )  # fmt: skip
        return self._p2p(1, msgs)

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        if round_ == 1:
            self._state2, msgs = dkls.sign_round2(self._state1, payloads)
            return self._p2p(2, msgs)
        if round_ == 2:
            self._state3, partial = dkls.sign_round3(self._state2, payloads, self._digest)
            return self._broadcast(3, partial)
        self._finish(dkls.sign_combine(self._state3, payloads))
        return []
