"""The fault matrix: nothing a key change suffers loses the wallet.

Over keygen, refresh, reshare (add a party, remove one, change the threshold)
and import, for BIP-340 and ECDSA, and over the same but import for Ed25519:
for every message of the ceremony (recorded
from a clean run), drop it, delay it past the timeout, or kill the client, the
host, the enclave or the relay when it passes (``tests.fault_harness``); and
fail the client's save with ENOSPC. After each cell a fresh client, from the
device's durable state and through SDK calls only (no database edits),
settles the key change and signs: at the old epoch or the new one. The error
the caller of the faulty ceremony saw must be a ``WalletError``.

A fast subset runs with the suite; the whole matrix is behind the
``faultmatrix`` marker (``pytest -m faultmatrix tests/test_fault_matrix.py``)
and prints its figures: cells, outcomes, time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from coincurve import PrivateKey, PublicKey, PublicKeyXOnly
from nacl.signing import VerifyKey

from client.cli.devstack import DevStack
from client.cli.state import REAL_IO, StateIO, StateKeyStore, load_wallet, save_wallet
from client.sdk.party import PartyIdentity
from client.sdk.wallet import KeyChangeUndecided, Wallet, WalletClient, WalletError
from client.storage.shares import insecure_test_params
from relay.client import RelayClient
from relay.errors import RelayError
from tests.fault_harness import (
    MESSAGE_FAULTS,
    ClientKilled,
    Fault,
    FaultPlan,
    FaultyRelay,
    MessageKey,
)
from tests.stack_harness import RawDigestWalletClient, background_stack
from tss.keyshare import Scheme
from tss.signing import RecoverableSignature

pytestmark = pytest.mark.slow
PASSCODE = "fault matrix passphrase"
WEAK = insecure_test_params()
FAULTY_TIMEOUT_S = 6.0  # the faulty ceremony's budget; a delayed message arrives after it
CELL_TIMEOUT_S = 120.0
DIGEST = bytes.fromhex("fa" * 32)
SCHEMES: tuple[Scheme, ...] = ("bip340", "ecdsa-secp256k1", "ed25519")


@pytest.fixture(scope="module", params=["call", "session"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevStack]:
    """The stack, once per relay transport of the host and the SDK (docs/transport.md)."""
    host_args = ("--relay-transport", request.param)
    with background_stack(tmp_path_factory.mktemp("faults") / "run", host_args=host_args) as s:
        yield s


def relay_transport(stack: DevStack) -> Literal["call", "session"]:
    """The relay transport the stack's host runs, for the SDK to use the same."""
    host = stack.commands["host"]
    return "session" if host[host.index("--relay-transport") + 1] == "session" else "call"


# --- the device: durable state and SDK calls only ------------------------------------


@dataclass
class Device:
    """A wallet app on one device: its state directory (``cli_state``) and SDK calls."""

    state: Path
    io: StateIO = REAL_IO

    @property
    def store(self) -> StateKeyStore:
        return StateKeyStore(self.state, PASSCODE, WEAK, insecure_allow_weak_kdf=True, io=self.io)

    def save(self, wallet: Wallet, devices: dict[int, PartyIdentity]) -> None:
        save_wallet(
            self.state, wallet, devices, PASSCODE, params=WEAK, insecure_allow_weak_kdf=True,
            io=self.io,
        )  # fmt: skip

    def load(self, wallet_id: str) -> tuple[Wallet, dict[int, PartyIdentity]]:
        loaded = load_wallet(self.state, wallet_id, PASSCODE, insecure_allow_weak_kdf=True)
        return loaded.wallet, loaded.devices


