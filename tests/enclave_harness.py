"""Test helpers: a devkms + enclave stack in process, client parties, and signed requests."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.sdk.approvals import approvals_of
from client.sdk.default_policy import default_policy_set, owner_approver
from devkms.keystore import KeyStore
from devkms.policy import KeyPolicy, Policy
from devkms.server import make_server, serve_in_background
from devkms.service import KmsService
from enclave.auth import Authorizer
from enclave.auth import Policy as AuthPolicy
from enclave.kms import EnclaveKmsClient, KmsCredentials, RecipientKey
from enclave.nsm import SimulatedNitroPki, SimulatedNsm, image_pcrs
from enclave.seal import ShareSealer
from enclave.service import EnclaveDeps, create_server
from shardkeep import requests as signing
from shardkeep.lifecycle import channel_context, lifecycle_session_id
from shardkeep.policyset import InvalidPolicy, PolicySet
from shardkeep.policyset import decode as decode_policy_set
from shardkeep.policyset import encode as encode_policy_set
from shardkeep.v1 import ceremony_pb2, enclave_pb2, enclave_pb2_grpc, envelope_pb2
from tss.channel import Roster, StaticKey, party_id
from tss.dkg.chilldkg import hostpubkey_gen
from tss.errors import ShardkeepError
from tss.keygen import Keygen
from tss.keyshare import KeyShare
from tss.session import Outbound, SecureSession
from tss.signing import NO_OPTIONS, HostKeys, signing_ceremony

IMAGE = "shardkeep-enclave:test"
SCHEMES = {
    "bip340": ceremony_pb2.SCHEME_BIP340,
    "ecdsa-secp256k1": ceremony_pb2.SCHEME_ECDSA_SECP256K1,
    "ed25519": ceremony_pb2.SCHEME_ED25519,
}
DIGEST = bytes(range(32))
"""What the harness signs: the digest, or for ed25519 these bytes as the message itself."""
Tamper = Callable[[envelope_pb2.Envelope], envelope_pb2.Envelope | list[envelope_pb2.Envelope]]
"""Rewrites an envelope on its way into the enclave; a list replaces it (empty: dropped)."""
SEAL_KEY = "5eed0000-0000-4000-8000-000000000001"


@contextmanager
def devkms(pki: SimulatedNitroPki, image: str = IMAGE) -> Iterator[str]:
    """A devkms on 127.0.0.1 whose sealing key needs ``image``'s PCR0-2."""
    policy = Policy(
        root_certificate=pki.root_certificate_pem,
        keys={SEAL_KEY: KeyPolicy("server shares", None, image_pcrs(image))},
    )
    server, port = make_server(KmsService(KeyStore(), policy, region="us-east-1"))
    thread = serve_in_background(server)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def enclave_deps(
    pki: SimulatedNitroPki, endpoint: str, coordinator: Ed25519PrivateKey
) -> EnclaveDeps:
    nsm = SimulatedNsm(IMAGE, pki=pki)
    kms = EnclaveKmsClient.connect(
        endpoint_url=endpoint,
        region="us-east-1",
        credentials=KmsCredentials("test", "test"),
        nsm=nsm,
        recipient_key=RecipientKey.generate(2048),  # the minimum, for speed
    )
    key = coordinator.public_key().public_bytes_raw()
    return EnclaveDeps(nsm, ShareSealer(kms, SEAL_KEY), Authorizer(AuthPolicy((key,))))


@dataclass
class ClientParty:
    """A party outside the enclave: its static key and ChillDKG host key."""

    static_key: StaticKey = field(
        default_factory=lambda: StaticKey.generate(secrets.token_bytes(32))
    )
    hostseckey: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def party(self) -> ceremony_pb2.Party:
        return ceremony_pb2.Party(
            party_id=self.static_key.party_id,
            static_key=bytes(self.static_key.public_key),
            host_pubkey=hostpubkey_gen(self.hostseckey),
        )


CHALLENGES: ContextVar[Authorizer | None] = ContextVar("CHALLENGES", default=None)
"""The in-process enclave's authoriser, whose challenges ``signed`` takes (as the host's
``GetChallenge`` would) while ``with_enclave`` (or ``issuing_challenges``) runs."""


