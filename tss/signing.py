"""Signing ceremonies: one object per signer, for either scheme.

Ed25519 signing is FROST(Ed25519, SHA-512) as RFC 9591 specifies it
(``tss.rfc9591``) in the same two rounds, with the same signed nonces.

BIP-340 signing is FROST as BIP 445 specifies it (``tss.frost``): round 1
broadcasts public nonces, round 2 broadcasts partial signatures, and every
signer aggregates and verifies the final signature itself. With no trusted
coordinator, round-1 nonces are signed with the signers' host keys and round 2
echoes them (``tss.equivocation``): partial signatures are judged only when
every signer used the same nonces, and otherwise the signatures name who
equivocated. Only then is a signer whose partial signature fails
``PartialSigVerify`` blamed.

ECDSA signing is DKLs23 Protocol 3.6 (``tss.ecdsa.sign``): rounds 1 and 2 are
point to point, round 3 broadcasts the partial signatures, and every signer
combines and verifies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tss import frost, rfc9591
from tss.bip32 import derive_public
from tss.ceremony import Ceremony, Message, Random
from tss.curve import Point, tagged_hash
from tss.dkg.chilldkg import hostpubkey_gen
from tss.ecdsa import sign as dkls
from tss.ecdsa.sign import RecoverableSignature
from tss.equivocation import SignedStatement, Statements
from tss.errors import InputError, InvalidEncodingError
from tss.keyshare import KeyShare
from tss.tags import (
    FROST_ED25519_SIGNED_COMMITMENT_PREFIX,
    FROST_SIGNED_NONCE_PREFIX,
    FROST_TAG_NONCE_CONTEXT,
    SIGN_TAG_ECDSA_SESSION,
)
from tss.taproot import taproot_tweak

__all__ = [
    "HostKeys",
    "throwaway_host_keys",
    "SigningOptions",
    "Bip340Signing",
    "Ed25519Signing",
    "EcdsaSigning",
    "RecoverableSignature",
    "signing_tweaks",
    "signing_ceremony",
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


@dataclass(frozen=True)
class HostKeys:
    """A signer's ChillDKG host secret key and every keyring party's host public key.

    BIP-340 signers sign their round-1 nonces with the host key, so a signer
    that shows different nonces to different peers is proven to have done so
    (``tss.equivocation``).

    Attributes:
        seckey: this party's 32-byte host secret key (never printed).
        pubkeys: the 33-byte host public key of every keyring party, by party id.
    """

    seckey: bytes = field(repr=False)
    pubkeys: tuple[bytes, ...]

    def check(self, me: int, parties: int) -> None:
        """The keys fit party ``me`` of a keyring of ``parties``.

        Raises:
            InputError: a key for every party is missing, one is not a point, or
                ``seckey`` is not party ``me``'s.
        """
        if len(self.pubkeys) != parties:
            raise InputError("need the host public key of every keyring party")
        try:
            for pubkey in self.pubkeys:
                Point.from_bytes(pubkey)
        except InvalidEncodingError as e:
            raise InputError(f"a host public key is not a point: {e}") from e
        if hostpubkey_gen(self.seckey) != self.pubkeys[me]:
            raise InputError("the host secret key is not this party's")


def throwaway_host_keys(parties: int, rand: Random) -> list[HostKeys]:
    """Fresh host keys for ``parties`` parties that sign together in one process
    (``tss.local``, tests): no one outside the run is shown their evidence."""
    seckeys = [rand(32) for _ in range(parties)]
    pubkeys = tuple(hostpubkey_gen(k) for k in seckeys)
    return [HostKeys(k, pubkeys) for k in seckeys]


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


NONCES = Statements(FROST_SIGNED_NONCE_PREFIX, 66, "round-1 nonce")
"""A FROST signer's statement "my pubnonce for this signing is N" (``tss.equivocation``)."""