@dataclass(frozen=True)
class Ceremony:
    """One key change of the matrix: the wallet it starts from and how it changes it."""

    name: str
    devices_before: int  # the local devices of the starting wallet (0: no wallet yet)
    threshold_before: int

    @property
    def new_devices(self) -> int:
        """How many fresh device identities the key change brings."""
        return {"refresh": 0, "reshare-remove": 1}.get(
            self.name, 2 if "reshare" in self.name else 1
        )

    async def run(
        self,
        client: WalletClient,
        device: Device,
        scheme: Scheme,
        wallet_id: str,
        before: tuple[Wallet, dict[int, PartyIdentity]] | None,
        fresh: list[PartyIdentity],
    ) -> None:
        """Run the key change with the ``fresh`` identities, keeping the shares on ``device``."""
        store = device.store
        if self.name == "keygen":
            await client.create_wallet(scheme, fresh, threshold=2, wallet_id=wallet_id, store=store)
        elif self.name == "import":
            key = PrivateKey().secret
            await client.import_key(
                scheme, key, fresh, threshold=2, wallet_id=wallet_id, store=store
            )
        elif self.name == "refresh":
            assert before is not None
            await client.refresh(*before, store=store)
        else:
            # reshare-add: 2-of-2 -> 2-of-3 (a backup joins); reshare-remove: 2-of-3 -> 2-of-2
            # (the backup leaves); reshare-threshold: 2-of-3 -> 3-of-3.
            assert before is not None
            threshold = 3 if self.name == "reshare-threshold" else 2
            await client.reshare(*before, fresh, threshold=threshold, store=store)


CEREMONIES = (
    Ceremony("keygen", 0, 0),
    Ceremony("refresh", 1, 2),
    Ceremony("reshare-add", 1, 2),
    Ceremony("reshare-remove", 2, 2),
    Ceremony("reshare-threshold", 2, 2),
    Ceremony("import", 0, 0),
)


# --- one cell ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a cell ended in."""

    cell: str
    error: str  # the type the faulty ceremony's caller saw ("" for none)
    typed: bool  # that error was a WalletError (or the client was killed)
    settled: str  # "old" / "new" epoch signed, or "none" (keygen/import never happened)
    seconds: float
    problem: str = ""  # why the cell failed its checks ("" when it passed)


@dataclass
class Matrix:
    outcomes: list[Outcome] = field(default_factory=list)

    def summary(self) -> str:
        counts = Counter((o.settled, o.error or "no error") for o in self.outcomes)
        failed = [o for o in self.outcomes if o.problem]
        lines = [f"cells: {len(self.outcomes)}, failed: {len(failed)}"]
        lines += [f"  {n:4d}  settled {s:4s} after {e}" for (s, e), n in sorted(counts.items())]
        lines += [f"  FAILED {o.cell}: {o.problem}" for o in failed]
        lines.append(f"time: {sum(o.seconds for o in self.outcomes):.0f} s")
        return "\n".join(lines)


def client_for(stack: DevStack, relay: FaultyRelay | None, timeout: float) -> WalletClient:
    return RawDigestWalletClient(
        stack.host_address, stack.relay_address, stack.coordinator_key,
        root_certificate=stack.root_certificate, timeout=timeout, relay=relay,
        relay_transport=relay_transport(stack),
    )  # fmt: skip


async def sign_and_verify(
    client: WalletClient, wallet: Wallet, devices: dict[int, PartyIdentity]
) -> None:
    """Sign with the wallet's server share and enough local devices; check the signature."""
    quorum = dict(sorted(devices.items())[: wallet.threshold - 1])
    signature = await client.sign(wallet, DIGEST, quorum)
    if isinstance(signature, RecoverableSignature):
        recovered = PublicKey.from_signature_and_message(
            signature.signature + bytes([signature.recovery_id]), DIGEST, hasher=None
        )
        assert recovered.format() == wallet.public_key
    elif wallet.scheme == "ed25519":  # the message is signed itself (RFC 8032), not hashed
        VerifyKey(wallet.public_key).verify(DIGEST, signature)
    else:
        assert PublicKeyXOnly(wallet.public_key[1:]).verify(signature, DIGEST)


async def prepare(
    stack: DevStack, device: Device, ceremony: Ceremony, scheme: Scheme
) -> tuple[str, tuple[Wallet, dict[int, PartyIdentity]] | None]:
    """The wallet the ceremony starts from, saved on the device (none for keygen and import)."""
    wallet_id = f"fm-{secrets.token_hex(6)}"
    if ceremony.devices_before == 0:
        return wallet_id, None
    devices = [PartyIdentity.generate() for _ in range(ceremony.devices_before)]
    async with client_for(stack, None, CELL_TIMEOUT_S) as client:
        wallet = await client.create_wallet(
            scheme, devices, threshold=ceremony.threshold_before, wallet_id=wallet_id
        )
    device.save(wallet, dict(enumerate(devices)))
    return wallet_id, device.load(wallet_id)