@contextmanager
def issuing_challenges(authorizer: Authorizer) -> Iterator[None]:
    """Let ``signed`` take challenges from ``authorizer`` inside this block."""
    token = CHALLENGES.set(authorizer)
    try:
        yield
    finally:
        CHALLENGES.reset(token)


def signed(
    request: ceremony_pb2.CeremonyRequest,
    coordinator: Ed25519PrivateKey,
    owner: Ed25519PrivateKey | None = None,
    challenge: bytes | None = None,
) -> ceremony_pb2.SignedCeremonyRequest:
    """Fill in expiry and a challenge, serialise, and sign the request.

    The challenge is ``challenge`` if given, else a fresh one of the running
    in-process enclave (``with_enclave``), else none (the enclave refuses that).
    """
    request.not_after_unix = int(time.time()) + 120
    _rebind_harness_set(request)
    if challenge is None:
        challenge = with_challenge(request)
    request.challenge = challenge
    _SIGNED.add(challenge)
    data = request.SerializeToString()
    return ceremony_pb2.SignedCeremonyRequest(
        request=data,
        coordinator_signature=signing.sign_request(coordinator, signing.COORDINATOR_CONTEXT, data),
        owner_signature=signing.sign_request(owner, signing.OWNER_CONTEXT, data) if owner else b"",
        approvals=harness_approvals(request, data),
    )


# --- policy: every wallet the harness makes is governed by the default set -------------------

HARNESS_OWNER = Ed25519PrivateKey.generate()
"""The owner key behind the harness's policy sets: ``harness_policy_set`` registers its
approval key, and ``signed`` approves every request of such a wallet with it."""
_REGISTERED: dict[str, PolicySet] = {}  # wallet id -> the set its last signed request registered


def harness_policy_set(wallet_id: str, epoch: int = 0) -> bytes:
    """The SDK's default set (``client.sdk.default_policy``) for ``wallet_id`` under
    ``HARNESS_OWNER``, raw digests allowed (the harness signs bare digests)."""
    return encode_policy_set(
        default_policy_set(wallet_id, HARNESS_OWNER, allow_raw_digest=True, epoch=epoch)
    )


def _is_harness_set(policy_set: PolicySet) -> bool:
    owner = owner_approver(HARNESS_OWNER)
    return policy_set.authenticator(owner.name) == owner.authenticator()


def _rebind_harness_set(request: ceremony_pb2.CeremonyRequest) -> None:
    """A keygen's harness set names the request's wallet (tests rename ``keygen_request``'s)."""
    if request.kind != ceremony_pb2.CEREMONY_KIND_KEYGEN or not request.policy_set:
        return
    try:
        registered = decode_policy_set(bytes(request.policy_set))
    except InvalidPolicy:
        return  # a test's malformed set, sent as it is
    if _is_harness_set(registered) and registered.wallet_id != request.wallet_id:
        request.policy_set = encode_policy_set(replace(registered, wallet_id=request.wallet_id))


def harness_approvals(
    request: ceremony_pb2.CeremonyRequest, data: bytes
) -> list[ceremony_pb2.Approval]:
    """The harness owner's approval of ``data`` if the wallet's set in force is a harness set
    (a test that registers a set of its own approves itself); remembers a set ``request``
    registers (a keygen's, an import's, a refresh's new one: in force from the next request)."""
    current = _REGISTERED.get(request.wallet_id)
    if request.policy_set:
        with suppress(InvalidPolicy):
            _REGISTERED[request.wallet_id] = decode_policy_set(bytes(request.policy_set))
    if current is None or not _is_harness_set(current):
        return []
    return approvals_of(data, current, request.epoch, [owner_approver(HARNESS_OWNER)])


_SIGNED: set[bytes] = set()  # challenges already in a signed request (spent)


def with_challenge(request: ceremony_pb2.CeremonyRequest) -> bytes:
    """The request's challenge: the one it has (unless a signed request spent it), or a
    fresh one of the running in-process enclave (``with_enclave``) set on it now, or
    none. Client sessions bind it (session id and channels), so they are built after
    this, as the SDK builds them; a test that reuses a request object gets a new one."""
    if not request.challenge or bytes(request.challenge) in _SIGNED:
        request.challenge = b""
        authorizer = CHALLENGES.get()
        if authorizer is not None:
            request.challenge = authorizer.challenges.issue(int(time.time()))[0]
    return bytes(request.challenge)


