"""The wallet SDK: create wallets with the server share and run every ceremony against it.

``WalletClient`` plays the relay coordinator (it creates rooms and signs
ceremony requests with the coordinator key the enclave pins) and runs the local
parties' sides of each ceremony (user devices, a customer server) over the
relay, while the host drives the server share in the enclave. Before any
ceremony it verifies the enclave's attestation document, which binds the
server party's keys (docs/architecture.md, "Parties and identities").

ECDSA: the enclave keeps its DKLs23 pair setups in memory only
(docs/security/ot-setups.md). Each sign request names, per device, the id of the
device's pair setup with the server party; when the enclave answers
``pair-setup-required`` (it restarted, or a failed check burned the pair),
``sign`` runs a new pair setup for its devices and retries once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client.errors import CeremonyFailed as CeremonyFailed  # re-exported: the SDK's names
from client.errors import InvalidInput, sdk_boundary
from client.errors import WalletError as WalletError
from client.sdk.approvals import Approver, approvals_of
from client.sdk.attestation import AttestationDocument, verify
from client.sdk.challenges import ChallengePool
from client.sdk.default_policy import default_policy_set, owner_approver
from client.sdk.host_session import HostTransport, host_calls
from client.sdk.key_change import KeyStore, PendingChange
from client.sdk.party import (
    PartyIdentity,
    Progress,
    keygen_ceremony,
    roster_of,
    run_over_relay,
    sign_ceremony,
)
from client.sdk.transport import Transport, TransportError, transport_error
from relay.client import CreatedRoom, RelayClient
from relay.errors import RelayError, status_code_for
from shardkeep import lifecycle
from shardkeep.policyset import PolicySet
from shardkeep.policyset import encode as encode_policy_set
from shardkeep.requests import (
    COORDINATOR_CONTEXT,
    MAX_ED25519_MESSAGE,
    OWNER_CONTEXT,
    sign_request,
)
from shardkeep.v1 import ceremony_pb2, host_pb2, host_pb2_grpc
from tss.ceremony import Ceremony
from tss.certificate import Pending, sign_epoch_ack
from tss.channel import Roster, party_id
from tss.dealer import import_dealer
from tss.dkg.chilldkg import hostpubkey_gen
from tss.ecdsa.setup import UNKNOWN_SETUP_ID, PeerSetup
from tss.errors import (
    FaultyParticipantError,
    InputError,
    ProtocolError,
    SessionStateError,
)
from tss.export import Export
from tss.keygen import PairSetup
from tss.keyshare import KeyShare, Scheme
from tss.reshare import PublicKeyring, Reshare
from tss.signing import (
    NO_OPTIONS,
    RecoverableSignature,
    SigningOptions,
)

_log = logging.getLogger(__name__)
PAIR_SETUP_REQUIRED = "pair-setup-required"
"""The ``shardkeep-reason`` of a sign refused for a missing or burned DKLs23 pair setup."""
CHALLENGE_REFUSED = "challenge-refused"
"""The ``shardkeep-reason`` of a request whose challenge the enclave does not know (it
restarted, another enclave issued it), or that was used or expired."""
POLICY_DENIED = "policy-denied"
"""The ``WalletError.reason`` when the wallet's policies refuse (the message names the
policy and its condition, or what approvals were missing)."""
POLICY_REQUIRED = "policy-required"
"""The ``WalletError.reason`` when the wallet has no policy set (made before sets existed):
the server share only lets it adopt one (``refresh(new_policy_set=...)``)."""
APPROVAL_REFUSED = "approval-refused"
"""The ``WalletError.reason`` when an approval does not verify (the message names the
authenticator and the fault)."""

MAX_BACKGROUND_CALLS = 64
"""Server calls of returned signatures that may still run; past this a signature waits for
the server's result (as other ceremonies do)."""
CLOSE_GRACE_S = 5.0
"""How long closing a ``WalletClient`` waits for those calls before it cancels them."""
LATE_FAILURES_KEPT = 32
"""How many failures of the server's side of returned signatures ``late_failures`` keeps."""

SCHEMES: dict[Scheme, str] = {
    "bip340": "SCHEME_BIP340",
    "ecdsa-secp256k1": "SCHEME_ECDSA_SECP256K1",
    "ed25519": "SCHEME_ED25519",
}
"""The schemes the service takes, by their protocol names."""


def _service_scheme(scheme: Scheme) -> str:
    if scheme not in SCHEMES:
        raise InvalidInput(f"the service does not take {scheme!r} wallets")
    return SCHEMES[scheme]


class KeyChangeError(WalletError):
    """A key change could not be settled (e.g. a certificate that does not verify)."""

    error_code = "key_change_failed"


class KeyChangeInterrupted(WalletError):
    """A key change failed after its new shares were saved as pending.

    ``pending`` is the saved change: :meth:`client.sdk.wallet.WalletClient.resume`
    settles it later (promote with the certificate, or discard); until then the
    old epoch signs.
    """

    error_code = "key_change_interrupted"

    def __init__(self, message: str, pending: PendingChange) -> None:
        super().__init__(message)
        self.pending = pending


class KeyChangeUndecided(WalletError):
    """The host has not decided the key change yet: try again after ``retry_after_unix``.

    The old epoch keeps signing meanwhile.
    """

    error_code = "key_change_undecided"

    def __init__(self, message: str, retry_after_unix: int) -> None:
        super().__init__(message)
        self.retry_after_unix = retry_after_unix


class KeyChangeSaveError(WalletError):
    """Saving the key change's shares failed (e.g. a full disk); the old epoch is intact."""

    error_code = "key_change_save_failed"


@dataclass(frozen=True)
class ServerParty:
    """The enclave's party as its attestation document vouches for it."""

    party: ceremony_pb2.Party
    document: AttestationDocument


@dataclass
class Wallet:
    """A keyring shared with the server share, and the key shares this client holds.

    Attributes:
        parties: every party in index order (the server party among them).
        server_index: the server party's index (None once a reshare removed it).
        shares: this client's key shares by party index.
        owner_key: the wallet owner's Ed25519 key (signs export and reshare requests).
        policy_set: the wallet's policy set, registered at keygen and sealed with
            the server share (None: a wallet made before sets existed; it adopts
            one by a refresh). Its ``epoch`` is the one it was registered at; the
            server share re-binds it to each new epoch (approvals follow).

    ECDSA: a pair setup replaces a share in ``shares`` (its setup with the server
    party); persist the wallet's shares again after a signature.
    """

    wallet_id: str
    scheme: Scheme
    threshold: int
    parties: list[ceremony_pb2.Party]
    server_index: int | None
    public_key: bytes
    epoch: int
    shares: dict[int, KeyShare] = field(repr=False)
    owner_key: Ed25519PrivateKey | None = field(default=None, repr=False)
    policy_set: PolicySet | None = None


def _affinity(request: ceremony_pb2.CeremonyRequest) -> str:
    """The host's routing key for a request's challenge: the wallet id of an ECDSA
    ceremony, whose DKLs23 pair setups live in one enclave's memory (a switch of
    enclave costs a pair setup, docs/security/ot-setups.md); none otherwise."""
    return request.wallet_id if request.scheme == ceremony_pb2.SCHEME_ECDSA_SECP256K1 else ""


