"""The server party's DKLs23 OT setups: never used again after a check on them may have failed.

End to end against the enclave service (devkms, KMS sealing, gRPC, the host's
side played by ``tests.enclave_harness.host_loop``). The enclave keeps its pair
setups in memory only; a restart is a new enclave process state (a new
servicer) that the host provisions with the same sealed identity and feeds the
same sealed record. What the enclave checks is observed by wrapping
``tss.ecdsa.ote.sender_extend`` (the KOS consistency check on the server's
Delta) in the enclave's worker threads, so the assertions do not trust the
enclave's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.identity import ServerShare
from enclave.nsm import SimulatedNitroPki
from host.errors import error_from_failure
from shardkeep.lifecycle import channel_context, lifecycle_session_id
from shardkeep.v1 import ceremony_pb2, enclave_pb2
from tests.enclave_harness import (
    DIGEST,
    ClientParty,
    Stack,
    client_keygen,
    client_pair_setup,
    client_session,
    client_sign,
    devkms,
    host_loop,
    keygen_request,
    name_pair_setup,
    pair_setup_request,
    run,
    sign_request,
    signed,
    with_challenge,
    with_enclave,
)
from tss.ceremony import Message
from tss.channel import Roster
from tss.curve import ecdsa_verify
from tss.ecdsa import gf128, ote
from tss.ecdsa.ote import OteReceiverSetup, ReceiverExtension
from tss.ecdsa.setup import PeerSetup
from tss.ecdsa.wire import HEADER_BYTES
from tss.keyshare import KeyShare
from tss.session import SecureSession
from tss.signing import EcdsaSigning

SCHEME: Final = "ecdsa-secp256k1"
CLIENT, SERVER = 0, 1
REASON = "pair-setup-required"
# Round-2 layout after the header: echo (32) || RVOLE reply: a byte inside its a-tilde vector.
A_TILDE = HEADER_BYTES + 32 + 32 + 100


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


# --- the attacker: a client that cheats in one column of its OT-extension message ----------

_cheat = threading.local()
_honest_extend = ote.receiver_extend


def _column_cheating_extend(
    setup: OteReceiverSetup, ote_sid: bytes, choices: bytes, pad: bytes
) -> tuple[ReceiverExtension, bytes]:
    """KOS15 "Extend" with one column's choice bit flipped in u (only where the test asks).

    Bob sends u_i = t0_i ^ t1_i ^ x with x flipped in row ``column`` and computes
    his check values for the honest x, consistent with the new u's challenges:
    Alice's check passes iff Delta[column] = 0 (selective failure on Delta).
    """
    column: int | None = getattr(_cheat, "column", None)
    if column is None:
        return _honest_extend(setup, ote_sid, choices, pad)
    x = np.frombuffer(choices + pad, dtype=np.uint8)
    t0 = ote._expand(setup.seeds0, ote_sid)
    t1 = ote._expand(setup.seeds1, ote_sid)
    u = t0 ^ t1 ^ x[None, :]
    u[column, 0] ^= 1
    u_bytes = u.tobytes()
    chis = ote._challenges(ote_sid, u_bytes)
    x_check = gf128.column_hash(x.reshape(1, -1), chis)
    t_check = gf128.column_hash(t0, chis)
    state = ReceiverExtension(ote_sid, ote._transpose_rows(t0).tobytes())
    return state, u_bytes + x_check.tobytes() + t_check.tobytes()


class ColumnCheatingSigning(EcdsaSigning):
    """The client's signing ceremony, cheating in column ``column`` of its round-1 extension."""

    def __init__(self, *args: Any, column: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._column = column

    def _start(self) -> list[Message]:
        _cheat.column = self._column
        try:
            return super()._start()
        finally:
            _cheat.column = None


def _cheating_sign(
    share: KeyShare, client: ClientParty, request: ceremony_pb2.CeremonyRequest, column: int
) -> SecureSession[Any]:
    with_challenge(request)
    signers = list(request.signers)
    roster = Roster.from_parties(
        [(request.parties[i].party_id, bytes(request.parties[i].static_key)) for i in signers],
        signers,
    )
    name_pair_setup(request, share)
    ceremony = ColumnCheatingSigning(
        share, signers, DIGEST, lifecycle_session_id(request), secrets.token_bytes, column=column
    )
    return client_session(ceremony, client, roster, request)


# --- what the enclave checks: every KOS check on the server's Delta, seen from outside -------


@dataclasses.dataclass
class Check:
    delta: bytes  # a fingerprint of the Delta checked against
    passed: bool
    started: float
    ended: float


class CheckSpy:
    """Records each OT-extension check the enclave runs (its worker threads, not the client's)."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.delay = 0.0  # widens each check, so a race between sessions shows up reliably
        self._lock = threading.Lock()

    def __call__(self, setup: ote.OteSenderSetup, *args: Any) -> Any:
        if threading.current_thread() is threading.main_thread():  # the test's client side
            return _honest_sender_extend(setup, *args)
        fingerprint = hashlib.sha256(setup.delta).digest()[:8]
        started = time.perf_counter()
        time.sleep(self.delay)
        try:
            out = _honest_sender_extend(setup, *args)
        except ote.OtConsistencyError:
            self._record(Check(fingerprint, False, started, time.perf_counter()))
            raise
        self._record(Check(fingerprint, True, started, time.perf_counter()))
        return out

    def _record(self, check: Check) -> None:
        with self._lock:
            self.checks.append(check)

    def by_delta(self) -> dict[bytes, list[Check]]:
        out: dict[bytes, list[Check]] = {}
        for check in self.checks:
            out.setdefault(check.delta, []).append(check)
        return out

    def assert_no_check_after_a_failure(self) -> None:
        """Each Delta sees at most one failed check, and none at all after it."""
        for delta, checks in self.by_delta().items():
            failed = [k for k, c in enumerate(checks) if not c.passed]
            assert len(failed) <= 1, f"Delta {delta.hex()} failed {len(failed)} checks"
            if failed:
                last_end = checks[failed[0]].ended
                later = [c for c in checks if c.started >= last_end]
                assert not later, f"Delta {delta.hex()} was checked again after a failure"


_honest_sender_extend = ote.sender_extend


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> CheckSpy:
    checks = CheckSpy()
    monkeypatch.setattr(ote, "sender_extend", checks)
    monkeypatch.setattr(ote, "receiver_extend", _column_cheating_extend)
    return checks


# --- helpers ------------------------------------------------------------------------------------


def _status(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    pairs: Any = error.trailing_metadata() or ()
    trailers = {str(k): str(v) for k, v in pairs}
    return error.code(), trailers.get("shardkeep-reason", "")


@dataclasses.dataclass
class Wallet:
    """The client's view: the keygen request (its keyring), its share, the sealed record."""

    keygen: ceremony_pb2.CeremonyRequest
    share: KeyShare
    stored: list[ceremony_pb2.SealedShare]
    identity: bytes


async def _keygen(stack: Stack, client: ClientParty, coordinator: Ed25519PrivateKey) -> Wallet:
    request = keygen_request(SCHEME, [client.party, stack.party], 2)
    session = client_keygen(SCHEME, client, request)
    await host_loop(stack, signed(request, coordinator), {client.party.party_id: session})
    return Wallet(request, session.result, list(stack.stored), stack.identity.sealed_identity)


async def _pair_setup(
    stack: Stack, wallet: Wallet, client: ClientParty, coordinator: Ed25519PrivateKey
) -> None:
    request = pair_setup_request(wallet.keygen, [CLIENT, SERVER])
    session = client_pair_setup(wallet.share, client, request)
    await host_loop(
        stack, signed(request, coordinator), {client.party.party_id: session}, wallet.stored
    )
    setup: PeerSetup = session.result
    assert wallet.share.ecdsa is not None
    wallet.share = dataclasses.replace(wallet.share, ecdsa=wallet.share.ecdsa.with_peer(setup))


async def _sign(
    stack: Stack,
    wallet: Wallet,
    client: ClientParty,
    coordinator: Ed25519PrivateKey,
    session: Callable[[ceremony_pb2.CeremonyRequest], SecureSession[Any]] | None = None,
) -> ceremony_pb2.CeremonyResult:
    request = sign_request(wallet.keygen, [CLIENT, SERVER])
    signer = (session or (lambda r: client_sign(wallet.share, client, r)))(request)
    result: ceremony_pb2.CeremonyResult = await host_loop(
        stack, signed(request, coordinator), {client.party.party_id: signer}, wallet.stored
    )
    return result


def _setup_id(wallet: Wallet) -> bytes:
    assert wallet.share.ecdsa is not None
    return wallet.share.ecdsa.peer(SERVER).setup_id


# --- the attacks ------------------------------------------------------------------------------


def test_ot_cheat_across_enclave_restarts_does_not_recover_share(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path, spy: CheckSpy
) -> None:
    """Attack: selective failure on the enclave's OT-extension Delta, across host-driven restarts.

    The client (who also signs the coordinator's requests) cheats in one column
    of its KOS OT-extension message in every signing session: the enclave's
    consistency check then passes or fails with one bit of the server's Delta
    for the pair. The host restarts the enclave again and again, replaying the
    same sealed record, and no burned list exists anywhere. Earlier, the sealed
    Delta came back unburned after every restart, so the bits added up (256
    sessions and ~130 restarts gave Delta, then the server share). Now each
    restart forces a new pair setup (a fresh Delta), every Delta sees at most
    one failed check and none after it, and what the client learns about any
    one Delta stays a handful of bits.
    """
    coordinator, client = Ed25519PrivateKey.generate(), ClientParty()
    lives, sessions_per_life = 4, 6
    box: dict[str, Wallet] = {}
    learned: dict[bytes, dict[int, int]] = {}  # the attacker's notes: setup id -> {column: bit}
    outcomes: list[str] = []

    async def cheat_once(stack: Stack, wallet: Wallet) -> None:
        notes = learned.setdefault(_setup_id(wallet), {})
        column = len(notes)  # the next column of this setup's Delta it knows nothing about
        try:
            await _sign(
                stack, wallet, client, coordinator,
                lambda r: _cheating_sign(wallet.share, client, r, column),
            )  # fmt: skip
            notes[column] = 0  # the check passed: Delta[column] = 0
            outcomes.append("passed")
        except grpc.aio.AioRpcError as e:
            code, reason = _status(e)
            if code == grpc.StatusCode.ABORTED:
                notes[column] = 1  # the check failed: Delta[column] = 1, and the pair is burned
                outcomes.append("failed")
                return
            # The enclave has no usable setup: the attacker must run a new pair setup.
            assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, REASON), e.details()
            outcomes.append("setup")
            await _pair_setup(stack, wallet, client, coordinator)

    async def first_life(stack: Stack) -> None:
        box["wallet"] = await _keygen(stack, client, coordinator)
        # The sealed record carries no pair setup (a 2-of-2 share is a few hundred
        # bytes; one pair's setup alone is 24 KiB).
        (record,) = box["wallet"].stored
        assert len(record.ciphertext) < 4096
        for _ in range(sessions_per_life):
            await cheat_once(stack, box["wallet"])

    async def restarted_life(stack: Stack) -> None:
        wallet = box["wallet"]
        before = len(spy.checks)
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # an honest signature, even
            await _sign(stack, wallet, client, coordinator)
        assert _status(refused.value) == (grpc.StatusCode.FAILED_PRECONDITION, REASON)
        assert len(spy.checks) == before  # refused before any check
        await _pair_setup(stack, wallet, client, coordinator)
        for _ in range(sessions_per_life):
            await cheat_once(stack, wallet)

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, first_life))
    deltas_per_life = [set(spy.by_delta())]
    for _ in range(lives - 1):
        seen = set(spy.by_delta())
        run(
            with_enclave(
                pki, kms_endpoint, tmp_path, coordinator, restarted_life, box["wallet"].identity
            )
        )
        deltas_per_life.append(set(spy.by_delta()) - seen)

    spy.assert_no_check_after_a_failure()
    # Every restart forced a new setup: no Delta is checked in two enclave lives.
    for a in range(lives):
        for b in range(a + 1, lives):
            assert not deltas_per_life[a] & deltas_per_life[b]
    # The attacker's knowledge never accumulates on one Delta: it restarts from
    # nothing with every setup, far from the 256 bits it would need.
    assert outcomes.count("passed") + outcomes.count("failed") == lives * sessions_per_life - (
        outcomes.count("setup")
    )
    assert len(learned) >= lives
    assert max(len(notes) for notes in learned.values()) <= sessions_per_life
    assert all(sorted(notes.values()).count(1) <= 1 for notes in learned.values())