async def run_cell(
    stack: DevStack, tmp: Path, ceremony: Ceremony, scheme: Scheme, fault: Fault | None
) -> tuple[Outcome, list[MessageKey]]:
    """Run one cell; return its outcome and the messages the shim saw."""
    started = time.monotonic()
    name = f"{scheme}/{ceremony.name}/{fault or 'clean'}"
    device = Device(tmp / secrets.token_hex(4))
    wallet_id, before = await prepare(stack, device, ceremony, scheme)
    old_epoch = before[0].epoch if before else None
    plan = FaultPlan(fault, stack.kill, delay_s=FAULTY_TIMEOUT_S + 2)
    fresh = [PartyIdentity.generate() for _ in range(ceremony.new_devices)]
    plan.roles = {d.party_id: f"new{j}" for j, d in enumerate(fresh)}
    if before is not None:
        plan.roles |= {d.party_id: f"device{i}" for i, d in before[1].items()}
    if fault is not None and fault.kind.startswith("enospc"):
        device.io = enospc_io(only_commit=fault.kind == "enospc-commit")
    error: BaseException | None = None
    relay = FaultyRelay.to(
        stack.relay_address, plan, stack.coordinator_key,
        session=relay_transport(stack) == "session",
    )  # fmt: skip
    async with client_for(stack, relay, FAULTY_TIMEOUT_S) as client:
        try:
            await ceremony.run(client, device, scheme, wallet_id, before, fresh)
        except (Exception, ClientKilled) as e:
            error = e
    relay_pid = stack.processes["relay"].pid
    for name_ in ("relay", "enclave", "host"):
        await stack.revive(name_)
    if stack.processes["relay"].pid != relay_pid:
        await relay_ready(stack)
    device.io = REAL_IO
    settled, problem = await next_use(stack, device, wallet_id, old_epoch)
    typed = error is None or isinstance(error, (WalletError, ClientKilled))
    if not typed and not problem:
        problem = f"untyped error {type(error).__name__}: {error}"
    outcome = Outcome(
        name, type(error).__name__ if error else "", typed, settled,
        time.monotonic() - started, problem,
    )  # fmt: skip
    return outcome, plan.seen


async def relay_ready(stack: DevStack) -> None:
    """Wait until a client can make a room on a restarted relay.

    gRPC keeps connections per target in a process-wide pool: one that saw the
    old relay die may wait out its reconnect backoff although the new relay is
    healthy. The next cell must not pay for the previous cell's kill.
    """
    deadline = time.monotonic() + 30
    while True:
        async with RelayClient.insecure(
            stack.relay_address, coordinator=stack.coordinator_key
        ) as relay:
            try:
                room = await relay.create_room(["probe-a", "probe-b"], ttl_ms=5000)
                await relay.close_room(room.room_id, room.admin_token)
                return
            except RelayError:
                if time.monotonic() > deadline:
                    raise
        await asyncio.sleep(0.2)


async def next_use(
    stack: DevStack, device: Device, wallet_id: str, old_epoch: int | None
) -> tuple[str, str]:
    """A fresh client from the device's durable state: settle the key change, then sign.

    Returns:
        ("old" | "new" | "none", problem or "").
    """
    async with client_for(stack, None, CELL_TIMEOUT_S) as client:
        try:
            wallet, devices = device.load(wallet_id)
        except FileNotFoundError:
            wallet, devices = None, {}
        pending = device.store.load_pending(wallet_id)
        if pending is not None:
            # KeyChangeUndecided: the host keeps the change pending until its deadline,
            # and the old epoch signs meanwhile.
            with contextlib.suppress(KeyChangeUndecided):
                wallet = await client.resume(wallet, pending, devices=devices, store=device.store)
            if wallet is not None:
                wallet, devices = device.load(wallet_id)
        if wallet is None:
            if old_epoch is not None:
                return "none", "the committed wallet is gone from the device"
            return "none", ""  # keygen / import never completed: nothing to lose
        try:
            await sign_and_verify(client, wallet, devices)
        except Exception as e:
            return "none", f"cannot sign at epoch {wallet.epoch}: {type(e).__name__}: {e}"
    if old_epoch is None or wallet.epoch > old_epoch:
        return "new", ""
    return "old", ""


def enospc_io(*, only_commit: bool) -> StateIO:
    """Writes fail with ENOSPC: all of them, or only the commit (``wallet.json``)."""

    def full(path: Path, data: bytes) -> None:
        if only_commit and path.name != "wallet.json":
            return REAL_IO.write(path, data)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return StateIO(encrypt=REAL_IO.encrypt, write=full)


