"""client.sdk.transport and shardkeep.tls: settings, token safety, retries, CLI settings."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from client.cli.connection import add_transport_options, resolve_connection, transport_from_args
from client.cli.devtls import write_dev_tls
from client.sdk.transport import Transport
from shardkeep.tls import (
    IDEMPOTENT_METHODS,
    TlsSettingsError,
    add_server_tls_arguments,
    is_local_address,
    open_channel,
    server_tls_from_args,
    service_config,
)
from shardkeep.v1 import ceremony_pb2, host_pb2, host_pb2_grpc
from tss.errors import InputError

### Settings


def test_settings_read_the_pem_files(tmp_path: Path) -> None:
    files = write_dev_tls(tmp_path)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    transport = Transport.from_files(
        server_ca=files.ca,
        client_cert=files.client_certificate,
        client_key=files.client_key,
        api_token_file=token,
    )
    assert transport.tls is not None
    assert transport.tls.server_ca == files.ca.read_bytes()
    assert transport.tls.certificate_chain == files.client_certificate.read_bytes()
    assert transport.api_token == "s3cret"
    assert "s3cret" not in repr(transport) and "PRIVATE KEY" not in repr(transport)


@pytest.mark.parametrize(
    ("settings", "fault"),
    [
        ({"client_cert": Path("c.pem")}, "--client-cert and --client-key go together"),
        ({"server_name": "example"}, "--server-name needs TLS"),
        ({"api_token": "a", "api_token_file": Path("t")}, "not both"),
        ({"api_token": ""}, "the API token is empty"),
        ({"server_ca": Path("/nonexistent/ca.pem")}, "cannot read the server CA /nonexistent"),
    ],
)
def test_bad_settings_are_named(settings: dict[str, Any], fault: str) -> None:
    with pytest.raises(InputError, match=fault):
        Transport.from_files(**settings)


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("unix:/run/x.sock", True),
        ("127.0.0.1:7500", True),
        ("localhost:7500", True),
        ("[::1]:7500", True),
        ("wallets.example.com:7500", False),
        ("10.0.0.5:7500", False),
    ],
)
def test_local_addresses(address: str, local: bool) -> None:
    assert is_local_address(address) is local


def test_a_token_never_travels_in_plaintext_across_a_network() -> None:
    with pytest.raises(TlsSettingsError, match="needs TLS"):
        open_channel("wallets.example.com:7500", api_token="t")


def test_service_config_retries_only_idempotent_calls() -> None:
    config = json.loads(service_config())
    (method_config,) = config["methodConfig"]
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    assert ("shardkeep.v1.Host", "GetAttestation") in names
    for never in ("Sign", "Keygen", "Reshare", "Refresh", "Export", "PutBackup"):
        assert ("shardkeep.v1.Host", never) not in names
    assert ("shardkeep.v1.Relay", "CreateRoom") not in names
    assert names == {(s, m) for s, ms in IDEMPOTENT_METHODS.items() for m in ms}
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


### Retries against a flaky host


class FlakyHost(host_pb2_grpc.HostServicer):
    """Answers UNAVAILABLE to the first ``failures`` calls of every method."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}

    async def _count(self, name: str, context: Any) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "briefly down")

    async def GetAttestation(self, request: Any, context: Any) -> host_pb2.HostAttestationResponse:
        await self._count("GetAttestation", context)
        return host_pb2.HostAttestationResponse(document=b"doc")

    async def Sign(self, request: Any, context: Any) -> ceremony_pb2.CeremonyResult:
        await self._count("Sign", context)
        return ceremony_pb2.CeremonyResult()