@sdk_boundary
class WalletClient:
    """Talks to a host (the server share) and a relay as a coordinator.

    Arguments:
        host_address, relay_address: gRPC addresses (``host:port`` or ``unix:/path``).
        coordinator_key: the Ed25519 key the enclave pins as a coordinator.
        root_certificate: the attestation root (default: AWS Nitro root G1).
        expected_pcrs: PCR values the enclave image must have.
        allow_debug: accept debug-mode (all-zero PCR) enclaves.
        timeout: seconds for each ceremony.
        relay: a relay client to use instead of one on ``relay_address`` (the
            fault-injection tests pass one that drops, delays or interrupts messages).
        transport: TLS, client certificate and API token (default: plaintext, no token).
        relay_transport: "session" (rooms created on first join, every room on
            one Relay.Session stream; docs/transport.md) or "call" (a CreateRoom,
            Join and CloseRoom call per ceremony). Ignored with ``relay``.
        host_transport: "call" (the default: a unary call per ceremony and per
            challenge) or "session" (each a channel of one long-lived Host.Session
            stream, faster in flight; docs/transport.md).

    A signature returns as soon as the devices hold it (verified against the
    wallet's key); the server's side of it finishes in the background, and
    ``aclose`` (or leaving ``async with``) waits for it. When it fails after the
    signature was returned, the failure is logged (``client.sdk.wallet``, WARNING)
    and kept in ``late_failures`` (the last 32), with the culprits the server
    share named: a device it blames signed correctly for the others but not
    for the server share, and deserves a look.
    """

    def __init__(
        self,
        host_address: str,
        relay_address: str,
        coordinator_key: Ed25519PrivateKey,
        *,
        root_certificate: bytes | None = None,
        expected_pcrs: Mapping[int, bytes] | None = None,
        allow_debug: bool = False,
        timeout: float = 120.0,
        relay: RelayClient | None = None,
        transport: Transport | None = None,
        relay_transport: Literal["call", "session"] = "session",
        host_transport: HostTransport = "call",
    ) -> None:
        self._transport = transport or Transport()
        self._addresses = {"host": host_address, "relay": relay_address}
        self._host_channel = self._transport.host_channel(host_address)
        self._host = host_pb2_grpc.HostStub(self._host_channel)  # type: ignore[no-untyped-call]
        # Ceremonies and challenges, by call or on one Host.Session stream.
        self._host_calls = host_calls(self._host_channel, host_transport)
        # The enclave's next challenges, issued with each result (client.sdk.challenges).
        self._challenges = ChallengePool()
        # The server's calls of signatures already returned (bounded; closing waits for them).
        self._background: set[asyncio.Future[None]] = set()
        self.late_failures: deque[WalletError] = deque(maxlen=LATE_FAILURES_KEPT)
        self._closed = False
        self._relay = relay or RelayClient(
            self._transport.relay_channel(relay_address),
            coordinator=coordinator_key,
            session=relay_transport == "session",
        )
        self._coordinator = coordinator_key
        self._root = root_certificate
        self._pcrs = expected_pcrs
        self._allow_debug = allow_debug
        self._timeout = timeout

    async def __aenter__(self) -> WalletClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def settle(self) -> None:
        """Wait until the server's side of every signature already returned has ended
        (a benchmark counts their CPU and time; a failure lands in ``late_failures``)."""
        while self._background:
            await asyncio.wait(set(self._background))

    async def aclose(self) -> None:
        """Close the connections, after the server's side of returned signatures: each is
        waited for up to ``CLOSE_GRACE_S`` seconds, then cancelled."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_GRACE_S
        # Again while any is left: a signature in flight may return during the wait.
        while self._background:
            remaining = max(deadline - loop.time(), 0.0)
            _, late = await asyncio.wait(set(self._background), timeout=remaining)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._relay.aclose()
        await self._host_calls.aclose()
        await self._host_channel.close(None)

    # --- attestation -----------------------------------------------------------

    async def attest(self) -> ServerParty:
        """Fetch and verify a fresh attestation document; return the server party it vouches for.

        Raises:
            AttestationError: the document is not valid for the pinned root, PCRs or our nonce.
        """
        nonce = secrets.token_bytes(32)
        try:
            reply = await self._host.GetAttestation(
                host_pb2.HostAttestationRequest(nonce=nonce), timeout=30
            )
        except grpc.aio.AioRpcError as e:
            typed = self._connection_error(e, "host")
            if typed is None:
                raise WalletError(f"the host gave no attestation: {e.details()}", e.code()) from e
            raise typed from e
        document = verify(
            reply.document,
            root_certificate=self._root,
            expected_pcrs=self._pcrs,
            nonce=nonce,
            allow_debug=self._allow_debug,
        )
        if document.public_key is None or document.user_data is None:
            raise WalletError("the attestation document does not carry the server party's keys")
        party = ceremony_pb2.Party(
            party_id=party_id(document.public_key),
            static_key=document.public_key,
            host_pubkey=document.user_data,
        )
        return ServerParty(party, document)

    # --- ceremonies ------------------------------------------------------------------

    async def create_wallet(
        self,
        scheme: Scheme,
        devices: Sequence[PartyIdentity],
        *,
        threshold: int,
        owner_key: Ed25519PrivateKey | None = None,
        wallet_id: str | None = None,
        store: KeyStore | None = None,
        progress: Progress | None = None,
        policy_set: PolicySet | None = None,
        allow_raw_digest: bool = False,
    ) -> Wallet:
        """Run a keygen among ``devices`` and the server share (the server is the last party).

        With a ``store``, each device's new share is saved there as pending
        before the device releases its agreement (its CertEq signature), then
        committed: a keygen cut short after that is settled by :meth:`resume`
        (finished from the host's certificate, or discarded when the host
        aborted it, which frees the wallet id).

        Arguments:
            policy_set: authenticators and policies to register with the server
                share (its wallet id and epoch are filled in); from then on the
                server share acts for the wallet only with their approvals
                (docs/security/policy.md). Default: the owner approves every
                parsed activity and key change (``client.sdk.default_policy``),
                and this client approves with the owner approval key whenever
                no ``approvers`` are given.
            allow_raw_digest: the default set also lets the owner approve raw
                digests (and Ed25519 messages not declared Solana messages);
                without it, signing one is refused (reason ``policy-denied``).

        Returns:
            The wallet with every device's key share, saved in ``store`` if given;
            ``owner_key`` (a fresh one by default) is registered with the server
            share for export and reshare.

        Raises:
            InvalidInput: a threshold below 2 (the server share alone would be the key).
            KeyChangeSaveError: saving the new wallet failed (no address was handed
                out: nothing can have been paid to it).
            KeyChangeInterrupted: the keygen failed after the pending shares were
                saved; :meth:`resume` settles it.
        """
        lifecycle.check_server_threshold(threshold)
        service_scheme = _service_scheme(scheme)
        server = await self.attest()
        parties = [d.party for d in devices] + [server.party]
        owner = owner_key or Ed25519PrivateKey.generate()
        request = ceremony_pb2.CeremonyRequest(
            ceremony_id=_new_id("keygen"),
            kind=ceremony_pb2.CEREMONY_KIND_KEYGEN,
            scheme=service_scheme,
            wallet_id=wallet_id or _new_id("wallet"),
            threshold=threshold,
            parties=parties,
            owner_key=owner.public_key().public_bytes_raw(),
        )
        policy_set = _registered_set(request, owner, policy_set, allow_raw_digest, epoch=0)

        def build(req: ceremony_pb2.CeremonyRequest) -> tuple[Roster, dict[str, Ceremony[Any]]]:
            return roster_of(parties), {d.party_id: keygen_ceremony(req, d) for d in devices}

        def new_wallet(shares: Mapping[str, KeyShare], public_key: bytes) -> Wallet:
            by_index = {i: shares[d.party_id] for i, d in enumerate(devices)}
            return Wallet(
                request.wallet_id, scheme, threshold, parties, len(devices), public_key, 0,
                by_index, owner, policy_set,
            )  # fmt: skip

        saved: PendingChange | None = None

        async def on_pending(pendings: dict[str, Pending]) -> None:
            # Pending before agreement: the shares are durable before any CertEq leaves.
            nonlocal saved
            first = next(iter(pendings.values()))
            not_after = request.not_after_unix or int(time.time() + self._timeout)
            shares = {pid: p.share for pid, p in pendings.items() if p.share is not None}
            change = PendingChange(
                "keygen", new_wallet(shares, first.public_key), dict(enumerate(devices)),
                first.session_id, first.transcript, first.hostpubkeys,
                not_after + _DEADLINE_SLACK_S,
            )  # fmt: skip
            if store is not None:
                try:
                    await asyncio.to_thread(store.save_pending, change)
                except OSError as e:
                    raise KeyChangeSaveError(
                        f"saving the new wallet failed ({e.strerror or e}); create another one"
                    ) from e
            saved = change

        try:
            result, shares = await self._run(
                request, devices, build, server.party.party_id, progress,
                on_pending=None if store is None else on_pending,
            )  # fmt: skip
        except Exception as e:
            if isinstance(e, KeyChangeSaveError) or saved is None:
                raise
            # The host may have committed it (a device lost the last message):
            # finish from its certificate now, or leave it for resume.
            try:
                resumed = await self.resume(None, saved, store=store)
            except WalletError:
                resumed = None  # undecided yet
            else:
                if resumed is None:  # discarded: the host holds another keygen there
                    raise
                return resumed
            raise KeyChangeInterrupted(
                f"the keygen was interrupted after the new shares were saved ({_reason(e)}); "
                "resume it to finish or discard it",
                saved,
            ) from e
        for share in shares.values():
            if share.public_key != result.public_key:
                raise WalletError(
                    "the server share reported another public key than the devices got"
                )
        wallet = new_wallet(shares, result.public_key)
        if store is not None:  # the final shares (ECDSA: with their pair setups) settle the pending
            if saved is not None:
                try:
                    saved.verify(bytes(result.certificate))
                except (FaultyParticipantError, InputError) as e:
                    raise KeyChangeError(f"the keygen's certificate does not verify: {e}") from e
            try:
                await asyncio.to_thread(store.save, wallet, dict(enumerate(devices)))
            except OSError as e:
                if saved is not None:  # committed at the host: the pending shares finish it
                    raise KeyChangeInterrupted(
                        f"the keygen succeeded but saving it failed ({e.strerror or e}); "
                        "resume it once the device can save",
                        saved,
                    ) from e
                raise KeyChangeSaveError(
                    f"saving the new wallet failed ({e.strerror or e}); create another one"
                ) from e
        return wallet

    async def import_key(
        self,
        scheme: Scheme,
        private_key: bytes,
        devices: Sequence[PartyIdentity],
        *,
        threshold: int,
        owner_key: Ed25519PrivateKey | None = None,
        wallet_id: str | None = None,
        importer: PartyIdentity | None = None,
        chain_code: bytes | None = None,
        store: KeyStore | None = None,
        progress: Progress | None = None,
        policy_set: PolicySet | None = None,
        allow_raw_digest: bool = False,
    ) -> Wallet:
        """Split an existing private key among ``devices`` and the server share (the server last).

        The wallet keeps the key's public key (its addresses do not change).
        The importing party, ``importer`` (default ``devices[0]``), holds the
        key as the sole party of a 1-of-1 keyring (``tss.dealer.import_dealer``,
        epoch 0) and reshares it to the new parties. So the server party gets
        its share through the ordinary reshare path: Feldman-checked against
        the key, ECDSA pairwise setups made among the new holders, and only
        its own share ever reaches it; the host opens the wallet at the
        reshare's epoch (1) when the enclave stores that share. The request
        registers ``owner_key`` (a fresh one by default) and is signed with it.

        The key stays in this process's memory until it is garbage-collected
        (Python cannot wipe an immutable ``bytes``): erase its other copies.

        Arguments:
            scheme: "bip340", "ecdsa-secp256k1" or "ed25519".
            private_key: secp256k1: the 32-byte key to import (0 < key < n).
                ed25519: an RFC 8032 seed (32 bytes) or a Solana keypair (64
                bytes: seed || public key).
            devices: the local parties of the new keyring, in index order.
            threshold: t of the new keyring, at least 2 (with 1 the server share
                alone would be the key).
            owner_key: the wallet owner's Ed25519 key (signs export and reshare requests).
            wallet_id: the new wallet's id (default: a fresh one); the host
                refuses an id it already knows under another key.
            importer: the party that deals the key; if it is not one of
                ``devices`` it deals and leaves.
            chain_code: the key's 32-byte BIP-32 chain code, to keep its child
                addresses (default: 32 random bytes). It reaches the other
                parties inside the ceremony's end-to-end channels only.
            store: keeps the devices' shares, pending then committed (as :meth:`refresh`).
            policy_set, allow_raw_digest: as :meth:`create_wallet`.

        Returns:
            The wallet with every device's key share, at epoch 1.

        Raises:
            InvalidInput: a bad key, scheme, chain code, threshold or device list.
            KeyChangeSaveError, KeyChangeInterrupted: as :meth:`refresh`.
            WalletError: the server share refused or the ceremony failed.
        """
        if not devices:
            raise InvalidInput("an import needs at least one device")
        lifecycle.check_server_threshold(threshold)
        service_scheme = _service_scheme(scheme)
        # A key without a chain code gets a random one: never one the host could derive.
        keyring, material = import_dealer(
            scheme, private_key, chain_code or secrets.token_bytes(32)
        )
        server = await self.attest()
        dealer = importer or devices[0]
        new_parties = [d.party for d in devices] + [server.party]
        owner = owner_key or Ed25519PrivateKey.generate()
        request = ceremony_pb2.CeremonyRequest(
            ceremony_id=_new_id("import"),
            kind=ceremony_pb2.CEREMONY_KIND_RESHARE,
            scheme=service_scheme,
            wallet_id=wallet_id or _new_id("wallet"),
            parties=[dealer.party],
            signers=[0],
            epoch=keyring.epoch,
            new_threshold=threshold,
            new_parties=new_parties,
            keyring=lifecycle.keyring_to_proto(keyring),
            owner_key=owner.public_key().public_bytes_raw(),
        )
        registered = _registered_set(
            request, owner, policy_set, allow_raw_digest, epoch=keyring.epoch + 1
        )
        identities = {d.party_id: d for d in [dealer, *devices]}

        def build(req: ceremony_pb2.CeremonyRequest) -> tuple[Roster, dict[str, Ceremony[Any]]]:
            layout = lifecycle.reshare_layout(req, keyring)
            ceremonies: dict[str, Ceremony[Any]] = {}
            for pid in identities:
                seat = layout.seat_of(pid)
                if seat is not None:
                    dealing = material if seat in layout.plan.dealers else None
                    ceremonies[pid] = Reshare(
                        layout.plan, seat, dealing, secrets.token_bytes, identities[pid].hostseckey
                    )
            return layout.roster, ceremonies

        def new_wallet(shares: Mapping[str, KeyShare | None], epoch: int) -> Wallet:
            new = {j: _holder_share(shares[d.party_id]) for j, d in enumerate(devices)}
            if any(s.public_key != keyring.public_key for s in new.values()):
                raise WalletError("the imported wallet's public key is not the key's")
            return Wallet(
                request.wallet_id, scheme, threshold, new_parties, len(devices),
                keyring.public_key, epoch, new, owner, registered,
            )  # fmt: skip

        return await self._change_keys(
            "import", request, identities, build, server.party.party_id, progress,
            new_wallet, dict(enumerate(devices)), store, owner=owner,
        )  # fmt: skip

    async def sign(
        self,
        wallet: Wallet,
        digest: bytes,
        devices: Mapping[int, PartyIdentity],
        *,
        options: SigningOptions = NO_OPTIONS,
        with_server: bool = True,
        progress: Progress | None = None,
        approvers: Sequence[Approver] = (),
        payload: SignedPayload | None = None,
    ) -> bytes | RecoverableSignature:
        """Sign with ``devices`` (by party index) and, by default, the server.

        Arguments:
            digest: what the scheme signs: a 32-byte digest for bip340 and
                ecdsa-secp256k1; for ed25519 the message itself (1 to 65536
                bytes, e.g. a Solana transaction message: Ed25519 hashes it).
            approvers: the authenticators that approve this request (each
                signs its approval challenge); default: the owner approval key,
                if the wallet's set has it.
            payload: what ``digest`` is the digest of (a transaction or
                message), for the server share to parse, check against its
                policy and recompute the digest from.

        Returns:
            The BIP-340 or RFC 8032 signature, or for ECDSA the signature with
            its recovery id: the first device's own aggregate, which it verified
            against the wallet's (derived, tweaked) key. It returns once every
            device has it; the server's call may still be finishing (see the class).
        """
        if wallet.scheme == "ed25519":
            if not 1 <= len(digest) <= MAX_ED25519_MESSAGE:
                raise InvalidInput(f"an ed25519 message is 1 to {MAX_ED25519_MESSAGE} bytes")
        elif len(digest) != 32:
            raise InvalidInput("digest must be 32 bytes")
        server = wallet.server_index if with_server else None
        approvals = _Approvals(wallet, approvers, payload or SignedPayload())
        if wallet.scheme == "ecdsa-secp256k1" and server is not None:
            stale = {i: d for i, d in devices.items() if _server_setup_id(wallet, i) is None}
            if stale:  # e.g. a failed check burned the device's side of the pair
                await self.pair_setups(wallet, stale, progress=progress)
            try:
                return await self._sign(
                    wallet, digest, devices, server, options, progress, approvals
                )
            except WalletError as e:
                if e.reason != PAIR_SETUP_REQUIRED:
                    raise
            # The enclave has no usable setup (restarted, or a failed check burned
            # it): one new pair setup per device, then one retry.
            await self.pair_setups(wallet, devices, progress=progress)
        return await self._sign(wallet, digest, devices, server, options, progress, approvals)

    async def _sign(
        self,
        wallet: Wallet,
        digest: bytes,
        devices: Mapping[int, PartyIdentity],
        server: int | None,
        options: SigningOptions,
        progress: Progress | None,
        approvals: _Approvals,
    ) -> bytes | RecoverableSignature:
        signers = sorted([*devices, *([] if server is None else [server])])
        request = self._request(wallet, ceremony_pb2.CEREMONY_KIND_SIGN, signers=signers)
        if wallet.scheme == "ed25519":  # RFC 8032 signs the message, not a digest
            request.message = digest
        else:
            request.digest = digest
        approvals.payload.fill(request)
        request.derivation_path.extend(options.derivation_path)
        request.taproot = options.taproot
        request.taproot_merkle_root = options.taproot_merkle_root or b""
        if wallet.scheme == "ecdsa-secp256k1" and server is not None:
            for i in devices:
                request.pair_setup_ids[i] = _server_setup_id(wallet, i) or UNKNOWN_SETUP_ID

        def build(req: ceremony_pb2.CeremonyRequest) -> tuple[Roster, dict[str, Ceremony[Any]]]:
            return roster_of(wallet.parties, signers), {
                d.party_id: sign_ceremony(req, d, wallet.shares[i]) for i, d in devices.items()
            }

        server_id = None if server is None else wallet.parties[server].party_id
        _, results = await self._run(
            request, list(devices.values()), build, server_id, progress, approvals=approvals
        )
        signature: bytes | RecoverableSignature = results[devices[min(devices)].party_id]
        return signature

    async def pair_setups(
        self,
        wallet: Wallet,
        devices: Mapping[int, PartyIdentity],
        *,
        progress: Progress | None = None,
    ) -> None:
        """Run a new DKLs23 pair setup between each device and the server party (ECDSA).

        The enclave keeps its side in memory only; each device's share gets its
        new side in place of the old one (``wallet.shares`` is updated: persist it).

        Raises:
            InvalidInput: not an ECDSA wallet with the server party.
            WalletError: the server share refused or the ceremony failed.
        """
        server = wallet.server_index
        if wallet.scheme != "ecdsa-secp256k1" or server is None:
            raise InvalidInput("pair setups are for ECDSA wallets with the server party")
        for i, device in sorted(devices.items()):
            share = wallet.shares[i]
            request = self._request(
                wallet, ceremony_pb2.CEREMONY_KIND_PAIR_SETUP, signers=sorted((i, server))
            )

            def build(
                req: ceremony_pb2.CeremonyRequest, i: int = i, share: KeyShare = share
            ) -> tuple[Roster, dict[str, Ceremony[Any]]]:
                session_id = lifecycle.lifecycle_session_id(req)
                return roster_of(wallet.parties, sorted((i, server))), {
                    wallet.parties[i].party_id: PairSetup(
                        share, server, session_id, secrets.token_bytes
                    )
                }

            _, results = await self._run(
                request, [device], build, wallet.parties[server].party_id, progress
            )
            setup: PeerSetup = results[device.party_id]
            if share.ecdsa is None:
                raise WalletError("the device's share has no ECDSA setup")
            wallet.shares[i] = replace(share, ecdsa=share.ecdsa.with_peer(setup))

    async def refresh(
        self,
        wallet: Wallet,
        devices: Mapping[int, PartyIdentity],
        *,
        store: KeyStore | None = None,
        progress: Progress | None = None,
        approvers: Sequence[Approver] = (),
        new_policy_set: PolicySet | None = None,
    ) -> Wallet:
        """New secret shares for every party, the same key (epoch + 1); every party takes part.

        ``approvers`` approve the refresh (default: the owner approval key).
        ``new_policy_set`` replaces the wallet's policy set from the new epoch
        on (its wallet id and epoch are filled in; its version must exceed the
        current one's): adding or removing an authenticator or a policy is a
        refresh approved under the set in force (docs/security/policy.md). A
        wallet made before policy sets existed has none: it adopts one this
        way (approved under the new set), e.g.
        ``client.sdk.default_policy.default_policy_set``.

        The new shares are saved through ``store`` as pending before the devices
        agree, and committed there once the certificate verifies (see
        :meth:`resume` for a change that is interrupted in between).

        Returns:
            The wallet at the new epoch with the devices' new shares (the old ones
            no longer combine with them).

        Raises:
            KeyChangeSaveError: saving the pending shares failed; nothing changed.
            KeyChangeInterrupted: the change failed after the pending shares were
                saved (``pending``); resume it later.
            WalletError: the change failed before; the old epoch stays.
        """
        members = [*devices, *([] if wallet.server_index is None else [wallet.server_index])]
        if sorted(members) != list(range(len(wallet.parties))):
            raise InvalidInput("every party of the keyring takes part in a refresh")
        request = self._request(wallet, ceremony_pb2.CEREMONY_KIND_REFRESH)
        policy_set = wallet.policy_set
        if new_policy_set is not None:
            policy_set = replace(new_policy_set, wallet_id=wallet.wallet_id, epoch=wallet.epoch + 1)
            request.policy_set = encode_policy_set(policy_set)

        def build(req: ceremony_pb2.CeremonyRequest) -> tuple[Roster, dict[str, Ceremony[Any]]]:
            layout = lifecycle.refresh_layout(req, PublicKeyring.from_share(_any_share(wallet)))
            return layout.roster, {
                d.party_id: Reshare(
                    layout.plan, i, wallet.shares[i], secrets.token_bytes, d.hostseckey
                )
                for i, d in devices.items()
            }

        def new_wallet(shares: Mapping[str, KeyShare | None], epoch: int) -> Wallet:
            new = {i: _holder_share(shares[d.party_id]) for i, d in devices.items()}
            return replace(wallet, epoch=epoch, shares=new, policy_set=policy_set)

        return await self._change_keys(
            "refresh", request, dict(devices), build, self._server_id(wallet), progress,
            new_wallet, dict(devices), store,
            approvals=_Approvals(
                wallet, approvers, adopting=None if new_policy_set is None else policy_set
            ),
        )  # fmt: skip

    async def reshare(
        self,
        wallet: Wallet,
        dealers: Mapping[int, PartyIdentity],
        new_devices: Sequence[PartyIdentity],
        *,
        threshold: int,
        keep_server: bool = True,
        store: KeyStore | None = None,
        progress: Progress | None = None,
        approvers: Sequence[Approver] = (),
    ) -> Wallet:
        """Move the key to a new set of parties and threshold, the same public key (epoch + 1).

        ``approvers`` approve the reshare for a wallet with a policy set.

        Arguments:
            dealers: the current devices (by party index) that deal, with the
                server share (at least the current threshold in all).
            new_devices: the devices of the new keyring, in index order; the
                server is appended last unless ``keep_server`` is False.
            threshold: the new threshold (at least 2 while the server keeps a share).

        Returns:
            The new wallet: its parties, the new devices' shares by new index.

        Raises:
            InvalidInput: no owner key, or a threshold of 1 with the server share.
            KeyChangeSaveError, KeyChangeInterrupted, WalletError: as :meth:`refresh`
                (``store`` keeps the new devices' shares and identities).
        """
        if wallet.owner_key is None:
            raise InvalidInput("a reshare needs the wallet owner's key")
        server = wallet.parties[wallet.server_index] if wallet.server_index is not None else None
        if keep_server and server is not None:
            lifecycle.check_server_threshold(threshold)
        new_parties = [d.party for d in new_devices] + ([server] if keep_server and server else [])
        signers = sorted(
            [*dealers, *([] if wallet.server_index is None else [wallet.server_index])]
        )
        request = self._request(wallet, ceremony_pb2.CEREMONY_KIND_RESHARE, signers=signers)
        request.new_threshold = threshold
        request.new_parties.extend(new_parties)
        current = PublicKeyring.from_share(_any_share(wallet))
        request.keyring.CopyFrom(lifecycle.keyring_to_proto(current))
        identities = {d.party_id: d for d in [*dealers.values(), *new_devices]}
        old_share = {d.party_id: wallet.shares[i] for i, d in dealers.items()}

        def build(req: ceremony_pb2.CeremonyRequest) -> tuple[Roster, dict[str, Ceremony[Any]]]:
            layout = lifecycle.reshare_layout(req, current)
            ceremonies: dict[str, Ceremony[Any]] = {}
            for pid in identities:
                seat = layout.seat_of(pid)
                if seat is not None:
                    dealing = old_share.get(pid) if seat in layout.plan.dealers else None
                    ceremonies[pid] = Reshare(
                        layout.plan, seat, dealing, secrets.token_bytes, identities[pid].hostseckey
                    )
            return layout.roster, ceremonies

        def new_wallet(shares: Mapping[str, KeyShare | None], epoch: int) -> Wallet:
            return replace(
                wallet, threshold=threshold, parties=new_parties,
                server_index=len(new_devices) if keep_server and server else None, epoch=epoch,
                shares={j: _holder_share(shares[d.party_id]) for j, d in enumerate(new_devices)},
            )  # fmt: skip

        return await self._change_keys(
            "reshare", request, identities, build, self._server_id(wallet), progress,
            new_wallet, dict(enumerate(new_devices)), store, owner=wallet.owner_key,
            approvals=_Approvals(wallet, approvers),
        )  # fmt: skip

    async def export(
        self,
        wallet: Wallet,
        quorum: Mapping[int, PartyIdentity],
        recipient: PartyIdentity,
        *,
        with_server: bool = True,
        progress: Progress | None = None,
        approvers: Sequence[Approver] = (),
    ) -> bytes:
        """Reconstruct the private key for ``recipient`` only (needs the owner's signature;
        for a wallet with a policy set, ``approvers`` approve it).

        Every contribution is sealed to a one-time X25519 key of the recipient;
        the relay, the host and the other parties never see the key.

        Returns:
            The 32-byte private key, checked against the wallet's public key.
        """
        if wallet.owner_key is None:
            raise InvalidInput("an export needs the wallet owner's key")
        one_time = X25519PrivateKey.generate()
        server = wallet.server_index if with_server else None
        signers = sorted([*quorum, *([] if server is None else [server])])
        request = self._request(wallet, ceremony_pb2.CEREMONY_KIND_EXPORT, signers=signers)
        request.export_recipient.CopyFrom(recipient.party)
        request.export_recipient_key = one_time.public_key().public_bytes_raw()
        current = PublicKeyring.from_share(_any_share(wallet))
        identities = {d.party_id: d for d in [*quorum.values(), recipient]}
        shares = {d.party_id: wallet.shares[i] for i, d in quorum.items()}

        def build(req: ceremony_pb2.CeremonyRequest) -> tuple[Roster, dict[str, Ceremony[Any]]]:
            layout = lifecycle.export_layout(req, current)
            ceremonies: dict[str, Ceremony[Any]] = {}
            for pid in identities:
                seat = layout.seat_of(pid)
                if seat is None:
                    continue
                mine = shares.get(pid) if seat in layout.plan.quorum else None
                key = one_time.private_bytes_raw() if pid == recipient.party_id else None
                ceremonies[pid] = Export(layout.plan, seat, mine, secrets.token_bytes, key)
            return layout.roster, ceremonies

        server_id = None if server is None else wallet.parties[server].party_id
        _, outputs = await self._run(
            request, list(identities.values()), build, server_id, progress,
            owner=wallet.owner_key, approvals=_Approvals(wallet, approvers),
        )  # fmt: skip
        private_key = outputs[recipient.party_id].private_key
        if private_key is None:
            raise WalletError("the export delivered no key to the recipient")
        return bytes(private_key)

    async def acknowledge_epoch(self, wallet: Wallet, devices: Mapping[int, PartyIdentity]) -> int:
        """Tell the host that ``devices`` use the wallet's current epoch (their new shares are
        stored): each signs an acknowledgment with its host key (``tss.certificate``).

        Once every seat of the key change acknowledged, the host prunes the old epochs,
        whose shares then no longer sign.

        Returns:
            The number of retired epochs the host pruned.

        Raises:
            WalletError: the host refused (the epoch is no committed key change, a
                device is not one of its seats).
        """
        try:
            epochs = await self._host.GetEpochs(
                host_pb2.GetEpochsRequest(wallet_id=wallet.wallet_id), timeout=self._timeout
            )
            (record,) = [e for e in epochs.epochs if e.epoch == wallet.epoch] or [None]
            if record is None or not record.HasField("key_change"):
                raise WalletError(f"epoch {wallet.epoch} is no key change the host keeps")
            keys = [bytes(k) for k in record.key_change.host_pubkeys]
            pruned = 0
            for device in devices.values():
                mine = hostpubkey_gen(device.hostseckey)
                if mine not in keys:
                    raise WalletError(f"party {device.party_id} is no seat of epoch {wallet.epoch}")
                position = keys.index(mine)
                signature = sign_epoch_ack(
                    device.hostseckey, wallet.wallet_id, wallet.epoch,
                    bytes(record.key_change.transcript), position, secrets.token_bytes(32),
                )  # fmt: skip
                reply = await self._host.AckEpoch(
                    host_pb2.AckEpochRequest(
                        wallet_id=wallet.wallet_id,
                        epoch=wallet.epoch,
                        position=position,
                        signature=signature,
                    ),
                    timeout=self._timeout,
                )
                pruned += reply.pruned
        except grpc.aio.AioRpcError as e:
            raise WalletError(f"the host refused: {e.details()}", e.code()) from e
        return pruned

    async def resume(
        self,
        wallet: Wallet | None,
        pending: PendingChange,
        *,
        devices: Mapping[int, PartyIdentity] | None = None,
        store: KeyStore | None = None,
    ) -> Wallet | None:
        """Settle a key change that was interrupted after its new shares were saved.

        Asks the host for the wallet's epochs (``GetEpochs``):

        - the change's epoch is committed: its certificate must verify against
          the pending change (session id, transcript, seats' host keys), then
          ``store`` promotes the new shares and the devices acknowledge the epoch;
        - it is still pending and this client holds the complete certificate:
          submit it (``SubmitCertificate``), then promote as above;
        - the host holds no such change and can no longer commit one (its
          deadline passed, or another change took the epoch): ``store`` discards
          the new shares, and the old wallet stays.

        Arguments:
            wallet: the committed wallet (None for an import that never committed).
            pending: the saved change (``KeyChangeInterrupted.pending``, or the store's).
            devices: the committed wallet's local identities (a dealer that left
                acknowledges too).
            store: where the shares are kept (None: the caller keeps the result).

        Returns:
            The wallet that signs now: the new one, or ``wallet``.

        Raises:
            KeyChangeUndecided: the host has not decided yet; the old wallet signs meanwhile.
            KeyChangeError: the host's certificate does not verify (nothing changed).
            KeyChangeInterrupted: promoting the shares in ``store`` failed.
            WalletError: the host could not be asked.
        """
        wallet_id = pending.wallet.wallet_id
        try:
            epochs: host_pb2.Epochs = await self._host.GetEpochs(
                host_pb2.GetEpochsRequest(wallet_id=wallet_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:  # NOT_FOUND: an import that never was
                raise WalletError(
                    f"the host could not list the epochs: {e.details()}", e.code()
                ) from e
            epochs = host_pb2.Epochs()
        record = next((r for r in epochs.epochs if r.epoch == pending.epoch), None)
        if pending.kind == "keygen":
            # Epoch 0 carries ChillDKG's certificate and no KeyChange. Committed, it is
            # ours only if its certificate verifies on our transcript (the id may have
            # been freed and taken by another keygen); pending, the host decides.
            ours = record is not None and (
                record.state == "pending" or _certifies(pending, bytes(record.certificate))
            )
        else:
            ours = record is not None and (
                bytes(record.key_change.session_id),
                bytes(record.key_change.transcript),
            ) == (pending.session_id, pending.transcript)
        if record is not None and ours and record.state in ("committed", "retired"):
            return await self._promote(pending, bytes(record.certificate), store, devices)
        if record is not None and ours and record.state == "pending":
            if not pending.certificate or pending.kind == "keygen":  # the host commits keygen
                raise KeyChangeUndecided(
                    f"epoch {pending.epoch} of wallet {wallet_id} is pending at the host",
                    record.deadline_unix_ms // 1000,
                )
            try:
                await self._host.SubmitCertificate(
                    host_pb2.SubmitCertificateRequest(
                        wallet_id=wallet_id, epoch=pending.epoch, certificate=pending.certificate
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as e:
                raise WalletError(
                    f"the host refused the certificate: {e.details()}", e.code()
                ) from e
            return await self._promote(pending, pending.certificate, store, devices)
        if record is None and not pending.expired():
            raise KeyChangeUndecided(
                f"the host may still store epoch {pending.epoch} of wallet {wallet_id}",
                pending.deadline_unix,
            )
        if store is not None:
            await asyncio.to_thread(store.discard, pending)
        return wallet

    async def _change_keys(
        self,
        kind: str,
        request: ceremony_pb2.CeremonyRequest,
        identities: Mapping[Any, PartyIdentity],
        build: Callable[[ceremony_pb2.CeremonyRequest], tuple[Roster, dict[str, Ceremony[Any]]]],
        server_id: str | None,
        progress: Progress | None,
        new_wallet: Callable[[Mapping[str, KeyShare | None], int], Wallet],
        new_devices: dict[int, PartyIdentity],
        store: KeyStore | None,
        *,
        owner: Ed25519PrivateKey | None = None,
        approvals: _Approvals | None = None,
    ) -> Wallet:
        """Run a key change: save the pending shares before any local party agrees, then
        commit them with the verified certificate and acknowledge the new epoch."""
        saved: PendingChange | None = None
        local: dict[str, Ceremony[Any]] = {}

        def tracked(req: ceremony_pb2.CeremonyRequest) -> tuple[Roster, dict[str, Ceremony[Any]]]:
            roster, ceremonies = build(req)
            local.clear()
            local.update(ceremonies)
            return roster, ceremonies

        async def on_pending(pendings: dict[str, Pending]) -> None:
            nonlocal saved
            first = next(iter(pendings.values()))
            not_after = request.not_after_unix or int(time.time() + self._timeout)
            change = PendingChange(
                kind, new_wallet({pid: p.share for pid, p in pendings.items()}, first.epoch),
                new_devices, first.session_id, first.transcript, first.hostpubkeys,
                not_after + _DEADLINE_SLACK_S,
            )  # fmt: skip
            if store is not None:
                try:
                    await asyncio.to_thread(store.save_pending, change)
                except OSError as e:
                    raise KeyChangeSaveError(
                        f"saving the new shares failed ({e.strerror or e}); the old ones are intact"
                    ) from e
            saved = change

        try:
            _, outputs = await self._run(
                request, list(identities.values()), tracked, server_id, progress,
                owner=owner, on_pending=on_pending, approvals=approvals,
            )  # fmt: skip
        except Exception as e:
            if isinstance(e, KeyChangeSaveError):
                raise
            if saved is not None:
                # A local party that got every signature holds the complete
                # certificate: hand it to the host now (it keeps the epoch pending).
                saved.certificate = next(
                    (c.result.certificate for c in local.values() if c.done), b""
                )
                if saved.certificate:
                    with contextlib.suppress(WalletError):
                        resumed = await self.resume(None, saved, devices=identities, store=store)
                        if resumed is not None:
                            return resumed
                raise KeyChangeInterrupted(
                    f"the {kind} was interrupted after the new shares were saved "
                    f"({_reason(e)}); resume it to finish or discard it",
                    saved,
                ) from e
            raise
        if saved is None:
            raise KeyChangeError(f"the {kind} ended without pending shares")
        certificate = next((o.certificate for o in outputs.values() if o.certificate), b"")
        return await self._promote(saved, certificate, store, identities)

    async def _promote(
        self,
        change: PendingChange,
        certificate: bytes,
        store: KeyStore | None,
        others: Mapping[Any, PartyIdentity] | None,
    ) -> Wallet:
        """Commit a pending change whose ``certificate`` verifies; once ``store`` holds it,
        acknowledge its epoch (without a store the caller does, after saving)."""
        try:
            change.verify(certificate)
        except (FaultyParticipantError, InputError) as e:
            raise KeyChangeError(
                f"the certificate of epoch {change.epoch} does not verify: {e}"
            ) from e
        change.certificate = certificate
        if store is None:
            return change.wallet  # the caller saves it, then calls acknowledge_epoch
        try:
            await asyncio.to_thread(store.commit, change)
        except OSError as e:
            raise KeyChangeInterrupted(
                f"the key change succeeded but saving its shares failed ({e.strerror or e}); "
                "resume it once the device can save",
                change,
            ) from e
        if change.kind == "keygen":
            return change.wallet  # no older epoch to retire
        # Durable now: the host may drop the old epoch once every seat said so.
        seats = {hostpubkey_gen(d.hostseckey): d for d in [*change.devices.values()]}
        seats |= {hostpubkey_gen(d.hostseckey): d for d in (others or {}).values()}
        mine = {i: d for i, (k, d) in enumerate(seats.items()) if k in change.hostpubkeys}
        with contextlib.suppress(WalletError):  # best effort: the old epoch just stays longer
            await self.acknowledge_epoch(change.wallet, mine)
        return change.wallet

    # --- plumbing ----------------------------------------------------------------------

    def _request(
        self,
        wallet: Wallet,
        kind: ceremony_pb2.CeremonyKind,
        *,
        signers: Sequence[int] = (),
    ) -> ceremony_pb2.CeremonyRequest:
        name = ceremony_pb2.CeremonyKind.Name(kind).removeprefix("CEREMONY_KIND_").lower()
        return ceremony_pb2.CeremonyRequest(
            ceremony_id=_new_id(name),
            kind=kind,
            scheme=SCHEMES[wallet.scheme],
            wallet_id=wallet.wallet_id,
            parties=wallet.parties,
            signers=signers,
            epoch=wallet.epoch,
        )

    @staticmethod
    def _server_id(wallet: Wallet) -> str | None:
        return None if wallet.server_index is None else wallet.parties[wallet.server_index].party_id

    async def _run(
        self,
        request: ceremony_pb2.CeremonyRequest,
        devices: Sequence[PartyIdentity],
        build: Callable[[ceremony_pb2.CeremonyRequest], tuple[Roster, dict[str, Ceremony[Any]]]],
        server_id: str | None,
        progress: Progress | None,
        *,
        owner: Ed25519PrivateKey | None = None,
        on_pending: SavePendings | None = None,
        approvals: _Approvals | None = None,
    ) -> tuple[ceremony_pb2.CeremonyResult, dict[str, Any]]:
        """Create the room, run each local party's ceremony over it and the server's through
        the host; return the host's result and each local party's result by party id.
        A signature returns once every device holds it, with an empty host result (the
        server's call finishes in the background: ``_finish_in_background``).

        The request carries a challenge from the pool when it holds one (else one
        fetched now) and asks for the next with its result. If the enclave refuses
        a pooled challenge as unknown (it restarted, or another enclave issued it),
        the whole ceremony runs once more as a new request (new ceremony id, room,
        challenge and local parties): nothing of the refused one is reused. A key
        change whose local parties already saved pending shares is not run again.

        A key change pauses every local party before its certificate signature;
        ``on_pending`` then gets all their pending shares at once (by party id)
        and must have stored them when it returns; only then do the signatures
        leave. If it raises, no local signature leaves.
        """
        roster, _ = build(request)  # the room's members; plans are rebuilt with the room id
        server = server_id if server_id is not None and server_id in roster.party_ids else None
        pending_saved = False
        save = on_pending

        async def save_pendings(pendings: dict[str, Pending]) -> None:
            nonlocal pending_saved
            pending_saved = True
            if save is not None:
                await save(pendings)

        ceremony = functools.partial(
            self._run_once, request, devices, build, server, progress,
            owner=owner, on_pending=save_pendings if on_pending else None, approvals=approvals,
        )  # fmt: skip
        pooled = None if server is None else self._challenges.take(_affinity(request))
        if pooled is None:
            return await ceremony(None)
        try:
            return await ceremony(pooled)
        except WalletError as e:
            # A refusal after pending shares were saved is no refusal before the enclave
            # acted (a lying host): a rerun would replace them; the caller resumes instead.
            if e.reason != CHALLENGE_REFUSED or pending_saved:
                raise
        # The enclave refused the request before it acted (the challenge is checked first).
        self._challenges.forget_issuer(pooled)
        request.ceremony_id = _new_id(_kind_name(request))
        return await ceremony(None)

    async def _run_once(
        self,
        request: ceremony_pb2.CeremonyRequest,
        devices: Sequence[PartyIdentity],
        build: Callable[[ceremony_pb2.CeremonyRequest], tuple[Roster, dict[str, Ceremony[Any]]]],
        server_id: str | None,
        progress: Progress | None,
        challenge: bytes | None,
        *,
        owner: Ed25519PrivateKey | None = None,
        on_pending: SavePendings | None = None,
        approvals: _Approvals | None = None,
    ) -> tuple[ceremony_pb2.CeremonyResult, dict[str, Any]]:
        """One run of ``_run``'s ceremony (``server_id``: None without the server party),
        with ``challenge`` or, if None, one fetched while the room is made."""
        roster, _ = build(request)
        affinity = _affinity(request)
        if server_id is not None and challenge is None:
            room, challenge = await asyncio.gather(
                self._create_room(list(roster.party_ids)), self.challenge(affinity)
            )
        else:
            room = await self._create_room(list(roster.party_ids))
        request.room_id = room.room_id
        # Every party binds the enclave's challenge (session id and channels), so the
        # local parties are built from the request as the enclave will see it.
        request.challenge = challenge or b""
        request.want_next_challenge = server_id is not None and self._challenges.wants(affinity)
        roster, ceremonies = build(request)
        by_id = {d.party_id: d for d in devices}
        barrier = _PendingBarrier(len(ceremonies), on_pending) if on_pending else None

        async def device(pid: str, ceremony: Ceremony[Any]) -> Any:
            async with self._relay.join(room.room_id, pid, room.join_tokens[pid]) as relay:
                return await run_over_relay(
                    ceremony, by_id[pid], roster, request, relay, progress,
                    None if barrier is None else functools.partial(barrier.arrive, pid),
                )  # fmt: skip

        async def server() -> ceremony_pb2.CeremonyResult:
            if server_id is None:
                return ceremony_pb2.CeremonyResult(
                    ceremony_id=request.ceremony_id, wallet_id=request.wallet_id
                )
            try:
                result = await self._host_calls.ceremony(
                    request.kind,
                    host_pb2.HostCeremonyRequest(
                        request=self._signed(request, challenge or b"", owner, approvals),
                        relay_token=room.join_tokens[server_id],
                        relay_room=room.spec,
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as e:
                trailers = _metadata(e)
                raise WalletError(
                    f"the server share refused: {e.details()}",
                    e.code(),
                    trailers.get("shardkeep-culprits", ""),
                    trailers.get("shardkeep-reason", ""),
                ) from e
            if result.next_challenge:
                self._challenges.put(
                    affinity, bytes(result.next_challenge), result.next_challenge_not_after_unix
                )
            return result

        server_task = asyncio.ensure_future(server())
        device_tasks = [asyncio.ensure_future(device(p, c)) for p, c in ceremonies.items()]
        tasks = [server_task, *device_tasks]
        # A signature is the devices' own verified aggregate: it returns without waiting
        # for the server's result, whose call finishes in the background.
        early = (
            request.kind == ceremony_pb2.CEREMONY_KIND_SIGN
            and server_id is not None
            and len(self._background) < MAX_BACKGROUND_CALLS
            and not self._closed  # a closing client leaves nothing behind
        )
        finished = False
        try:
            wait = _devices_first(server_task, device_tasks) if early else asyncio.gather(*tasks)
            await asyncio.wait_for(wait, self._timeout)
            finished = True
        except (RelayError, ConnectionError, TimeoutError, ProtocolError, SessionStateError) as e:
            raise CeremonyFailed(
                f"the {_kind_name(request)} failed: {_reason(e)}", _status_of(e)
            ) from e
        finally:
            if not finished or server_task.done():
                for task in tasks:  # one side failed: the others must not go on alone
                    task.cancel()
                await self._close_room(room)
        devices_results = {pid: t.result() for pid, t in zip(ceremonies, device_tasks, strict=True)}
        if server_task.done():
            return server_task.result(), devices_results
        self._finish_in_background(server_task, room, request)
        placeholder = ceremony_pb2.CeremonyResult(
            ceremony_id=request.ceremony_id, wallet_id=request.wallet_id
        )
        return placeholder, devices_results

    async def _close_room(self, room: CreatedRoom) -> None:
        with contextlib.suppress(RelayError):  # the room expires anyway
            await self._relay.close_room(room.room_id, room.admin_token)

    def _finish_in_background(
        self,
        server: asyncio.Future[ceremony_pb2.CeremonyResult],
        room: CreatedRoom,
        request: ceremony_pb2.CeremonyRequest,
    ) -> None:
        """Let the server's call of a signature the devices already hold finish (its next
        challenge goes to the pool), then close the room: closed earlier, the enclave would
        lose the devices' last envelopes. A failure is logged and kept in ``late_failures``."""

        async def finish() -> None:
            try:
                await server
            except WalletError as e:
                self.late_failures.append(e)
                _log.warning(
                    "the server share's side of a returned signature failed: %s "
                    "(ceremony %s, wallet %s, code %s, reason %s, culprits %s)",
                    e, request.ceremony_id, request.wallet_id,
                    e.code.name if e.code else "-", e.reason or "-", ",".join(e.culprits) or "-",
                )  # fmt: skip
            finally:
                await self._close_room(room)

        task = asyncio.ensure_future(finish())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _create_room(self, party_ids: list[str]) -> CreatedRoom:
        try:
            return await self._relay.create_room(
                party_ids,
                ttl_ms=int(self._timeout * 1000),
                max_total_bytes=room_bytes(len(party_ids)),
            )
        except RelayError as e:
            cause = e.__cause__
            typed = (
                self._connection_error(cause, "relay")
                if isinstance(cause, grpc.aio.AioRpcError)
                else None
            )
            if typed is None:
                raise CeremonyFailed(
                    f"the relay refused a room: {_reason(e)}", _status_of(e)
                ) from e
            raise typed from e

    def _connection_error(self, error: grpc.aio.AioRpcError, server: str) -> TransportError | None:
        return transport_error(error, server, self._addresses[server], self._transport)

    async def challenge(self, affinity: str = "") -> bytes:
        """A single-use challenge from the enclave (through the host) for one ceremony request.

        The enclave accepts a signed request only with a challenge it issued and
        has not seen used, so a request cannot be replayed, not even after an
        enclave restart or on another enclave instance.

        Arguments:
            affinity: a host with several enclaves sends ceremonies with the same
                affinity to the same enclave while it is up (routing only).

        Raises:
            TransportError: the host cannot be reached (as ``attest``).
            WalletError: the host or the enclave refused.
        """
        try:
            reply = await self._host_calls.challenge(affinity, timeout=30)
        except grpc.aio.AioRpcError as e:
            typed = self._connection_error(e, "host")
            if typed is not None:
                raise typed from e
            raise WalletError(f"no challenge from the server share: {e.details()}", e.code()) from e
        return bytes(reply.challenge)

    def _signed(
        self,
        request: ceremony_pb2.CeremonyRequest,
        challenge: bytes,
        owner: Ed25519PrivateKey | None = None,
        approvals: _Approvals | None = None,
    ) -> ceremony_pb2.SignedCeremonyRequest:
        request.not_after_unix = int(time.time()) + int(self._timeout)
        request.challenge = challenge
        data = request.SerializeToString()
        return ceremony_pb2.SignedCeremonyRequest(
            request=data,
            coordinator_signature=sign_request(self._coordinator, COORDINATOR_CONTEXT, data),
            owner_signature=sign_request(owner, OWNER_CONTEXT, data) if owner else b"",
            approvals=[] if approvals is None else approvals.over(data),
        )


@dataclass(frozen=True)
class SignedPayload:
    """What a signature's digest is of, sent along for the server share's policy.

    The server share parses it, checks it against the wallet's policy and
    refuses a digest that is not the one it computes from it (at most one of
    these per request).

    Attributes:
        evm_transaction: an unsigned EVM transaction (legacy EIP-155 or EIP-1559).
        solana_message: the ed25519 message is a Solana message.
        psbt, psbt_input: a PSBT and the input whose key-path sighash is signed.
        eth_personal_message: an EIP-191 personal message.
        eth_typed_data: EIP-712 typed data (``eth_signTypedData_v4`` JSON).
    """

    evm_transaction: bytes = b""
    solana_message: bool = False
    psbt: bytes = b""
    psbt_input: int = 0
    eth_personal_message: bytes = b""
    eth_typed_data: bytes = b""

    def fill(self, request: ceremony_pb2.CeremonyRequest) -> None:
        """Put the payload into a signature request."""
        request.evm_transaction = self.evm_transaction
        request.solana_message = self.solana_message
        request.psbt = self.psbt
        request.psbt_input = self.psbt_input
        request.eth_personal_message = self.eth_personal_message
        request.eth_typed_data = self.eth_typed_data


@dataclass(frozen=True)
class _Approvals:
    """What a request carries for the server share's policy, and who approves it.

    Attributes:
        approvers: who approves; none given: the owner approval key, if the
            set in force has it.
        adopting: the set a refresh puts in place; a wallet without one
            adopts it approved under it.
    """

    wallet: Wallet
    approvers: Sequence[Approver]
    payload: SignedPayload = SignedPayload()
    adopting: PolicySet | None = None

    def over(self, request: bytes) -> list[ceremony_pb2.Approval]:
        """Every approver's approval of the exact request bytes under the set in force."""
        policy_set, epoch = self.wallet.policy_set, self.wallet.epoch
        if policy_set is None and self.adopting is not None:
            policy_set, epoch = self.adopting, self.adopting.epoch
        if policy_set is None:
            return []
        approvers = self.approvers or _owner_approvers(self.wallet.owner_key, policy_set)
        return approvals_of(request, policy_set, epoch, approvers) if approvers else []


def _owner_approvers(owner: Ed25519PrivateKey | None, policy_set: PolicySet) -> list[Approver]:
    """The owner approval key, if ``policy_set`` registers it."""
    if owner is None:
        return []
    key = owner_approver(owner)
    registered = policy_set.authenticator(key.name)
    if registered is None or registered.public_key != key.authenticator().public_key:
        return []
    return [key]


def _registered_set(
    request: ceremony_pb2.CeremonyRequest,
    owner: Ed25519PrivateKey,
    policy_set: PolicySet | None,
    allow_raw_digest: bool,
    *,
    epoch: int,
) -> PolicySet:
    """The set a new wallet registers (``policy_set``, or the default), put into ``request``."""
    if policy_set is None:
        policy_set = default_policy_set(request.wallet_id, owner, allow_raw_digest=allow_raw_digest)
    elif allow_raw_digest:
        raise InvalidInput(
            "allow_raw_digest shapes the default policy set; a set of one's own allows raw "
            "digests by an allow policy naming 'SIGN_RAW_DIGEST'"
        )
    policy_set = replace(policy_set, wallet_id=request.wallet_id, epoch=epoch)
    request.policy_set = encode_policy_set(policy_set)
    return policy_set


def _certifies(change: PendingChange, certificate: bytes) -> bool:
    """Whether ``certificate`` completes ``change``."""
    try:
        change.verify(certificate)
    except (FaultyParticipantError, InputError):
        return False
    return True


def _server_setup_id(wallet: Wallet, index: int) -> bytes | None:
    """The id of device ``index``'s usable pair setup with the server party, or None."""
    setup = wallet.shares[index].ecdsa
    server = wallet.server_index
    if setup is None or server is None or server not in setup.held or setup.is_burned(server):
        return None
    return setup.peer(server).setup_id


SavePendings = Callable[[dict[str, Pending]], Awaitable[None]]
"""Stores every local party's pending share of a key change or keygen (by party id), durably."""


class _PendingBarrier:
    """Collects the local parties' pending shares; saves them once all have paused.

    Every local party of a key change pauses before its certificate signature,
    after every earlier round: no party's pause waits for another's signature,
    so all of them get here.
    """

    def __init__(self, parties: int, save: SavePendings) -> None:
        self._parties = parties
        self._save = save
        self._pending: dict[str, Pending] = {}
        self._saved: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def arrive(self, party: str, pending: Pending) -> None:
        self._pending[party] = pending
        if len(self._pending) == self._parties:
            try:
                await self._save(dict(self._pending))
            except BaseException as e:
                self._saved.set_exception(e)
            else:
                self._saved.set_result(None)
        await asyncio.shield(self._saved)


async def _devices_first(
    server: asyncio.Future[Any], devices: Sequence[asyncio.Future[Any]]
) -> None:
    """Wait until every device has finished; the first failure on the way, the server's
    included, is raised (as ``asyncio.gather`` would)."""
    pending = {server, *devices}
    while not all(d.done() for d in devices):
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()


def room_bytes(parties: int) -> int:
    """The byte limit a ceremony's room asks for (and reserves at the relay).

    Traffic grows with the number of pairs: an ECDSA keygen, refresh or reshare
    sends each pair a DKLs23 setup of about 24 KiB each way, the rest is far
    smaller; 128 KiB per ordered pair leaves room for retries and framing.
    """
    return min(64 << 20, max(1 << 20, parties * parties * (128 << 10)))


def _any_share(wallet: Wallet) -> KeyShare:
    if not wallet.shares:
        raise InvalidInput("this client holds no share of the wallet")
    return next(iter(wallet.shares.values()))


def _holder_share(share: KeyShare | None) -> KeyShare:
    if share is None:
        raise WalletError("a new holder received no share")
    return share


def _kind_name(request: ceremony_pb2.CeremonyRequest) -> str:
    return ceremony_pb2.CeremonyKind.Name(request.kind).removeprefix("CEREMONY_KIND_").lower()


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__


_DEADLINE_SLACK_S = 5  # past the ceremony's expiry, the host can no longer store its epoch


def _metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    pairs: Any = error.trailing_metadata() or ()
    return {str(k): str(v) for k, v in pairs}


def _status_of(error: BaseException) -> grpc.StatusCode | None:
    """The status a failed ceremony reports in ``code``: the relay's for its errors
    (e.g. UNAVAILABLE when its backend is down), DEADLINE_EXCEEDED for a timeout."""
    if isinstance(error, RelayError):
        return status_code_for(error)
    if isinstance(error, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return None


def _new_id(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(8)}"
