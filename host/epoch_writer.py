"""A ceremony's new sealed shares, written as a pending epoch, then committed or aborted.

Step 4 of the host <-> enclave stream (``host.enclave_link``): when the enclave
has a new server share (keygen, reshare, refresh) it sends it sealed; the host
writes it as *pending* (the epoch and the share in one transaction) and only
then acknowledges, because the enclave must not send the message that commits
it before its share is stored (ChillDKG's "persist recovery data before
sending").

A refresh, reshare or import is a key change (``tss.certificate``): the
enclave stores its share before it signs the change's certificate, and the
result carries the complete certificate, which the host verifies before it
commits. The host itself carries the enclave's certificate signature to the
relay (the first envelope after the store acknowledgement), so until it has
forwarded one, no certificate can exist and a failure aborts the epoch at
once. After that, a failed ceremony leaves the epoch pending: another party may
already hold the complete certificate and submit it
(``HostServicer.SubmitCertificate``); without one it is aborted after its
deadline (``Store.abort_expired``), and the previous epoch stays current. A
keygen's epoch is aborted at once on failure, which frees its wallet id.

Two deadlines: an epoch is written with the short ``unsigned_deadline_s``,
because until the enclave's agreement has left the host no certificate can
exist; just before the host forwards it, ``Store.extend_pending`` moves the
deadline to ``pending_deadline_s``, in a transaction that fails if the epoch
was aborted meanwhile (then the agreement is not forwarded). So an epoch a
crashed host left behind before the enclave agreed blocks the wallet's key
changes for seconds, not for the whole pending deadline, and an abort can
never race a certificate into existence.

Only the epoch this writer opened is ever aborted: a pending epoch found
already there belongs to another (or an unfinished) ceremony, and the service
refuses to start over it.

Keygen's share creates the wallet (epoch 0). So does an import's
(``CeremonyPlan.may_open_wallet`` for a wallet the store does not know, see
``open_wallet``): the wallet starts at the reshare's epoch with its new
keyring and the owner key the request registers; aborting that epoch removes
the wallet again, as for keygen.
"""

from __future__ import annotations

import asyncio
import functools
import time

import structlog

from host.ceremony_plan import CeremonyPlan, scheme_name
from host.errors import EnclaveProtocolError
from host.store import (
    EncryptedDataKey,
    KeyChange,
    NewWallet,
    OwnerKey,
    PublicKey,
    SealedCiphertext,
    SealedShare,
    Store,
    StoreError,
    StoreInputError,
)
from shardkeep.keychange import CertificateError, check_certificate
from shardkeep.v1 import ceremony_pb2

__all__ = ["EpochWriter", "sealed_share_from_proto", "key_change_from_proto"]


def key_change_from_proto(proto: ceremony_pb2.KeyChange) -> KeyChange:
    """The store's record of a ``KeyChange``.

    Raises:
        StoreInputError: a malformed field.
    """
    return KeyChange(
        bytes(proto.session_id),
        bytes(proto.transcript),
        tuple(bytes(k) for k in proto.host_pubkeys),
    )


def sealed_share_from_proto(share: ceremony_pb2.SealedShare) -> SealedShare:
    """The store's record of a ``SealedShare`` the enclave sent.

    Raises:
        EnclaveProtocolError: an unknown scheme or a malformed field.
    """
    scheme = scheme_name(share.scheme)
    if scheme is None:
        raise EnclaveProtocolError("sealed share with an unknown scheme")
    try:
        return SealedShare(
            wallet_id=share.wallet_id,
            share_index=share.share_index,
            scheme=scheme,
            epoch=share.epoch,
            encrypted_data_key=EncryptedDataKey(bytes(share.encrypted_data_key)),
            ciphertext=SealedCiphertext(bytes(share.ciphertext)),
        )
    except StoreInputError as e:
        raise EnclaveProtocolError(f"malformed sealed share: {e}") from e