async def call_flaky(failures: int) -> tuple[dict[str, int], bytes, grpc.StatusCode]:
    servicer = FlakyHost(failures)
    server = grpc.aio.server()
    host_pb2_grpc.add_HostServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with Transport().host_channel(f"127.0.0.1:{port}") as channel:
            stub = host_pb2_grpc.HostStub(channel)  # type: ignore[no-untyped-call]
            reply = await stub.GetAttestation(host_pb2.HostAttestationRequest(), timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Sign(host_pb2.HostCeremonyRequest(), timeout=30)
    finally:
        await server.stop(None)
    return servicer.calls, reply.document, info.value.code()


def test_idempotent_call_is_retried_on_unavailable_and_a_ceremony_is_not() -> None:
    calls, document, sign_status = asyncio.run(call_flaky(failures=2))
    assert document == b"doc"
    assert calls["GetAttestation"] == 3  # two UNAVAILABLE, then the answer
    assert calls["Sign"] == 1  # a ceremony is never sent twice by the transport
    assert sign_status == grpc.StatusCode.UNAVAILABLE


### CLI settings: flag, then environment, then the configuration file


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--relay")
    parser.add_argument("--coordinator-key", type=Path)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--state", type=Path)
    add_transport_options(parser)
    return parser.parse_args(argv)


def test_flag_beats_environment_beats_config_file(tmp_path: Path) -> None:
    files = write_dev_tls(tmp_path / "tls")
    (tmp_path / "token").write_text("from-file\n")
    config = tmp_path / "config.toml"
    config.write_text(
        'host = "config-host:1"\nrelay = "config-relay:2"\nserver_ca = "tls/ca.pem"\n'
        'client_cert = "tls/client.pem"\nclient_key = "tls/client.key"\n'
        'api_token_file = "token"\n'
    )
    args = parse(["--config", str(config), "--host", "flag-host:3"])
    environ = {"SHARDKEEP_RELAY": "env-relay:4"}
    resolve_connection(args, environ)
    assert (args.host, args.relay) == ("flag-host:3", "env-relay:4")
    assert args.server_ca == files.ca  # relative to the configuration file
    transport = transport_from_args(args, environ)
    assert transport.api_token == "from-file"
    assert transport.tls is not None and transport.tls.private_key == files.client_key.read_bytes()


def test_config_file_in_the_state_directory_and_token_from_environment(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('host = "h:1"\ntls = true\n')
    args = parse(["--state", str(tmp_path)])
    environ = {"SHARDKEEP_API_TOKEN": "env-token"}
    resolve_connection(args, environ)
    transport = transport_from_args(args, environ)
    assert args.host == "h:1"
    assert transport.tls is not None and transport.tls.server_ca is None  # system roots
    assert transport.api_token == "env-token"


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ('hots = "typo"\n', "unknown setting 'hots'"),
        ("host = \n", "is not TOML"),
        ("host = 7\n", "host in the configuration file must be a string"),
        ('tls = "maybe"\n', "tls must be true or false"),
    ],
)
def test_bad_config_file_is_named(tmp_path: Path, text: str, fault: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(InputError, match=fault):
        resolve_connection(parse(["--config", str(config)]), {})


### Server flags


def server_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_tls_arguments(parser)
    return parser.parse_args(list(argv))


def test_server_tls_flags(tmp_path: Path) -> None:
    files = write_dev_tls(tmp_path)
    assert server_tls_from_args(server_args()) is None
    tls = server_tls_from_args(
        server_args(
            "--tls-cert", str(files.server_certificate), "--tls-key", str(files.server_key),
            "--client-ca", str(files.ca),
        )
    )  # fmt: skip
    assert tls is not None and tls.client_ca == files.ca.read_bytes()
    assert "PRIVATE KEY" not in repr(tls)


@pytest.mark.parametrize(
    ("argv", "fault"),
    [
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (["--client-ca", "ca.pem"], "--client-ca needs --tls-cert"),
        (
            ["--tls-cert", "/nonexistent/c", "--tls-key", "k"],
            "cannot read --tls-cert /nonexistent/c",
        ),
    ],
)
def test_bad_server_tls_flags_are_named(argv: list[str], fault: str) -> None:
    with pytest.raises(TlsSettingsError, match=fault):
        server_tls_from_args(server_args(*argv))