def client_session(
    ceremony: Any, client: Any, roster: Roster, request: ceremony_pb2.CeremonyRequest
) -> SecureSession[Any]:
    """A client's ``SecureSession`` for ``request``, bound to its challenge."""
    return SecureSession(
        ceremony, client.static_key, roster, request.room_id, request.ceremony_id,
        secrets.token_bytes, context=channel_context(request),
    )  # fmt: skip


def unix_address(tmp: Path, name: str) -> str:
    return f"unix:{tmp / name}"


def status_of(error: grpc.aio.AioRpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = error.code()
    return code


class Stack:
    """An enclave on a Unix socket plus the host's view: its stub and what it stored."""

    def __init__(
        self, stub: enclave_pb2_grpc.EnclaveStub, identity: enclave_pb2.ProvisionResponse
    ) -> None:
        self.stub = stub
        self.identity = identity
        self.party = ceremony_pb2.Party(
            party_id=party_id(identity.static_key),
            static_key=identity.static_key,
            host_pubkey=identity.host_pubkey,
        )
        self.stored: list[ceremony_pb2.SealedShare] = []


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def with_enclave(
    pki: SimulatedNitroPki,
    endpoint: str,
    tmp_path: Path,
    coordinator: Ed25519PrivateKey,
    body: Any,
    sealed_identity: bytes = b"",
    deps: EnclaveDeps | None = None,
) -> Any:
    deps = deps or enclave_deps(pki, endpoint, coordinator)
    running = await create_server(f"unix:{tmp_path / 'enclave.sock'}", deps)
    try:
        async with grpc.aio.insecure_channel(f"unix:{tmp_path / 'enclave.sock'}") as channel:
            stub = enclave_pb2_grpc.EnclaveStub(channel)
            identity = await stub.Provision(
                enclave_pb2.ProvisionRequest(sealed_identity=sealed_identity)
            )
            with issuing_challenges(deps.authorizer):
                return await body(Stack(stub, identity))
    finally:
        await running.server.stop(None)


def keygen_request(
    scheme: str,
    parties: list[ceremony_pb2.Party],
    threshold: int,
    owner: Ed25519PrivateKey | None = None,
) -> ceremony_pb2.CeremonyRequest:
    return ceremony_pb2.CeremonyRequest(
        ceremony_id=f"keygen-{secrets.token_hex(4)}",
        room_id="room-1",
        kind=ceremony_pb2.CEREMONY_KIND_KEYGEN,
        scheme=SCHEMES[scheme],
        wallet_id="wallet-1",
        threshold=threshold,
        parties=parties,
        owner_key=owner.public_key().public_bytes_raw() if owner else b"",
        policy_set=harness_policy_set("wallet-1"),
    )


def client_keygen(
    scheme: str,
    client: ClientParty,
    request: ceremony_pb2.CeremonyRequest,
    kind: type[Keygen] = Keygen,
) -> SecureSession[KeyShare]:
    """A client's keygen session (``kind``: a misbehaving ``Keygen`` subclass)."""
    with_challenge(request)
    roster = Roster.from_parties([(p.party_id, bytes(p.static_key)) for p in request.parties])
    ceremony = kind(
        scheme,  # type: ignore[arg-type]
        client.hostseckey,
        [bytes(p.host_pubkey) for p in request.parties],
        request.threshold,
        secrets.token_bytes,
        session_id=lifecycle_session_id(request),
    )
    return client_session(ceremony, client, roster, request)


def sign_request(
    request: ceremony_pb2.CeremonyRequest, signers: list[int]
) -> ceremony_pb2.CeremonyRequest:
    out = ceremony_pb2.CeremonyRequest(
        ceremony_id=f"sign-{secrets.token_hex(4)}",
        room_id=request.room_id,
        kind=ceremony_pb2.CEREMONY_KIND_SIGN,
        scheme=request.scheme,
        wallet_id=request.wallet_id,
        parties=request.parties,
        signers=signers,
        epoch=0,
    )
    if request.scheme == ceremony_pb2.SCHEME_ED25519:
        out.message = DIGEST  # RFC 8032 signs the message itself
    else:
        out.digest = DIGEST
    return out


def client_sign(
    share: KeyShare, client: ClientParty, request: ceremony_pb2.CeremonyRequest
) -> SecureSession[Any]:
    with_challenge(request)
    signers = list(request.signers)
    roster = Roster.from_parties(
        [(request.parties[i].party_id, bytes(request.parties[i].static_key)) for i in signers],
        signers,
    )
    session_id = lifecycle_session_id(request)
    name_pair_setup(request, share)
    host_keys = HostKeys(client.hostseckey, tuple(bytes(p.host_pubkey) for p in request.parties))
    signed = bytes(request.message) if share.scheme == "ed25519" else bytes(request.digest)
    ceremony = signing_ceremony(
        share, signers, signed, session_id, secrets.token_bytes, NO_OPTIONS, host_keys
    )
    return client_session(ceremony, client, roster, request)


def name_pair_setup(request: ceremony_pb2.CeremonyRequest, share: KeyShare) -> None:
    """ECDSA: name in ``request`` the client's pair setup with the server party, which the
    harness's keyrings (like the SDK's) place last."""
    server = len(request.parties) - 1
    setup = share.ecdsa
    if setup is not None and server in request.signers and server in setup.held:
        request.pair_setup_ids[share.party_id] = setup.peer(server).setup_id


# --- key lifecycle (refresh, reshare, export): requests and client sides ----------------------


def lifecycle_request(
    kind: ceremony_pb2.CeremonyKind.ValueType,
    wallet: ceremony_pb2.CeremonyRequest,
    epoch: int,
    **fields: Any,
) -> ceremony_pb2.CeremonyRequest:
    """A refresh, reshare or export request for ``wallet``'s keyring (its parties and scheme);
    a reshare that adds the server party (given the keyring and owner key) registers the
    harness's policy set unless ``policy_set`` is given."""
    name = ceremony_pb2.CeremonyKind.Name(kind).removeprefix("CEREMONY_KIND_").lower()
    request = ceremony_pb2.CeremonyRequest(
        ceremony_id=f"{name}-{secrets.token_hex(4)}",
        room_id=wallet.room_id,
        kind=kind,
        scheme=wallet.scheme,
        wallet_id=wallet.wallet_id,
        parties=wallet.parties,
        epoch=epoch,
    )
    for key, value in fields.items():
        if isinstance(value, ceremony_pb2.Party | ceremony_pb2.PublicKeyring):
            getattr(request, key).CopyFrom(value)
        elif isinstance(value, list):
            getattr(request, key).extend(value)
        else:
            setattr(request, key, value)
    if kind == ceremony_pb2.CEREMONY_KIND_RESHARE and {"keyring", "owner_key"} <= set(fields):
        # the server party joins (an import): the request registers the wallet's set
        request.policy_set = fields.get("policy_set") or harness_policy_set(
            request.wallet_id, request.keyring.epoch + 1
        )
    return request


def keyring_request(
    wallet: ceremony_pb2.CeremonyRequest, parties: list[ceremony_pb2.Party]
) -> ceremony_pb2.CeremonyRequest:
    """``wallet`` with another party list (e.g. a reshare's new keyring, for later requests)."""
    out = ceremony_pb2.CeremonyRequest()
    out.CopyFrom(wallet)
    del out.parties[:]
    out.parties.extend(parties)
    return out


def sign_request_at(
    wallet: ceremony_pb2.CeremonyRequest, signers: list[int], epoch: int
) -> ceremony_pb2.CeremonyRequest:
    """``sign_request`` at ``epoch`` (after a refresh or reshare)."""
    request = sign_request(wallet, signers)
    request.epoch = epoch
    return request


def client_lifecycle(
    request: ceremony_pb2.CeremonyRequest,
    client: ClientParty,
    share: KeyShare | None,
    *,
    keyring: Any = None,
    recipient_key: bytes | None = None,
    reshare_class: type[Any] | None = None,
) -> SecureSession[Any]:
    """A client party's side of a refresh, reshare or export, laid out by ``shardkeep.lifecycle``.

    ``share`` is the client's current key share (None for a new party, which
    then needs ``keyring``, a ``tss.reshare.PublicKeyring``); ``recipient_key``
    is the export recipient's X25519 private key; ``reshare_class`` swaps in a
    (misbehaving) ``tss.reshare.Reshare``.
    """
    # Imported here: helpers are only appended to this module.
    from shardkeep import lifecycle
    from tss.export import Export
    from tss.reshare import PublicKeyring, Reshare

    with_challenge(request)
    current = keyring if share is None else PublicKeyring.from_share(share)
    layout: Any
    if request.kind == ceremony_pb2.CEREMONY_KIND_EXPORT:
        layout = lifecycle.export_layout(request, current)
    elif request.kind == ceremony_pb2.CEREMONY_KIND_REFRESH:
        layout = lifecycle.refresh_layout(request, current)
    else:
        layout = lifecycle.reshare_layout(request, current)
    seat = layout.seat_of(client.static_key.party_id)
    assert seat is not None, "the client takes no part"
    ceremony: Any
    if request.kind == ceremony_pb2.CEREMONY_KIND_EXPORT:
        mine = share if seat in layout.plan.quorum else None
        ceremony = Export(layout.plan, seat, mine, secrets.token_bytes, recipient_key)
    else:
        dealing = share if seat in layout.plan.dealers else None
        ceremony = (reshare_class or Reshare)(
            layout.plan, seat, dealing, secrets.token_bytes, client.hostseckey
        )
    return client_session(ceremony, client, layout.roster, request)


async def host_loop(
    stack: Stack,
    request: ceremony_pb2.SignedCeremonyRequest,
    clients: dict[str, Any],
    sealed: Sequence[ceremony_pb2.SealedShare] = (),
    tamper: Tamper | None = None,
    idle_s: float | None = None,
) -> ceremony_pb2.CeremonyResult:
    """Play the host: carry one ceremony between the enclave's stream and the client sessions.

    Every client starts before anything moves, and client messages go through
    one FIFO queue, so each sender's envelopes arrive in order, as on the relay.
    ``tamper`` may rewrite, drop or hold back envelopes on their way into the enclave. The
    enclave's ``failure`` output is raised as the ``AioRpcError`` it announces.
    With ``idle_s``, a host that hears nothing from the enclave for that long
    gives up and half-closes (the real host's deadline, shortened for tests).
    """
    call = stack.stub.RunCeremony()
    closed = False

    async def write(item: enclave_pb2.CeremonyInput) -> None:
        # A write may lose the race with the enclave ending the stream; the
        # failure output it sent before ending says why (grpc/grpc#36066).
        nonlocal closed
        if closed or call.done():
            return
        try:
            await call.write(item)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            closed = True

    def saved(session: Any, out: list[Outbound]) -> list[Outbound]:
        # A key change's pending share counts as saved at once (test memory);
        # wrappers around signing sessions need not expose their ceremony.
        ceremony = getattr(session, "ceremony", None)
        if ceremony is not None and ceremony.awaiting_save:
            out = out + session.confirm_saved()
        return out

    start = enclave_pb2.CeremonyStart(request=request, sealed_shares=sealed)
    await call.write(enclave_pb2.CeremonyInput(start=start))  # before the enclave can fail
    enclave_id = stack.party.party_id
    queue: deque[tuple[str, Outbound]] = deque()

    async def pump() -> None:
        while queue:
            sender, o = queue.popleft()
            if o.recipient_id == enclave_id:
                env = envelope_pb2.Envelope(
                    sender=sender, recipient=o.recipient_id, round=o.round, payload=o.envelope
                )
                delivered = tamper(env) if tamper else env
                for item in delivered if isinstance(delivered, list) else [delivered]:
                    await write(enclave_pb2.CeremonyInput(inbound=item))
            else:
                session = clients[o.recipient_id]
                replies = saved(session, session.receive(o.envelope))
                queue.extend((o.recipient_id, r) for r in replies)

    for pid, session in clients.items():
        queue.extend((pid, o) for o in saved(session, session.start()))
    await pump()
    while True:
        read = asyncio.ensure_future(call.read())
        if idle_s is not None and not closed:
            finished, _ = await asyncio.wait({read}, timeout=idle_s)
            if not finished:
                closed = True
                await call.done_writing()
        out = await read
        if out is grpc.aio.EOF:
            raise AssertionError("the enclave ended the stream without a result")
        kind = out.WhichOneof("output")
        if kind == "outbound":
            for envelope in out.outbound.envelopes:
                recipient = envelope.recipient
                session = clients[recipient]
                queue.extend(
                    (recipient, r) for r in saved(session, session.receive(envelope.payload))
                )
            await pump()
        elif kind == "store":
            stack.stored.append(out.store)
            await write(
                enclave_pb2.CeremonyInput(store_ack=enclave_pb2.StoreAck(epoch=out.store.epoch))
            )
        elif kind == "failure":
            closed = True
            await call.done_writing()
            failure = out.failure
            trailers = grpc.aio.Metadata(
                ("shardkeep-culprits", ",".join(failure.culprits)),
                ("shardkeep-reason", failure.reason),
            )
            code = getattr(grpc.StatusCode, failure.code)
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, failure.message)
        else:
            await call.done_writing()
            assert all(s.done for s in clients.values())
            # As the host does: the epoch's shares go back with its certificate.
            for stored in stack.stored:
                if out.result.certificate and stored.epoch == out.result.epoch:
                    stored.certificate = out.result.certificate
            return out.result


