"""Write a development deployment: simulated Nitro PKI, KMS key policy, enclave configuration.

``python -m enclave.devsetup DIR`` prepares what ``make run`` and the
end-to-end tests start the system with, off Nitro:

- ``pki/root.key``, ``pki/root.pem``: the simulated attestation root (plays AWS's PKI);
- ``kms-policy.json``: devkms releases the sealing key only to documents chaining
  to that root with the image's PCR0-2 (as a real key policy would);
- ``coordinator.key``: the relay coordinator's Ed25519 key (0600);
- ``enclave.json``: the enclave configuration pinning the coordinator's public key;
- ``relay-admission.json``: the relay's admission policy pinning the same key
  (``relay.admission``): only the coordinator creates rooms.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from enclave.nsm import SimulatedNitroPki, image_pcrs

IMAGE = "shardkeep-enclave:dev"
SEAL_KEY_ID = "d0e1c2b3-0000-4000-8000-5ea1ed5ea1ed"
DEV_ACCESS_KEY_ID = "shardkeep-dev"
DEV_SECRET_ACCESS_KEY = "shardkeep-dev-not-a-secret"


def write(directory: Path, *, listen: str, kms_endpoint: str = "http://127.0.0.1:0") -> Path:
    """Write every file into ``directory``; return the enclave configuration's path."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = SimulatedNitroPki.generate()
    pki.save(directory / "pki")
    conditions = {f"kms:RecipientAttestation:PCR{i}": v.hex() for i, v in image_pcrs(IMAGE).items()}
    policy = {
        "attestation_root_file": "pki/root.pem",
        "keys": {SEAL_KEY_ID: {"description": "server-share sealing", "conditions": conditions}},
    }
    (directory / "kms-policy.json").write_text(json.dumps(policy, indent=2))
    coordinator = Ed25519PrivateKey.generate()
    coordinator_hex = coordinator.public_key().public_bytes_raw().hex()
    fd = os.open(directory / "coordinator.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(coordinator.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    config = {
        "listen": listen,
        "coordinator_keys": [coordinator_hex],
        # devkms checks that requests are SigV4-signed, not by whom. Fixed
        # development credentials keep the dev stack self-contained (a host
        # started with --kms-credentials replaces them); a Nitro image has none.
        "kms": {
            "endpoint": kms_endpoint,
            "key_id": SEAL_KEY_ID,
            "access_key_id": DEV_ACCESS_KEY_ID,
            "secret_access_key": DEV_SECRET_ACCESS_KEY,
        },
        "nsm": {"mode": "simulated", "pki_dir": str(directory / "pki"), "image": IMAGE},
    }
    path = directory / "enclave.json"
    path.write_text(json.dumps(config, indent=2))
    admission = {
        "max_rooms": 10_000,
        "max_bytes": 4 << 30,
        "coordinators": [{"name": "dev", "public_key": coordinator_hex}],
    }
    (directory / "relay-admission.json").write_text(json.dumps(admission, indent=2))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m enclave.devsetup", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--listen", required=True, help="the enclave's gRPC address, unix:/path")
    args = parser.parse_args(argv)
    print(write(args.directory, listen=args.listen))


if __name__ == "__main__":
    main()