class EpochWriter:
    """Writes one ceremony's sealed shares into a pending epoch it opens itself."""

    def __init__(
        self,
        store: Store,
        plan: CeremonyPlan,
        pending_deadline_s: float,
        unsigned_deadline_s: float | None = None,
    ) -> None:
        """Arguments:
        store: the ciphertext store (called through ``asyncio.to_thread``).
        plan: the ceremony (keygen, reshare or refresh; others must not store).
        pending_deadline_s: how long the epoch may stay pending once the
            enclave's agreement left (then ``Store.abort_expired`` discards it).
        unsigned_deadline_s: how long it may stay pending before that (at
            most ``pending_deadline_s``; None: the same).
        """
        self._store = store
        self._plan = plan
        self._pending_deadline_s = pending_deadline_s
        self._unsigned_deadline_s = min(
            pending_deadline_s,
            pending_deadline_s if unsigned_deadline_s is None else unsigned_deadline_s,
        )
        self._key_change: KeyChange | None = None
        self._signature_sent = False
        self._epoch: int | None = None
        self._public_key: bytes | None = None
        self._opens_wallet = False
        self._done = False
        self._log = structlog.get_logger("host.epochs")

    @property
    def epoch(self) -> int | None:
        """The epoch this writer opened (None while nothing was stored)."""
        return self._epoch

    @property
    def public_key(self) -> bytes | None:
        """A new wallet's public key (keygen, import), as the enclave reported it with the share."""
        return self._public_key

    def open_wallet(self) -> None:
        """Let the first share create the wallet: an import (the store does not know it).

        Raises:
            EnclaveProtocolError: the plan is not a reshare that may open a wallet.
        """
        if not self._plan.may_open_wallet or self._plan.kind_name != "reshare":
            raise EnclaveProtocolError(f"a {self._plan.kind_name} ceremony opens no wallet")
        self._opens_wallet = True

    async def write(self, proto: ceremony_pb2.SealedShare) -> int:
        """Store one sealed share as pending; return the epoch to acknowledge.

        Arguments:
            proto: the share from ``CeremonyOutput.store``.

        Returns:
            The share's epoch (for ``StoreAck``).

        Raises:
            EnclaveProtocolError: the ceremony stores nothing (sign, export), or
                the share is not this wallet's, malformed, or of another epoch
                than the ceremony's earlier shares.
            StoreError: the store refused (mapped through ``host.errors``).
        """
        plan = self._plan
        if not plan.changes_keys:
            raise EnclaveProtocolError(f"a {plan.kind_name} ceremony stores no share")
        if self._done:
            raise EnclaveProtocolError("a share arrived after the epoch was settled")
        share = sealed_share_from_proto(proto)
        if share.wallet_id != plan.wallet_id:
            raise EnclaveProtocolError("sealed share of another wallet")
        if self._epoch is not None and share.epoch != self._epoch:
            raise EnclaveProtocolError("sealed shares of one ceremony span two epochs")
        if (plan.kind_name == "keygen") == proto.HasField("key_change"):
            raise EnclaveProtocolError(
                "a key change's share comes with its key change, keygen's not"
            )
        try:
            if proto.HasField("key_change"):
                self._key_change = key_change_from_proto(proto.key_change)
            if self._epoch is None:
                await self._open(share, bytes(proto.public_key))
            else:
                await asyncio.to_thread(self._store.put_pending_share, share)
        except StoreInputError as e:
            # Everything the request contributed was checked in plan_ceremony,
            # so a share that does not fit the wallet is the enclave's doing.
            raise EnclaveProtocolError(f"sealed share does not fit the wallet: {e}") from e
        self._log.info(
            "sealed share stored as pending",
            epoch=share.epoch,
            share_index=share.share_index,
            ciphertext_bytes=len(share.ciphertext),
        )
        return share.epoch

    async def _open(self, share: SealedShare, public_key: bytes) -> None:
        plan = self._plan
        if plan.kind_name == "keygen":
            if share.epoch != 0:
                raise EnclaveProtocolError("keygen's share must be of epoch 0")
            if plan.scheme is None or plan.keyring is None:
                raise EnclaveProtocolError("keygen plan lacks its scheme or keyring")
            wallet = NewWallet(
                wallet_id=plan.wallet_id,
                scheme=plan.scheme,
                public_key=PublicKey(public_key),
                keyring=plan.keyring,
                owner_key=OwnerKey(bytes(plan.request.owner_key)),
            )
            await asyncio.to_thread(
                functools.partial(
                    self._store.create_wallet,
                    wallet,
                    [share],
                    deadline_at_ms=self._deadline(self._unsigned_deadline_s),
                )
            )
            self._public_key = public_key
        elif self._opens_wallet:
            await self._open_imported(share, public_key)
        else:
            # A refresh keeps the current keyring (None); a reshare records the new one.
            await asyncio.to_thread(
                functools.partial(
                    self._store.begin_epoch,
                    plan.wallet_id,
                    share.epoch,
                    plan.keyring,
                    shares=[share],
                    key_change=self._key_change,
                    deadline_at_ms=self._deadline(self._unsigned_deadline_s),
                )
            )
        self._epoch = share.epoch

    @staticmethod
    def _deadline(seconds: float) -> int:
        return int((time.time() + seconds) * 1000)

    async def _open_imported(self, share: SealedShare, public_key: bytes) -> None:
        """Create an imported wallet at the reshare's epoch, holding the server's first share."""
        plan, request = self._plan, self._plan.request
        if share.epoch != request.epoch + 1:
            raise EnclaveProtocolError("an import's share must be of the reshare's new epoch")
        if public_key != bytes(request.keyring.public_key):
            raise EnclaveProtocolError("an import's share is of another key than the request's")
        if plan.scheme is None or plan.keyring is None:
            raise EnclaveProtocolError("the import plan lacks its scheme or keyring")
        wallet = NewWallet(
            wallet_id=plan.wallet_id,
            scheme=plan.scheme,
            public_key=PublicKey(public_key),
            keyring=plan.keyring,
            owner_key=OwnerKey(bytes(request.owner_key)),
            epoch=share.epoch,
        )
        await asyncio.to_thread(
            functools.partial(
                self._store.create_wallet,
                wallet,
                [share],
                key_change=self._key_change,
                deadline_at_ms=self._deadline(self._unsigned_deadline_s),
            )
        )
        self._public_key = public_key

    async def forwarding(self) -> None:
        """The enclave sent an envelope: after its share, its agreement (certificate signature).

        Before the first one leaves, the epoch gets its full pending deadline
        (``Store.extend_pending``).

        Raises:
            StoreError: the epoch was aborted meanwhile, or its short deadline
                passed: the envelope must not be forwarded (the ceremony fails,
                and no certificate can exist).
        """
        if self._epoch is None or self._signature_sent or self._done:
            return
        await asyncio.to_thread(
            self._store.extend_pending,
            self._plan.wallet_id,
            self._epoch,
            self._deadline(self._pending_deadline_s),
        )
        self._signature_sent = True

    async def commit(self, certificate: bytes) -> None:
        """Make the written epoch current (no-op when nothing was stored).

        Arguments:
            certificate: the result's certificate; a key change's must complete
                its ``KeyChange``; keygen's is ChillDKG's own, kept as given (the
                parties check it against their transcripts).

        Raises:
            EnclaveProtocolError: a key change's certificate is missing or does not verify.
            StoreError: the commit failed; the epoch stays pending (not
                aborted: the other parties may already hold only new shares).
        """
        if self._epoch is None or self._done:
            return
        kc = self._key_change
        if kc is not None:
            try:
                check_certificate(kc.session_id, kc.transcript, kc.host_pubkeys, certificate)
            except CertificateError as e:
                raise EnclaveProtocolError(f"the result's certificate is not valid: {e}") from e
        await asyncio.to_thread(
            self._store.commit_epoch, self._plan.wallet_id, self._epoch, certificate
        )
        self._done = True
        self._log.info("epoch committed", epoch=self._epoch, certified=kc is not None)

    async def abort(self) -> None:
        """Discard the epoch this writer opened, unless a key change may have been certified.

        Never raises. A keygen's epoch 0 is discarded at once, with its wallet
        (the id is free again); so is a key change's epoch while the enclave's
        certificate signature has not left the host. Once it has, the epoch
        stays pending: some party may hold the complete certificate and submit
        it; without one the epoch is aborted after its deadline
        (``Store.abort_expired``). Either way the previous epoch stays current
        and no usable share is lost.
        """
        if self._epoch is None or self._done:
            return
        self._done = True
        if self._key_change is not None and self._signature_sent:
            self._log.info("pending epoch kept until its deadline", epoch=self._epoch)
            return
        try:
            await asyncio.to_thread(self._store.abort_epoch, self._plan.wallet_id, self._epoch)
        except Exception as e:
            # Store messages carry ids only; anything else is named by its type.
            reason = str(e) if isinstance(e, StoreError) else type(e).__qualname__
            self._log.error("aborting the pending epoch failed", epoch=self._epoch, error=reason)
            return
        self._log.info("pending epoch aborted", epoch=self._epoch)
