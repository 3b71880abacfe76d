"""The enclave's configuration: read from one JSON file that is part of the measured image.

On Nitro the file is baked into the EIF (so PCR0 covers it); off Nitro it is
given on the command line. It pins the coordinator keys (docs/architecture.md), names
the KMS keys and endpoint, and chooses the NSM (``simulated`` off Nitro).

KMS keys: ``kms.key_id`` seals new shares; ``kms.decrypt_key_ids`` lists
older keys whose data keys still open shares during a key rotation
(deploy/kms/README.md, "Re-seal under a new key"). On Nitro each must be a
key ARN or alias ARN in ``kms.region``: the credentials come from the
untrusted host (``Enclave.SetCredentials``), and a bare alias name or key id
would resolve in the account of whatever credentials it hands in (a key
whose policy the host's owner controls), not in the account that holds the
sealing key.

AWS credentials: never in the image. On Nitro the host hands the instance
role's temporary credentials in at run time, and a configuration that names
any is refused. Off Nitro (development, devkms) ``kms.access_key_id`` /
``kms.secret_access_key`` (and optionally ``kms.session_token``) may give
fixed ones; without them the enclave waits for the host's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from enclave.auth import pinned_keys
from enclave.kms import KmsCredentials
from enclave.policy.organisation import Organisation
from shardkeep.policyset import InvalidPolicy

__all__ = ["ConfigError", "EnclaveConfig", "KmsSettings", "check_key_arn"]

# AWS KMS key ARN or alias ARN (AWS General Reference, "Amazon Resource Names";
# KMS Developer Guide, "Key identifiers (KeyId)"): the partition, region and
# account pin where the key lives.
_KMS_ARN: Final = re.compile(
    r"arn:aws(?:-[a-z]+)*:kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?:key/[A-Za-z0-9-]+|alias/[A-Za-z0-9/_-]+)"
)


RECORD_CACHE_SIZE: Final = 4096
"""Opened server-share records kept in enclave memory by default (``record_cache_size``)."""


class ConfigError(ValueError):
    """The configuration file is missing a field or has a wrong value."""


@dataclass(frozen=True)
class KmsSettings:
    """Attributes:
    endpoint: the KMS endpoint URL (through vsock-proxy on Nitro; devkms elsewhere).
    region: the AWS region (SigV4 scope).
    key_id: the KMS key new shares are sealed under.
    decrypt_key_ids: older KMS keys whose data keys still open sealed shares.
    credentials: fixed development credentials, or None (the host hands them in).
    """

    endpoint: str
    region: str
    key_id: str
    decrypt_key_ids: tuple[str, ...] = ()
    credentials: KmsCredentials | None = None


def check_key_arn(key_id: str, region: str) -> None:
    """Check that a KMS key reference is a key or alias ARN in ``region``.

    Arguments:
        key_id: the configured reference.
        region: the enclave's KMS region.

    Raises:
        ConfigError: a bare key id or alias name, another region, or not an ARN.
    """
    match = _KMS_ARN.fullmatch(key_id)
    if match is None:
        raise ConfigError(
            f"KMS key {key_id!r} must be a key ARN or alias ARN on Nitro: a bare id or "
            "alias resolves in the account of the credentials the host hands in"
        )
    if match.group("region") != region:
        raise ConfigError(f"KMS key {key_id!r} is not in kms.region {region}")


def _key_ids(kms: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    key_id = kms["key_id"]
    decrypt = kms.get("decrypt_key_ids", [])
    if not isinstance(decrypt, list):
        raise ConfigError("kms.decrypt_key_ids must be a list of KMS key ids")
    for value in (key_id, *decrypt):
        if not isinstance(value, str) or not value:
            raise ConfigError("KMS key ids must be non-empty strings")
    return key_id, tuple(decrypt)


def _organisation(policies: Any, authenticators: Any) -> Organisation:
    if not isinstance(policies, dict) or not all(
        isinstance(k, str) and isinstance(v, str | dict) for k, v in policies.items()
    ):
        raise ConfigError(
            "organisation_policies maps policy names to deny conditions or policy entries"
        )
    if not isinstance(authenticators, list):
        raise ConfigError("organisation_authenticators is a list of authenticator entries")
    try:  # every condition compiles and every key is well formed, or the enclave does not start
        return Organisation.from_config(policies, authenticators)
    except InvalidPolicy as e:
        raise ConfigError(f"organisation_policies: {e}") from e


def _credentials(kms: dict[str, Any]) -> KmsCredentials | None:
    names = ("access_key_id", "secret_access_key", "session_token")
    given = {name: kms[name] for name in names if name in kms}
    if not given:
        return None
    if not {"access_key_id", "secret_access_key"} <= set(given):
        raise ConfigError("kms.access_key_id and kms.secret_access_key go together")
    if not all(isinstance(v, str) and v for v in given.values()):
        # No value in the message: these are credentials.
        raise ConfigError("kms credentials must be non-empty strings")
    return KmsCredentials(
        given["access_key_id"], given["secret_access_key"], given.get("session_token")
    )


@dataclass(frozen=True)
class EnclaveConfig:
    """Attributes:
    listen: the gRPC address (``unix:/path``; a bridge carries it over vsock on Nitro).
    coordinator_keys: pinned 32-byte Ed25519 keys of the relay coordinators.
    kms: where the sealing keys come from.
    nsm_mode: "simulated" (dev, CI) or "nitro" (/dev/nsm).
    pki_dir: simulated mode: the directory with the test root (``SimulatedNitroPki.save``).
    image: simulated mode: the image name the simulated PCRs derive from.
    max_request_validity_seconds: how far ahead a request's not_after may lie.
    record_cache_size: opened server-share records kept in memory, least
        recently used out first. Size it to the wallets active within a
        while: a wallet whose record was evicted pays a KMS call (and about
        15 ms of CPU) to open it again on its next ceremony.
    organisation_policies: the deployment's policies, name -> a deny
        condition (CEL) or a policy entry (``enclave.policy.organisation``):
        denies refuse every gated activity of every wallet they hold for;
        allows allow any wallet's activity with the approvals of
        ``organisation_authenticators`` (docs/security/policy.md). Part of
        the measured image, so the host cannot change them.
    organisation_authenticators: the organisation's authenticator entries.
    """

    listen: str
    coordinator_keys: tuple[bytes, ...]
    kms: KmsSettings
    nsm_mode: str = "simulated"
    pki_dir: Path | None = None
    image: str = "shardkeep-enclave"
    max_request_validity_seconds: int = 600
    record_cache_size: int = RECORD_CACHE_SIZE
    organisation_policies: dict[str, Any] = field(default_factory=dict)
    organisation_authenticators: list[Any] = field(default_factory=list)

    def organisation(self) -> Organisation:
        """The organisation's policies, compiled (checked already by ``load``)."""
        return Organisation.from_config(
            self.organisation_policies, self.organisation_authenticators
        )

    @staticmethod
    def load(path: Path) -> EnclaveConfig:
        """Read and check a configuration file.

        Arguments:
            path: the JSON file.

        Returns:
            The configuration.

        Raises:
            ConfigError: unreadable, a missing field or a wrong value.
        """
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            kms = raw["kms"]
            key_id, decrypt_key_ids = _key_ids(kms)
            config = EnclaveConfig(
                listen=str(raw["listen"]),
                coordinator_keys=pinned_keys(raw["coordinator_keys"]),
                kms=KmsSettings(
                    endpoint=str(kms["endpoint"]),
                    region=str(kms.get("region", "us-east-1")),
                    key_id=key_id,
                    decrypt_key_ids=decrypt_key_ids,
                    credentials=_credentials(kms),
                ),
                nsm_mode=str(raw.get("nsm", {}).get("mode", "simulated")),
                pki_dir=Path(raw["nsm"]["pki_dir"]) if "pki_dir" in raw.get("nsm", {}) else None,
                image=str(raw.get("nsm", {}).get("image", "shardkeep-enclave")),
                max_request_validity_seconds=int(raw.get("max_request_validity_seconds", 600)),
                record_cache_size=int(raw.get("record_cache_size", RECORD_CACHE_SIZE)),
                organisation_policies=raw.get("organisation_policies", {}),
                organisation_authenticators=raw.get("organisation_authenticators", []),
            )
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"invalid enclave configuration {path}: {e}") from e
        _organisation(config.organisation_policies, config.organisation_authenticators)
        if config.record_cache_size < 1:
            raise ConfigError("record_cache_size must be at least 1")
        if config.nsm_mode not in ("simulated", "nitro"):
            raise ConfigError("nsm.mode must be 'simulated' or 'nitro'")
        if config.nsm_mode == "simulated" and config.pki_dir is None:
            raise ConfigError("a simulated NSM needs nsm.pki_dir")
        if config.nsm_mode == "nitro":
            if config.kms.credentials is not None:
                raise ConfigError(
                    "AWS credentials must not be part of the (public, measured) image: "
                    "the host hands them in at run time"
                )
            for key in (config.kms.key_id, *config.kms.decrypt_key_ids):
                check_key_arn(key, config.kms.region)
        return config
