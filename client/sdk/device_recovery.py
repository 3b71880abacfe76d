"""A device's encrypted backups at the host, and restoring a lost device's party from one."""

from __future__ import annotations

import secrets
from dataclasses import replace

from client.errors import sdk_boundary
from client.sdk.device_backup import make_device_backup, open_device_backup
from client.sdk.device_session import DeviceSession
from client.sdk.device_wallet import CoordinatorRefused, DeviceWallet
from client.storage.shares import BackupBlob, Passcode
from shardkeep.device_auth import sign_device_call
from shardkeep.v1 import coordinator_pb2
from tss.certificate import sign_party_claim

__all__ = ["DeviceRecovery"]


@sdk_boundary
class DeviceRecovery(DeviceSession):
    """Backup and restore (see :class:`client.sdk.device.Device`)."""

    async def backup(
        self,
        wallet: DeviceWallet,
        *,
        passcode: Passcode,
        include_owner_key: bool = True,
        insecure_allow_weak_kdf: bool = False,
    ) -> str:
        """Store an encrypted backup of this device's party (share and identity, and the
        wallet's policy set) at the host.

        Encrypted here (``client.sdk.device_backup``, Argon2id under
        ``passcode``); the coordinator and the host see ciphertext only. With
        ``include_owner_key`` the owner key goes in too, so a restored device
        can approve exports and reshares again; the policy set lets its
        approvers approve under the set in force.

        Returns:
            The backup's id.
        """
        blob = make_device_backup(
            wallet.share, self.identity, wallet_id=wallet.wallet_id, passcode=passcode,
            owner_key=self._owner_key if include_owner_key else None,
            policy_set=wallet.policy_set, insecure_allow_weak_kdf=insecure_allow_weak_kdf,
        )  # fmt: skip
        upload = coordinator_pb2.BackupUpload(
            wallet_id=blob.wallet_id, backup_id=blob.backup_id, epoch=blob.epoch, blob=blob.blob
        )
        await self._unary(
            self._coordinator.StoreBackup,
            sign_device_call(self._device_key, "StoreBackup", upload.SerializeToString()),
        )
        return blob.backup_id

    async def restore(
        self,
        wallet_id: str,
        *,
        public_key: bytes,
        passcode: Passcode,
        insecure_allow_weak_kdf: bool = False,
    ) -> DeviceWallet:
        """Become the party a lost device of this account held: fetch its newest backup,
        open it, and claim the party at the coordinator with the party's host key.

        ``public_key`` is the wallet's key as the user knows it (not as the
        coordinator or host says): the backup must open to a share of it. This
        device's identity (and owner key, if the backup carried it) become the
        restored ones; the wallet keeps the backed-up policy set.

        Raises:
            CoordinatorRefused: another account's wallet, no backup, or a
                keyring that does not list the restored party.
            DecryptionError: a wrong passcode or a tampered backup.
        """
        ask = coordinator_pb2.BackupAsk(wallet_id=wallet_id)
        fetched: coordinator_pb2.FetchedBackup = await self._unary(
            self._coordinator.FetchBackup,
            sign_device_call(self._device_key, "FetchBackup", ask.SerializeToString()),
        )
        restored = open_device_backup(
            BackupBlob(wallet_id, fetched.backup_id, fetched.party, fetched.epoch, fetched.blob),
            public_key=public_key, epoch=fetched.epoch, party_id=fetched.party,
            passcode=passcode, insecure_allow_weak_kdf=insecure_allow_weak_kdf,
        )  # fmt: skip
        parties = list(fetched.parties)
        share = restored.share
        if share.party_id >= len(parties) or parties[share.party_id] != restored.identity.party:
            raise CoordinatorRefused("the coordinator's keyring does not list the restored party")
        me = self._device_key.public_key().public_bytes_raw()
        claim = coordinator_pb2.PartyClaim(
            wallet_id=wallet_id,
            party=share.party_id,
            signature=sign_party_claim(
                restored.identity.hostseckey, wallet_id, share.party_id, me,
                secrets.token_bytes(32),
            ),
        )  # fmt: skip
        await self._unary(
            self._coordinator.ClaimParty,
            sign_device_call(self._device_key, "ClaimParty", claim.SerializeToString()),
        )
        self.identity = restored.identity
        if restored.owner_key is not None:
            self._owner_key = restored.owner_key
        policy_set = restored.policy_set
        if policy_set is not None:  # in force at the restored epoch, as the server share binds it
            policy_set = replace(policy_set, epoch=share.epoch)
        return DeviceWallet(
            wallet_id, share.scheme, share.threshold, parties, share.party_id,
            share.public_key, share.epoch, share, policy_set=policy_set,
        )  # fmt: skip