class Tolerant:
    """A client session that keeps its own failure instead of raising it, so the
    host loop reads on and the test sees the enclave's status."""

    def __init__(self, session: SecureSession[Any]) -> None:
        self.session = session
        self.error: ShardkeepError | None = None

    @property
    def done(self) -> bool:
        return self.session.done

    @property
    def ceremony(self) -> Any:
        return self.session.ceremony

    def start(self) -> Any:
        return self.session.start()

    def confirm_saved(self) -> Any:
        return self.session.confirm_saved()

    def receive(self, envelope: bytes) -> Any:
        try:
            return self.session.receive(envelope)
        except ShardkeepError as e:
            self.error = e
            return []


class EquivocatingSession:
    """Malicious party M over the channels: two honest sessions of M's (each with
    its own randomness), the first speaking only to ``first_victim_id``, the
    second to everyone else. Every envelope M receives goes to both, so each
    victim gets messages valid in its own view, and the views differ."""

    def __init__(self, make: Any, first_victim_id: str) -> None:
        self.sessions: list[SecureSession[Any]] = [make(), make()]
        self.first = first_victim_id

    def _route(self, outs: Sequence[list[Outbound]]) -> list[Outbound]:
        a, b = outs
        return [o for o in a if o.recipient_id == self.first] + [
            o for o in b if o.recipient_id != self.first
        ]

    @property
    def done(self) -> bool:
        return True  # the host loop need not wait for it; tests read the honest parties

    def start(self) -> list[Outbound]:
        return self._route([_saved(s, s.start()) for s in self.sessions])

    def receive(self, envelope: bytes) -> list[Outbound]:
        outs = []
        for s in self.sessions:
            try:
                outs.append(_saved(s, s.receive(envelope)))
            except ShardkeepError:
                outs.append([])
        return self._route(outs)