def test_concurrent_cheating_sessions_run_at_most_one_failing_check(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path, spy: CheckSpy
) -> None:
    """Attack: K concurrent cheating sessions on one pair, racing the check against the burn.

    The client starts K signing sessions on its pair with the server at once,
    each cheating in another column of its OT-extension message. Before, every
    session ran its check before any burn landed (6-9 bits of Delta per enclave
    life). Now the check and the burn are atomic per pair: at most one session's
    check fails, the others are refused (pair-setup-required) without a check,
    and no two checks on the pair overlap.
    """
    coordinator, client = Ed25519PrivateKey.generate(), ClientParty()
    sessions = 8
    spy.delay = 0.05

    async def body(stack: Stack) -> None:
        wallet = await _keygen(stack, client, coordinator)

        def cheat_in(column: int) -> Callable[[ceremony_pb2.CeremonyRequest], Any]:
            return lambda r: _cheating_sign(wallet.share, client, r, column)

        column_sessions = [
            _sign(stack, wallet, client, coordinator, cheat_in(k)) for k in range(sessions)
        ]
        outcomes = await asyncio.gather(*column_sessions, return_exceptions=True)
        codes = [
            "ok" if isinstance(o, ceremony_pb2.CeremonyResult) else _status(o)[0].name
            for o in outcomes
            if isinstance(o, ceremony_pb2.CeremonyResult | grpc.aio.AioRpcError)
        ]
        assert len(codes) == sessions, outcomes
        assert codes.count("ABORTED") <= 1
        assert set(codes) <= {"ok", "ABORTED", "FAILED_PRECONDITION"}

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))
    spy.assert_no_check_after_a_failure()
    failed = [c for c in spy.checks if not c.passed]
    assert len(failed) <= 1
    ordered = sorted(spy.checks, key=lambda c: c.started)
    assert all(a.ended <= b.started for a, b in itertools.pairwise(ordered))