def nonce_context(
    session_id: bytes,
    public_key: bytes,
    msg: bytes,
    signers: Sequence[int],
    tweaks: Sequence[frost.Tweak],
) -> bytes:
    """What a signed round-1 nonce is for; every signer of one signing computes the same."""

    def field(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    return tagged_hash(
        FROST_TAG_NONCE_CONTEXT,
        field(session_id)
        + field(public_key)
        + field(msg)
        + field(b"".join(i.to_bytes(4, "big") for i in signers))
        + field(b"".join(t + bytes([x]) for t, x in tweaks)),
    )


class _FrostSigning(Ceremony[bytes]):
    """One signer's FROST ceremony with host-key-signed round-1 nonces; ``result`` is the signature.

    Round 1 broadcasts the signer's public nonce signed with its host key; round 2
    its partial signature and the signed nonces it used (``tss.equivocation``).
    Subclasses supply the FROST variant: its nonce statements and its three steps.

    Raises (from ``receive``):
        FaultyParticipantError / ProtocolError: a malformed message, a nonce
            without a valid host-key signature, or (when every signer used
            the same nonces) an invalid partial signature; culprits named.
        EquivocationError: signers used different nonces; names the signers
            proven to have signed two, and those that echoed a forgery.
    """

    rounds = 2
    scheme: str
    statements: Statements

    def __init__(
        self,
        share: KeyShare,
        signers: Sequence[int],
        message: bytes,
        session_id: bytes,
        rand: Random,
        tweaks: Sequence[frost.Tweak],
        host_keys: HostKeys,
    ) -> None:
        if share.scheme != self.scheme:
            raise InputError(f"{type(self).__name__} needs a {self.scheme} key share")
        if len(signers) < share.threshold:
            raise InputError(f"need at least {share.threshold} signers")
        super().__init__(share.party_id, sorted(signers), rand)
        host_keys.check(share.party_id, len(share.public_shares))
        self._share = share
        self._message = message
        self._session_id = session_id
        self._host_keys = host_keys
        self._tweaks = list(tweaks)
        self._context = nonce_context(
            session_id, share.public_key, message, self.parties, self._tweaks
        )
        self._nonces: dict[int, SignedStatement] = {}
        self._psigs: dict[int, bytes] = {}

    @property
    def context(self) -> bytes:
        """The context every signed nonce of this signing binds (to check evidence)."""
        return self._context

    def _nonce(self) -> bytes:
        """Round 1 of the FROST variant: make the secret state, return the public nonce."""
        raise NotImplementedError

    def _partial_signature(self, pubnonces: Mapping[int, bytes]) -> bytes:
        """Round 2 of the FROST variant: this signer's 32-byte partial signature."""
        raise NotImplementedError

    def _aggregate(self, psigs: Mapping[int, bytes]) -> bytes:
        """The verified signature; culprits named when a partial signature is invalid."""
        raise NotImplementedError

    def _start(self) -> list[Message]:
        pubnonce = self._nonce()
        signed = self.statements.sign(
            self._host_keys.seckey, self._context, self.me, pubnonce, self._rand(32)
        )
        self._nonces[self.me] = signed
        return self._broadcast(1, signed.to_bytes())

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        pubkeys = self._host_keys.pubkeys
        nonces = self.statements
        if round_ == 1:
            arrived = {sender: nonces.parse(p, sender) for sender, p in payloads.items()}
            nonces.verify_all(self._context, pubkeys, arrived)
            self._nonces.update(arrived)
            psig = self._partial_signature({i: n.value for i, n in self._nonces.items()})
            self._psigs[self.me] = psig
            return self._broadcast(2, psig + nonces.encode_view(self._view()))
        views = {}
        for sender, payload in payloads.items():
            self._psigs[sender] = payload[:32]
            views[sender] = nonces.parse_view(payload[32:], len(self.parties), sender)
        # Partial signatures are judged only once every signer is shown to have
        # used our nonces: in another view an honest signer's is invalid.
        nonces.judge_views(self._context, self.parties, pubkeys, self._view(), views)
        # Aggregate first, reusing round 2's session; partial signatures are
        # checked one by one only when the aggregate fails (as frost-rs does):
        # culprits are still named on every abort, and a released signature
        # always verifies (the self-check).
        self._finish(self._aggregate(self._psigs))
        return []

    def _view(self) -> list[SignedStatement]:
        return [self._nonces[i] for i in self.parties]


class Bip340Signing(_FrostSigning):
    """One signer's FROST (BIP 445) ceremony; ``result`` is the 64-byte BIP-340 signature."""

    scheme = "bip340"
    statements = NONCES

    def __init__(
        self,
        share: KeyShare,
        signers: Sequence[int],
        message: bytes,
        session_id: bytes,
        rand: Random,
        options: SigningOptions = NO_OPTIONS,
        *,
        host_keys: HostKeys,
    ) -> None:
        # (the base class refuses a share of another scheme)
        tweaks = signing_tweaks(share, options) if share.scheme == self.scheme else []
        super().__init__(share, signers, message, session_id, rand, tweaks, host_keys)

    def _nonce(self) -> bytes:
        s = self._share
        self._state, pubnonce = frost.signer_round1(
            s.party_id, s.secret_share, s.public_key, s.public_shares, s.threshold,
            self._message, self._session_id, self._rand(32),
        )  # fmt: skip
        return pubnonce

    def _partial_signature(self, pubnonces: Mapping[int, bytes]) -> bytes:
        return frost.signer_round2(self._state, self.parties, pubnonces, self._tweaks)

    def _aggregate(self, psigs: Mapping[int, bytes]) -> bytes:
        return frost.signer_aggregate(self._state, psigs)


ED25519_COMMITMENTS = Statements(FROST_ED25519_SIGNED_COMMITMENT_PREFIX, 64, "round-1 commitment")
"""An Ed25519 FROST signer's statement "my RFC 9591 commitment (D || E) is C"."""


class Ed25519Signing(_FrostSigning):
    """One signer's FROST(Ed25519, SHA-512) ceremony (RFC 9591); ``result`` is the
    64-byte RFC 8032 signature of the message bytes themselves (no digest, no tweaks)."""

    scheme = "ed25519"
    statements = ED25519_COMMITMENTS

    def __init__(
        self,
        share: KeyShare,
        signers: Sequence[int],
        message: bytes,
        session_id: bytes,
        rand: Random,
        options: SigningOptions = NO_OPTIONS,
        *,
        host_keys: HostKeys,
    ) -> None:
        if options != NO_OPTIONS:
            raise InputError("ed25519 keyrings sign with their own key: no derivation or taproot")
        super().__init__(share, signers, message, session_id, rand, (), host_keys)
        self._key = rfc9591.KeyMaterial(share.public_key, share.public_shares, share.threshold)
        # A KeyShare decoded every one of its points when it was made.
        self._checked_points.update((share.public_key, *share.public_shares))

    def _nonce(self) -> bytes:
        s = self._share
        self._state, commitment = rfc9591.signer_round1(
            rfc9591.FROST_ED25519, s.party_id, s.secret_share, self._key, self._message,
            self._rand(64),
        )  # fmt: skip
        return commitment

    def _partial_signature(self, pubnonces: Mapping[int, bytes]) -> bytes:
        return rfc9591.signer_round2(self._state, self.parties, pubnonces)

    def _aggregate(self, psigs: Mapping[int, bytes]) -> bytes:
        return rfc9591.signer_aggregate(self._state, psigs)


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


def signing_ceremony(
    share: KeyShare,
    signers: Sequence[int],
    digest: bytes,
    session_id: bytes,
    rand: Random,
    options: SigningOptions,
    host_keys: HostKeys,
) -> Bip340Signing | Ed25519Signing | EcdsaSigning:
    """The signing ceremony of ``share``'s scheme (the host keys sign FROST nonces only).

    ``digest`` is what the scheme signs: the message itself for bip340 and ed25519.
    """
    if share.scheme == "bip340":
        return Bip340Signing(share, signers, digest, session_id, rand, options, host_keys=host_keys)
    if share.scheme == "ed25519":
        return Ed25519Signing(
            share, signers, digest, session_id, rand, options, host_keys=host_keys
        )
    return EcdsaSigning(share, signers, digest, session_id, rand, options)