# --- the matrix ----------------------------------------------------------------------


def cells_of(seen: list[MessageKey]) -> list[Fault]:
    """Every message fault at every message of a clean run, and the ENOSPC saves."""
    messages = list(dict.fromkeys(seen))
    faults = [Fault(kind, m) for m in messages for kind in MESSAGE_FAULTS]
    return [*faults, Fault("enospc"), Fault("enospc-commit")]


def run(stack: DevStack, body: Callable[[], Awaitable[Outcome]]) -> Outcome:
    async def main() -> Outcome:
        async with asyncio.timeout(CELL_TIMEOUT_S * 3):
            return await body()

    return asyncio.run(main())


FAST_CELLS: tuple[tuple[Scheme, str, Fault, str], ...] = (
    # (scheme, ceremony, fault, the epoch the wallet must sign at afterwards)
    ("bip340", "refresh", Fault("drop", (3, "server", "device0")), "new"),  # the case 1
    ("bip340", "refresh", Fault("enospc"), "old"),  # case 2
    ("ecdsa-secp256k1", "reshare-add", Fault("enospc-commit"), "new"),
    ("bip340", "refresh", Fault("kill-host", (3, "device0", "server")), "old"),
    ("bip340", "refresh", Fault("kill-client", (3, "device0", "server")), "old"),
    ("ecdsa-secp256k1", "refresh", Fault("drop", (4, "device0", "server")), "new"),
    ("bip340", "reshare-add", Fault("kill-relay", (3, "device0", "server")), "old"),
    ("ecdsa-secp256k1", "import", Fault("drop", (4, "server", "new0")), "new"),
    ("ed25519", "refresh", Fault("drop", (3, "server", "device0")), "new"),
)


@pytest.mark.parametrize(
    ("scheme", "ceremony_name", "fault", "settles_at"),
    FAST_CELLS,
    ids=[f"{s}/{c}/{f}" for s, c, f, _ in FAST_CELLS],
)
def test_fault_matrix_fast_subset(
    stack: DevStack,
    tmp_path: Path,
    scheme: Scheme,
    ceremony_name: str,
    fault: Fault,
    settles_at: str,
) -> None:
    """A few cells of the matrix in every run: the issue's lost last message and full disk,
    and host, client and relay deaths at the certificate round."""
    (ceremony,) = [c for c in CEREMONIES if c.name == ceremony_name]
    outcome, seen = asyncio.run(run_cell(stack, tmp_path, ceremony, scheme, fault))
    assert fault.message is None or fault.message in seen, outcome  # it hit a real message
    assert not outcome.problem, outcome
    assert outcome.typed and outcome.settled == settles_at, outcome


# Every ceremony for every scheme, but import for Ed25519 (its rows are key changes).
ROWS = [
    (scheme, ceremony)
    for scheme in SCHEMES
    for ceremony in CEREMONIES
    if not (scheme == "ed25519" and ceremony.name == "import")
]


@pytest.mark.faultmatrix
@pytest.mark.timeout(4 * 3600)  # one ceremony's cells: minutes to an hour on two cores
@pytest.mark.parametrize(("scheme", "ceremony"), ROWS, ids=[f"{c.name}-{s}" for s, c in ROWS])
def test_full_fault_matrix(
    stack: DevStack, tmp_path: Path, ceremony: Ceremony, scheme: Scheme
) -> None:
    """Every fault at every message of one ceremony: the wallet signs at the old or new epoch."""
    clean, seen = asyncio.run(run_cell(stack, tmp_path, ceremony, scheme, None))
    assert not clean.problem and not clean.error and clean.settled in ("new",), clean
    matrix = Matrix([clean])
    for fault in cells_of(seen):
        outcome, _ = asyncio.run(run_cell(stack, tmp_path, ceremony, scheme, fault))
        matrix.outcomes.append(outcome)
        print(
            f"{outcome.cell:56s} {outcome.error or '-':22s} {outcome.settled:4s} "
            f"{outcome.seconds:5.1f}s {outcome.problem}"
        )
    print(f"\n{scheme} {ceremony.name}\n{matrix.summary()}")
    assert not [o for o in matrix.outcomes if o.problem], matrix.summary()