# --- the honest path ---------------------------------------------------------------------------


class RvoleCheatingSigning(EcdsaSigning):
    """Cheats in the DKLs23 multiplication: flips a bit of round 2's RVOLE reply."""

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        messages = super()._run_round(round_, payloads)
        if round_ != 1:
            return messages
        return [
            dataclasses.replace(
                m,
                payload=m.payload[:A_TILDE]
                + bytes([m.payload[A_TILDE] ^ 0x40])
                + m.payload[A_TILDE + 1 :],
            )
            for m in messages
        ]


def test_a_burned_pair_needs_a_new_pair_setup_and_a_restart_needs_one_too(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator, client = Ed25519PrivateKey.generate(), ClientParty()
    box: dict[str, Wallet] = {}

    def rvole_cheat(request: ceremony_pb2.CeremonyRequest) -> SecureSession[Any]:
        wallet = box["wallet"]
        name_pair_setup(request, wallet.share)
        with_challenge(request)
        signers = list(request.signers)
        roster = Roster.from_parties(
            [(request.parties[i].party_id, bytes(request.parties[i].static_key)) for i in signers],
            signers,
        )
        ceremony = RvoleCheatingSigning(
            wallet.share, signers, DIGEST, lifecycle_session_id(request), secrets.token_bytes
        )
        return SecureSession(
            ceremony, client.static_key, roster, request.room_id, request.ceremony_id,
            secrets.token_bytes, context=channel_context(request),
        )  # fmt: skip

    async def first_life(stack: Stack) -> None:
        wallet = box["wallet"] = await _keygen(stack, client, coordinator)
        # The first signature after keygen needs no pair setup: the keygen's setup is kept.
        result = await _sign(stack, wallet, client, coordinator)
        assert ecdsa_verify(DIGEST, wallet.share.public_key, result.signature)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _sign(stack, wallet, client, coordinator, rvole_cheat)
        assert caught.value.code() == grpc.StatusCode.ABORTED
        pairs: Any = caught.value.trailing_metadata() or ()
        assert dict(pairs)["shardkeep-culprits"] == client.party.party_id

        # Burned: even an honest retry is refused, with a typed, machine-readable reason.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _sign(stack, wallet, client, coordinator)
        assert _status(refused.value) == (grpc.StatusCode.FAILED_PRECONDITION, REASON)
        assert client.party.party_id in (refused.value.details() or "")

        old = _setup_id(wallet)
        await _pair_setup(stack, wallet, client, coordinator)
        assert _setup_id(wallet) != old
        result = await _sign(stack, wallet, client, coordinator)
        assert ecdsa_verify(DIGEST, wallet.share.public_key, result.signature)

    async def restarted(stack: Stack) -> None:
        wallet = box["wallet"]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _sign(stack, wallet, client, coordinator)
        assert _status(refused.value) == (grpc.StatusCode.FAILED_PRECONDITION, REASON)
        await _pair_setup(stack, wallet, client, coordinator)
        result = await _sign(stack, wallet, client, coordinator)
        assert ecdsa_verify(DIGEST, wallet.share.public_key, result.signature)
        # A pair setup names the server and exactly one other party.
        for pair in ([CLIENT], [SERVER, SERVER], [CLIENT, 5]):
            request = pair_setup_request(wallet.keygen, pair)
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await host_loop(stack, signed(request, coordinator), {}, wallet.stored)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, first_life))
    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, restarted, box["wallet"].identity))


