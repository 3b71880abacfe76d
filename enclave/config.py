"""The enclave's configuration: read from one JSON file that is part of the measured image.

On Nitro the file is baked into the EIF (so PCR0 covers it); off Nitro it is
given on the command line. It pins the coordinator keys (DESIGN.md §5), names
the KMS key and endpoint, and chooses the NSM (``simulated`` off Nitro).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.auth import pinned_keys


class ConfigError(ValueError):
    """The configuration file is missing a field or has a wrong value."""


@dataclass(frozen=True)
class KmsSettings:
    endpoint: str
    region: str
    key_id: str
    access_key_id: str
    secret_access_key: str


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
    """

    listen: str
    coordinator_keys: tuple[bytes, ...]
    kms: KmsSettings
    nsm_mode: str = "simulated"
    pki_dir: Path | None = None
    image: str = "shardkeep-enclave"
    max_request_validity_seconds: int = 600

    @staticmethod
    def load(path: Path) -> EnclaveConfig:
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            kms = raw["kms"]
            config = EnclaveConfig(
                listen=str(raw["listen"]),
                coordinator_keys=pinned_keys(raw["coordinator_keys"]),
                kms=KmsSettings(
                    str(kms["endpoint"]),
                    str(kms.get("region", "us-east-1")),
                    str(kms["key_id"]),
                    str(kms.get("access_key_id", "enclave")),
                    str(kms.get("secret_access_key", "enclave")),
                ),
                nsm_mode=str(raw.get("nsm", {}).get("mode", "simulated")),
                pki_dir=Path(raw["nsm"]["pki_dir"]) if "pki_dir" in raw.get("nsm", {}) else None,
                image=str(raw.get("nsm", {}).get("image", "shardkeep-enclave")),
                max_request_validity_seconds=int(raw.get("max_request_validity_seconds", 600)),
            )
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"invalid enclave configuration {path}: {e}") from e
        if config.nsm_mode not in ("simulated", "nitro"):
            raise ConfigError("nsm.mode must be 'simulated' or 'nitro'")
        if config.nsm_mode == "simulated" and config.pki_dir is None:
            raise ConfigError("a simulated NSM needs nsm.pki_dir")
        return config
