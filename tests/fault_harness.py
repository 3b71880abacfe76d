"""Fault injection for ceremonies against the real stack (``client.cli.devstack``).

:class:`FaultyRelay` is the relay client the SDK uses (``WalletClient(relay=...)``).
Every message of a ceremony passes one of the SDK's parties: a device's own
message when it sends it, the server's message when the device receives it
(device-to-device messages are counted once, at the sender). So the shim sees
every message, names it ``(round, sender role, recipient role)`` and applies
the chosen :class:`Fault` at the chosen message:

- ``drop``: the message is never delivered;
- ``delay``: it is delivered ``delay_s`` later (past the ceremony's timeout);
- ``kill-host`` / ``kill-enclave`` / ``kill-relay``: that process is SIGKILLed
  (``DevStack.kill``) just before the message goes on;
- ``kill-client``: the SDK process "dies" there: :class:`ClientKilled` is raised
  and every later relay call or save of this client raises it too, so only what
  the client saved durably before that point survives.

A run without a fault records the ceremony's messages (``seen``), which is how
the matrix enumerates its cells.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.client import PartySession, RelayClient
from relay.session_client import SessionParty
from shardkeep.v1 import envelope_pb2, relay_pb2

FaultKind = Literal[
    "drop", "delay", "kill-client", "kill-host", "kill-enclave", "kill-relay",
    "enospc", "enospc-commit",
]  # fmt: skip
MESSAGE_FAULTS: tuple[FaultKind, ...] = (
    "drop", "delay", "kill-client", "kill-host", "kill-enclave", "kill-relay",
)  # fmt: skip
MessageKey = tuple[int, str, str]
"""A ceremony message: (round, sender role, recipient role); roles are "device<i>" or "server"."""


class ClientKilled(BaseException):
    """The client process died here (a BaseException: no SDK handler may swallow it)."""


@dataclass(frozen=True)
class Fault:
    """One cell's fault: what happens, and at which message.

    ``enospc`` (every write of the client's save fails) and ``enospc-commit``
    (only the write that commits the new epoch fails) name no message.
    """

    kind: FaultKind
    message: MessageKey | None = None

    def __str__(self) -> str:
        if self.message is None:
            return self.kind
        round_, sender, recipient = self.message
        return f"{self.kind}@r{round_}:{sender}->{recipient}"


@dataclass
class FaultPlan:
    """The fault of one cell and what the shim observed."""

    fault: Fault | None
    kill: Callable[[str], None]
    delay_s: float
    roles: dict[str, str] = field(default_factory=dict)
    seen: list[MessageKey] = field(default_factory=list)
    also_drop: MessageKey | None = None  # never delivered, besides the fault (pins an ordering)
    fired: bool = False
    client_killed: bool = False

    def role(self, party: str) -> str:
        return self.roles.get(party, "server")

    def check_alive(self) -> None:
        if self.client_killed:
            raise ClientKilled("the client was killed")

    def observe(self, key: MessageKey) -> FaultKind | None:
        """Record a message; return the fault to apply to it, if it is the chosen one."""
        self.check_alive()
        self.seen.append(key)
        if key == self.also_drop:
            return "drop"
        fault = self.fault
        if self.fired or fault is None or fault.message != key:
            return None
        self.fired = True
        if fault.kind == "kill-client":
            self.client_killed = True
            raise ClientKilled(f"the client was killed at {fault}")
        if fault.kind.startswith("kill-"):
            self.kill(fault.kind.removeprefix("kill-"))
            return None
        return fault.kind


class FaultyRelay(RelayClient):
    """A relay client whose sessions apply a :class:`FaultPlan` (on either relay
    transport: ``session`` as ``RelayClient``'s)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        plan: FaultPlan,
        coordinator: Ed25519PrivateKey,
        *,
        session: bool = False,
    ) -> None:
        super().__init__(channel, coordinator=coordinator, session=session)
        self.plan = plan

    @classmethod
    def to(
        cls,
        address: str,
        plan: FaultPlan,
        coordinator: Ed25519PrivateKey,
        *,
        session: bool = False,
    ) -> FaultyRelay:
        return cls(grpc.aio.insecure_channel(address), plan, coordinator, session=session)

    async def create_room(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        self.plan.check_alive()
        return await super().create_room(*args, **kwargs)  # type: ignore[arg-type]

    def join(  # type: ignore[override]
        self, room_id: str, party: str, join_token: str, *, resume_after: int = 0
    ) -> PartySession | SessionParty:
        self.plan.check_alive()
        session = super().join(room_id, party, join_token, resume_after=resume_after)
        if isinstance(session, SessionParty):
            return FaultySessionParty(session, party, self.plan)
        return FaultySession(session, party, self.plan)


class _Faults:
    """The plan applied to what a device's relay party sends and receives; mixed
    into the party's class (a Join stream's or a Session channel's)."""

    _plan: FaultPlan
    _party: str
    _background: set[asyncio.Task[None]]
    _inbox: asyncio.Queue[object]  # the party's own inbox (both classes name it so)

    def __init__(self, inner: PartySession | SessionParty, party: str, plan: FaultPlan) -> None:
        self.__dict__.update(inner.__dict__)  # the same stream, with the hooks below
        self._party = party
        self._plan = plan
        self._background: set[asyncio.Task[None]] = set()

    def _later(self, work: Callable[[], object]) -> None:
        async def run() -> None:
            await asyncio.sleep(self._plan.delay_s)
            if not self._plan.client_killed:
                result = work()
                if asyncio.iscoroutine(result):
                    await result

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def send_envelope(self, envelope: envelope_pb2.Envelope) -> int | None:
        plan = self._plan
        send = super().send_envelope  # type: ignore[misc]
        action = plan.observe(
            (envelope.round, plan.role(self._party), plan.role(envelope.recipient))
        )
        if action in ("drop", "delay"):
            if action == "delay":
                copy = envelope_pb2.Envelope()
                copy.CopyFrom(envelope)
                self._later(lambda: send(copy))
            return 0  # as if the relay had stored it
        result: int | None = await send(envelope)
        return result

    async def receive(self) -> relay_pb2.EnvelopeDelivery:
        plan = self._plan
        while True:
            delivery: relay_pb2.EnvelopeDelivery = await super().receive()  # type: ignore[misc]
            plan.check_alive()
            envelope = delivery.envelope
            sender = plan.role(envelope.sender)
            if sender != "server":
                return delivery  # a local device's message: counted when it was sent
            action = plan.observe((envelope.round, sender, plan.role(self._party)))
            if action is None:
                return delivery
            if action == "delay":
                self._later(lambda d=delivery: self._inbox.put_nowait(d))  # type: ignore[misc]

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await super().aclose()  # type: ignore[misc]


class FaultySession(_Faults, PartySession):
    """A device's Join stream with the plan applied to what it sends and receives."""


class FaultySessionParty(_Faults, SessionParty):
    """A device's Session channel with the plan applied to what it sends and receives."""