def test_concurrent_sessions_open_the_sealed_record_once(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions that start together share one opened record (single-flight load)."""
    coordinator, client = Ed25519PrivateKey.generate(), ClientParty()
    opened: list[int] = []
    decode = ServerShare.from_bytes

    def counting(data: bytes) -> ServerShare:
        opened.append(1)
        return decode(data)

    async def body(stack: Stack) -> None:
        wallet = await _keygen(stack, client, coordinator)
        monkeypatch.setattr(ServerShare, "from_bytes", staticmethod(counting))
        results = await asyncio.gather(
            *(_sign(stack, wallet, client, coordinator) for _ in range(4))
        )
        assert all(ecdsa_verify(DIGEST, wallet.share.public_key, r.signature) for r in results)

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))
    assert len(opened) == 1


def test_the_host_passes_the_reason_on_as_a_trailer() -> None:
    failure = enclave_pb2.CeremonyFailure(
        code="FAILED_PRECONDITION", message="no usable pair setup", reason=REASON
    )
    error = error_from_failure(failure)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(error.trailers) == {"shardkeep-reason": REASON}
    blamed = error_from_failure(
        enclave_pb2.CeremonyFailure(code="ABORTED", message="cheat", culprits=["alice"])
    )
    assert dict(blamed.trailers) == {"shardkeep-culprits": "alice"}
    assert error_from_failure(enclave_pb2.CeremonyFailure(code="UNAVAILABLE")).trailers == ()


def test_several_enclave_instances_never_share_an_ot_setup(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path, spy: CheckSpy
) -> None:
    """Two enclave instances with the same identity and the same sealed record: each makes
    its own pair setups (its own Delta), and neither accepts the other's."""
    coordinator, client = Ed25519PrivateKey.generate(), ClientParty()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    async def first(a: Stack) -> None:
        wallet = await _keygen(a, client, coordinator)
        await _sign(a, wallet, client, coordinator)
        on_a = set(spy.by_delta())

        async def second(b: Stack) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as refused:  # B never made that setup
                await _sign(b, wallet, client, coordinator)
            assert _status(refused.value) == (grpc.StatusCode.FAILED_PRECONDITION, REASON)
            await _pair_setup(b, wallet, client, coordinator)
            before = len(spy.checks)
            await _sign(b, wallet, client, coordinator)
            on_b = {c.delta for c in spy.checks[before:]}
            assert on_b and not on_b & on_a  # B checks against its own Delta only

        await with_enclave(
            pki, kms_endpoint, tmp_path / "b", coordinator, second, a.identity.sealed_identity
        )
        with pytest.raises(grpc.aio.AioRpcError) as other:  # and A does not know B's setup
            await _sign(a, wallet, client, coordinator)
        assert _status(other.value) == (grpc.StatusCode.FAILED_PRECONDITION, REASON)

    run(with_enclave(pki, kms_endpoint, tmp_path / "a", coordinator, first))
