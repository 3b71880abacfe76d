"""Several enclaves behind one host: which one runs each ceremony.

Every enclave runs the same image and is provisioned with the same sealed
identity (the newest in the store), so all have the same party keys, and
each can open every wallet's sealed share: KMS releases a share's data key
to any attested enclave whose measurements its key policy names
(docs/architecture.md, "Several hosts, relays and enclaves").

Routing follows the challenge. Only the enclave process that issued a
challenge accepts the request carrying it (docs/security/replay.md), and a
challenge starts with that process's instance tag. So the choice is made when
the host forwards ``GetChallenge``, and the ceremony goes to the enclave whose
tag starts its request's challenge:

- With an affinity key (the SDK sends the wallet id of an ECDSA ceremony:
  its DKLs23 pair setups live in one enclave's memory,
  docs/security/ot-setups.md), the enclave ranked first for that key by
  rendezvous hashing over the enclaves' names, among those up. Every host
  that names the enclaves alike picks the same one, and when an enclave goes
  down only its keys move.
- Without one, the enclave with the fewest ceremonies running on this host,
  ties taken in turn.
- An enclave whose call fails as unavailable is skipped for ``DOWN_S``
  seconds and the next one is asked; if every one is down, each is tried.

A request whose challenge names no enclave this host knows (issued before a
restart, or a replay), or one that cannot be reached (a coordinator keeps
challenges for later ceremonies, and their enclave may have gone since), goes
to the least busy one that is up, which refuses it as it would any unknown
challenge (reason ``challenge-refused``; the coordinator retries with a fresh
one): the enclave decides, not the host.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, TypeVar

import grpc
import structlog

from host.enclave_link import EnclaveLink, LinkConfig
from host.errors import HostError
from host.store import Store
from shardkeep.v1 import enclave_pb2

__all__ = [
    # Constants
    "DOWN_S",
    "INSTANCE_TAG_BYTES",
    # Types
    "EnclavePool",
    "Member",
]

DOWN_S: Final = 2.0
"""How long an enclave that failed as unavailable is passed over."""
INSTANCE_TAG_BYTES: Final = 8  # enclave.auth: a challenge's first bytes name its process
_UNREACHABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_T = TypeVar("_T")


@dataclass(eq=False)
class Member:
    """One enclave of the pool: its link, name, load and the instance tag it issues."""

    name: str
    link: EnclaveLink
    running: int = 0
    tag: bytes = b""
    down_until: float = 0.0

    @property
    def up(self) -> bool:
        return self.down_until <= time.monotonic()

    @contextmanager
    def ceremony(self) -> Iterator[EnclaveLink]:
        """Count one ceremony running on this enclave while the block runs."""
        self.running += 1
        try:
            yield self.link
        finally:
            self.running -= 1


class EnclavePool:
    """The enclaves a host drives, all with one identity."""

    def __init__(self, links: Mapping[str, EnclaveLink]) -> None:
        """Arguments:
        links: each enclave's link by its name (its gRPC target); at least one.
        """
        if not links:
            raise ValueError("an enclave pool needs at least one enclave")
        self.members = [Member(name, link) for name, link in links.items()]
        self._turn = 0
        self._log = structlog.get_logger("host.enclaves")

    @property
    def config(self) -> LinkConfig:
        return self.members[0].link.config

    @property
    def provisioned(self) -> bool:
        """Whether some enclave holds the identity (a Provision succeeded)."""
        return any(m.link.provisioned for m in self.members)

    @property
    def _identity_holder(self) -> EnclaveLink:
        for member in self.members:
            if member.link.provisioned:
                return member.link
        raise HostError(grpc.StatusCode.UNAVAILABLE, "no enclave is provisioned")

    @property
    def static_key(self) -> bytes:
        """The enclaves' X25519 party key (the same in each).

        Raises:
            HostError: UNAVAILABLE before any enclave was provisioned.
        """
        return self._identity_holder.static_key

    @property
    def host_pubkey(self) -> bytes:
        """The enclaves' ChillDKG host key (the same in each); empty before provisioning."""
        return self._identity_holder.host_pubkey if self.provisioned else b""

    async def provision(self, store: Store) -> None:
        """Provision every enclave with the store's identity; at least one must take it.

        The first goes alone, waiting up to ``provision_wait_s`` for it: on a new
        store it makes the identity the others then receive. The others get
        ``call_timeout_s`` to come up; one that does not is left for later (its
        first ceremony provisions it).

        Raises:
            HostError: no enclave could be provisioned (the first's error), or
                one runs with another identity.
            StoreError: the identity could not be read or written.
        """
        first, *rest = self.members
        errors: list[BaseException] = []
        try:
            await self._provision_one(first, store, self.config.provision_wait_s)
        except HostError as e:
            errors.append(e)
        wait_s = min(self.config.provision_wait_s, self.config.call_timeout_s)
        outcomes = await asyncio.gather(
            *(self._provision_one(m, store, wait_s) for m in rest), return_exceptions=True
        )
        errors += [o for o in outcomes if isinstance(o, BaseException)]
        for error in errors:
            if not isinstance(error, HostError) or error.code not in _UNREACHABLE:
                raise error
        if not self.provisioned:
            raise errors[0]

    async def _provision_one(self, member: Member, store: Store, wait_s: float) -> None:
        try:
            await member.link.provision(store, wait_s=wait_s)
        except HostError as e:
            if e.code in _UNREACHABLE:
                member.down_until = time.monotonic() + DOWN_S
                self._log.warning("enclave not provisioned: unreachable", enclave=member.name)
            raise
        self._check_identity(member)

    def _check_identity(self, member: Member) -> None:
        """Every enclave must hold the one identity: the keys clients verified."""
        for other in self.members:
            if other is not member and other.link.provisioned:
                if other.link.static_key != member.link.static_key:
                    raise HostError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"enclave {member.name} runs with another identity than {other.name}",
                    )
                return

    async def ensure_provisioned(self, store: Store, *, wait_s: float | None = None) -> None:
        """Provision again the enclaves that restarted (``EnclaveLink.ensure_provisioned``);
        at least one must be ready.

        Raises:
            HostError: no enclave is ready (the first's error).
        """
        errors: list[HostError] = []
        for member in self.members:
            try:
                await member.link.ensure_provisioned(store, wait_s=wait_s)
            except HostError as e:
                errors.append(e)
                continue
            self._check_identity(member)
        if len(errors) == len(self.members):
            raise errors[0]

    def _order(self, affinity: str = "") -> list[Member]:
        """The members to ask, best first: up ones before down ones."""
        members = self.members
        if affinity:
            key = affinity.encode()

            def rank(m: Member) -> bytes:
                return hashlib.sha256(key + b"\0" + m.name.encode()).digest()

            ordered = sorted(members, key=rank, reverse=True)
        else:
            turn, n = self._turn, len(members)
            self._turn = (turn + 1) % n
            ordered = sorted(members, key=lambda m: (m.running, (members.index(m) - turn) % n))
        return [m for m in ordered if m.up] + [m for m in ordered if not m.up]

    async def _first_answer(
        self, order: Sequence[Member], call: Callable[[Member], Awaitable[_T]]
    ) -> tuple[Member, _T]:
        """``call`` on each member in turn until one answers; the unreachable are marked down."""
        for i, member in enumerate(order):
            try:
                return member, await call(member)
            except HostError as e:
                if e.code not in _UNREACHABLE or i == len(order) - 1:
                    raise
                member.down_until = time.monotonic() + DOWN_S
                self._log.warning(
                    "enclave unavailable: asking the next", enclave=member.name, code=e.code.name
                )
        raise AssertionError("unreachable: the pool is never empty")

    async def challenge(
        self, *, affinity: str, request_id: str
    ) -> enclave_pb2.GetChallengeResponse:
        """A challenge from the enclave chosen for the next ceremony (see the module's docstring).

        Raises:
            HostError: the enclave's status (the last one asked).
        """
        member, issued = await self._first_answer(
            self._order(affinity), lambda m: m.link.challenge(request_id=request_id)
        )
        member.tag = bytes(issued.challenge[:INSTANCE_TAG_BYTES])
        return issued

    async def attestation(self, store: Store, nonce: bytes, *, request_id: str) -> bytes:
        """An attestation document from the least busy enclave that answers.

        Raises:
            HostError: the enclave's status (the last one asked).
        """

        async def attest(member: Member) -> bytes:
            link = member.link
            await link.ready(store)
            return await link.retry_unprovisioned(
                store, lambda: link.attestation(nonce, request_id=request_id)
            )

        _, document = await self._first_answer(self._order(), attest)
        return document

    async def issuer_of(
        self, challenge: bytes, store: Store, *, wait_s: float | None = None
    ) -> Member:
        """The enclave that issued ``challenge``, by its instance tag; after an unknown tag
        (another host fetched the challenge, or an enclave restarted) the tags are
        fetched again. Else, or when the issuer cannot be reached within ``wait_s`` (a
        coordinator keeps challenges for later ceremonies, docs/transport.md), the least
        busy enclave that is up, which refuses a challenge it did not issue (reason
        ``challenge-refused``: the coordinator retries with a fresh one)."""
        tag = challenge[:INSTANCE_TAG_BYTES]
        for attempt in range(2):
            if len(self.members) == 1:
                break
            for member in self.members:
                if member.tag == tag:
                    reachable = await self._reachable(member, store, wait_s)
                    return member if reachable else self._order()[0]
            if attempt == 0:
                await self.report_status()
        return self._order()[0]

    async def _reachable(self, member: Member, store: Store, wait_s: float | None) -> bool:
        """Whether ``member`` can take a ceremony (ready, or made so within ``wait_s``); one
        that cannot be reached is marked down."""
        if not member.up:
            return False
        try:
            await member.link.ready(store, wait_s=wait_s)
        except HostError as e:
            if e.code not in _UNREACHABLE:
                raise
            member.down_until = time.monotonic() + DOWN_S
            self._log.warning("the challenge's enclave is unavailable", enclave=member.name)
            return False
        return True

    async def report_status(self) -> None:
        """Fetch each enclave's status: its counters go to the metrics, its tag is kept.
        An enclave that does not answer is logged and marked down."""
        for member in self.members:
            try:
                status = await member.link.status()
            except HostError as e:
                self._log.warning(
                    "enclave status unavailable", enclave=member.name, code=e.code.name
                )
                if e.code in _UNREACHABLE:
                    member.down_until = time.monotonic() + DOWN_S
                continue
            member.tag = bytes(status.instance_tag) or member.tag
