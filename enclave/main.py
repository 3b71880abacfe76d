"""``shardkeep-enclave``: the enclave process (the server share's only home)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from enclave.auth import Authorizer, Policy
from enclave.config import EnclaveConfig
from enclave.entropy import mixed_random
from enclave.kms import EnclaveKmsClient
from enclave.nsm import Nsm, SimulatedNitroPki, SimulatedNsm
from enclave.nsm_device import DeviceNsm, NsmUnavailable
from enclave.seal import ShareSealer
from enclave.service import EnclaveDeps, create_server
from shardkeep import eventloop, logs
from shardkeep.server import serve_until_signalled


def open_nsm(config: EnclaveConfig) -> Nsm:
    """The NSM the configuration names: ``/dev/nsm`` ("nitro") or the simulator.

    Raises:
        SystemExit: "nitro" outside an enclave (no /dev/nsm).
    """
    if config.nsm_mode == "nitro":
        try:
            return DeviceNsm.open()
        except NsmUnavailable as e:
            raise SystemExit(f"shardkeep-enclave: {e}") from e
    if config.pki_dir is None:  # EnclaveConfig.load refuses this; a hand-built config may not
        raise SystemExit("shardkeep-enclave: a simulated NSM needs nsm.pki_dir")
    return SimulatedNsm(config.image, pki=SimulatedNitroPki.load(config.pki_dir))


def build_deps(config: EnclaveConfig) -> EnclaveDeps:
    """Wire the NSM, KMS client, sealer, authoriser and randomness the configuration names."""
    nsm = open_nsm(config)
    # Without fixed (development) credentials, KMS calls wait for the host's
    # (Enclave.SetCredentials): on Nitro, the instance role's, at run time.
    kms = EnclaveKmsClient.connect(
        endpoint_url=config.kms.endpoint,
        region=config.kms.region,
        credentials=config.kms.credentials,
        nsm=nsm,
    )
    sealer = ShareSealer(kms, config.kms.key_id, decrypt_key_ids=config.kms.decrypt_key_ids)
    policy = Policy(config.coordinator_keys, config.max_request_validity_seconds)
    rand = mixed_random(nsm)
    return EnclaveDeps(
        nsm, sealer, Authorizer(policy, rand), rand=rand, kms=kms,
        record_cache_size=config.record_cache_size,
        organisation=config.organisation(),
    )  # fmt: skip


async def serve(config: EnclaveConfig) -> None:
    deps = await asyncio.to_thread(build_deps, config)
    running = await create_server(config.listen, deps)
    print(f"shardkeep-enclave listening on {config.listen}", flush=True)
    await serve_until_signalled(running.server, running.health)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shardkeep-enclave", description=__doc__)
    parser.add_argument(
        "--config", type=Path, required=True, help="the enclave's JSON configuration"
    )
    parser.add_argument("--listen", help="override the configuration's listen address")
    parser.add_argument("--kms-endpoint", help="override the configuration's KMS endpoint (dev)")
    parser.add_argument(
        "--log-level", default="INFO", help="INFO: one line per ceremony; DEBUG: every step"
    )
    args = parser.parse_args(argv)
    config = EnclaveConfig.load(args.config)
    if args.listen:
        config = replace(config, listen=args.listen)
    if args.kms_endpoint:
        config = replace(config, kms=replace(config.kms, endpoint=args.kms_endpoint))
    logs.configure("enclave", level=logging.getLevelName(args.log_level.upper()))
    eventloop.run(serve(config))


if __name__ == "__main__":
    main()
