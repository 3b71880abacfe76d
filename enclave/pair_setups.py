"""The server party's DKLs23 pair setups: in enclave memory for the life of the process only.

Why (docs/security/ot-setups.md): a check on a pair's OT extension that may
have failed can leak a bit of the server's Delta for that pair (selective
failure, GHSA-7f6p-phw2-8253), so the pair's setup must never be used again.
A sealed setup could be replayed by the host after a restart, with the burn
forgotten; a setup that never leaves this process's memory cannot. So:

- a sealed server record carries no pair setup (``without_pair_setups`` before
  sealing and after opening, so an older record's setups are ignored too);
- keygen, refresh and reshare hand their fresh setups to ``PairSetups.adopt``,
  and a pair-setup ceremony adds one with ``put``;
- a signing session takes the setups its request names by ``setup_id``
  (``session_setup``); an unknown, replaced or burned one is
  ``PairSetupError`` (the SDK runs a pair setup and retries);
- every session on a pair shares the pair's one ``PeerSetup`` object, where
  ``tss.ecdsa.sign`` marks the burn, and runs its steps holding the pair's
  lock (``PairLocks``), so "is it burned? -> check -> burn on failure" is atomic
  across concurrent sessions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from enclave.identity import ServerShare
from tss.ecdsa.setup import EcdsaSetup, PeerSetup
from tss.errors import PairSetupError
from tss.keyshare import KeyShare

__all__ = ["PairKey", "PairLocks", "PairSetups", "without_pair_setups"]

PAIR_SETUPS_MAX = 8192
"""Pair setups kept (about 24 KiB each); the least recently used go first, and their
pairs then need a new pair setup, which is safe: an evicted setup is never used again."""


@dataclass(frozen=True)
class PairKey:
    """Which keyring and which pair a setup belongs to (the server party's side)."""

    wallet_id: str
    epoch: int
    key_id: bytes
    peer: int


@dataclass(frozen=True)
class _Entry:
    setup: PeerSetup
    lock: threading.Lock


class PairLocks:
    """The locks of a session's pairs, taken in increasing peer order (no deadlock)."""

    def __init__(self, locks: Sequence[threading.Lock]) -> None:
        self._locks = tuple(locks)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for lock in self._locks:
                stack.enter_context(lock)
            yield

    def acquire_now(self) -> bool:
        """Take every lock if all are free now (no waiting); ``release`` gives them back.

        Returns:
            False, holding none, if any lock is taken.
        """
        taken: list[threading.Lock] = []
        for lock in self._locks:
            if not lock.acquire(blocking=False):
                for held in reversed(taken):
                    held.release()
                return False
            taken.append(lock)
        return True

    def release(self) -> None:
        """Release the locks ``acquire_now`` took."""
        for lock in reversed(self._locks):
            lock.release()


NO_LOCKS = PairLocks(())


def without_pair_setups(record: ServerShare) -> ServerShare:
    """``record`` with no DKLs23 pair setup in its key share (what is sealed, and what is used)."""
    share = record.key_share
    if share.ecdsa is None or not share.ecdsa.held:
        return record
    stripped = dataclasses.replace(share, ecdsa=share.ecdsa.restricted(()))
    return dataclasses.replace(record, key_share=stripped)


class PairSetups:
    """A bounded in-memory registry of the server party's pair setups, by ``PairKey``."""

    def __init__(self, size: int = PAIR_SETUPS_MAX) -> None:
        self._size = size
        self._entries: OrderedDict[PairKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: PairKey, setup: PeerSetup) -> None:
        """Keep ``setup`` as the pair's one setup (replacing any earlier one)."""
        with self._lock:
            held = self._entries.get(key)
            if held is None or held.setup is not setup:  # one lock per setup object
                self._entries[key] = _Entry(setup, threading.Lock())
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def adopt(self, wallet_id: str, record: ServerShare) -> ServerShare:
        """Keep the setups a keygen, refresh or reshare made; return the record to seal."""
        share = record.key_share
        setup = share.ecdsa
        if setup is not None:
            for j in sorted(setup.held):
                self.put(_key(wallet_id, share, j), setup.peer(j))
        return without_pair_setups(record)

    def setup_id(self, key: PairKey) -> bytes | None:
        """The id of the pair's current unburned setup, or None (for tests and logs)."""
        with self._lock:
            entry = self._entries.get(key)
        return None if entry is None or entry.setup.burned else entry.setup.setup_id

    def session_setup(
        self,
        wallet_id: str,
        share: KeyShare,
        peers: Sequence[int],
        named: Mapping[int, bytes],
        party_ids: Sequence[str],
    ) -> tuple[KeyShare, PairLocks]:
        """The key share a signing session runs with, and the locks of its pairs.

        Arguments:
            wallet_id: the wallet.
            share: the server party's key share (without pair setups).
            peers: the other signers' indices.
            named: the setup id the request names for each peer.
            party_ids: the keyring's party ids (for the error message).

        Raises:
            PairSetupError: a peer's setup is not named, unknown, replaced or
                burned (the first such peer).
        """
        setup = share.ecdsa
        if setup is None:
            return share, NO_LOCKS
        chosen: dict[int, _Entry] = {}
        with self._lock:
            for j in sorted(peers):
                entry = self._entries.get(_key(wallet_id, share, j))
                wanted = named.get(j, b"")
                if (
                    entry is None
                    or entry.setup.burned
                    or not hmac.compare_digest(entry.setup.setup_id, wanted)
                ):
                    raise PairSetupError(
                        j,
                        f"no usable DKLs23 pair setup with party {party_ids[j]} "
                        "(unknown, replaced or burned): run a pair setup",
                    )
                self._entries.move_to_end(_key(wallet_id, share, j))
                chosen[j] = entry
        view = EcdsaSetup(setup.index, setup.parties, setup.key_id, {
            j: e.setup for j, e in chosen.items()
        })  # fmt: skip
        locks = PairLocks([chosen[j].lock for j in sorted(chosen)])
        return dataclasses.replace(share, ecdsa=view), locks


def _key(wallet_id: str, share: KeyShare, peer: int) -> PairKey:
    if share.ecdsa is None:
        raise PairSetupError(peer, "not an ECDSA key share")
    return PairKey(wallet_id, share.epoch, share.ecdsa.key_id, peer)