def _saved(session: SecureSession[Any], out: list[Outbound]) -> list[Outbound]:
    """A pending share counts as saved at once (test memory)."""
    return out + session.confirm_saved() if session.ceremony.awaiting_save else out


# --- DKLs23 pair setups (ecdsa): the enclave keeps its side in memory only ------------------


def pair_setup_request(
    wallet: ceremony_pb2.CeremonyRequest, pair: list[int], epoch: int = 0
) -> ceremony_pb2.CeremonyRequest:
    """A pair-setup request for ``wallet``'s keyring between the two indices of ``pair``."""
    return ceremony_pb2.CeremonyRequest(
        ceremony_id=f"pair-setup-{secrets.token_hex(4)}",
        room_id=wallet.room_id,
        kind=ceremony_pb2.CEREMONY_KIND_PAIR_SETUP,
        scheme=wallet.scheme,
        wallet_id=wallet.wallet_id,
        parties=wallet.parties,
        signers=sorted(pair),
        epoch=epoch,
    )


def client_pair_setup(
    share: KeyShare, client: ClientParty, request: ceremony_pb2.CeremonyRequest
) -> SecureSession[Any]:
    """The client's side of a pair setup with the other index of ``request.signers``."""
    from tss.keygen import PairSetup

    with_challenge(request)
    pair = list(request.signers)
    (peer,) = [j for j in pair if j != share.party_id]
    roster = Roster.from_parties(
        [(request.parties[i].party_id, bytes(request.parties[i].static_key)) for i in pair], pair
    )
    ceremony = PairSetup(share, peer, lifecycle_session_id(request), secrets.token_bytes)
    return client_session(ceremony, client, roster, request)
