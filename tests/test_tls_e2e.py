"""A deployment-shaped stack: the relay and host serve TLS, the host mutual TLS and an API token.

The SDK reaches it through ``client.sdk.transport.Transport`` and signs; callers
without the right CA, client certificate or token are refused with typed
errors before any ceremony starts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from client.cli.connection import CONFIG_ENV, SETTINGS
from client.cli.devstack import DevStack
from client.cli.devtls import issue_ca
from client.cli.main import main
from client.sdk.party import PartyIdentity
from client.sdk.transport import (
    ApiTokenRejected,
    ClientCertificateRequired,
    ServerCertificateError,
    Transport,
    TransportError,
)
from client.sdk.wallet import WalletClient
from enclave import devsetup
from enclave.nsm import image_pcrs
from shardkeep.tls import ClientTls
from tests.stack_harness import RawDigestWalletClient, background_stack, run_with_client
from tss.curve import schnorr_verify
from tss.signing import RecoverableSignature

DIGEST = bytes(range(32))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("tls-stack"), tls=True) as running:
        yield running


def test_signature_over_tls_mutual_tls_and_token(stack: DevStack) -> None:
    for address in (stack.host_address, stack.relay_address):
        assert address.startswith("127.0.0.1:")
    assert stack.transport.tls is not None and stack.transport.api_token

    async def body(client: WalletClient) -> tuple[bytes, bytes | RecoverableSignature]:
        phone = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [phone], threshold=2)
        return wallet.public_key, await client.sign(wallet, DIGEST, {0: phone})

    public_key, signature = run_with_client(stack, body)
    assert isinstance(signature, bytes)
    assert schnorr_verify(DIGEST, public_key[1:], signature)


def attest_with(stack: DevStack, transport: Transport) -> TransportError:
    async def main() -> None:
        async with RawDigestWalletClient(
            stack.host_address,
            stack.relay_address,
            stack.coordinator_key,
            root_certificate=stack.root_certificate,
            transport=transport,
        ) as client:
            await asyncio.wait_for(client.attest(), 60)

    with pytest.raises(TransportError) as info:
        asyncio.run(main())
    return info.value


def test_server_with_a_certificate_from_another_ca_is_refused(
    stack: DevStack, tmp_path: Path
) -> None:
    """An impostor host (certificate from a CA the client does not trust) never sees a call."""
    assert stack.transport.tls is not None
    other_ca, _ = issue_ca("another CA")
    transport = replace(stack.transport, tls=replace(stack.transport.tls, server_ca=other_ca))
    error = attest_with(stack, transport)
    assert isinstance(error, ServerCertificateError)
    assert error.error_code == "server_certificate"
    assert "--server-ca" in str(error)


def test_caller_without_a_client_certificate_is_refused(stack: DevStack) -> None:
    """A caller that has the token but no client certificate is stopped at the TLS handshake."""
    assert stack.transport.tls is not None
    transport = replace(stack.transport, tls=ClientTls(server_ca=stack.transport.tls.server_ca))
    error = attest_with(stack, transport)
    assert isinstance(error, ClientCertificateRequired)
    assert "--client-cert" in str(error)


@pytest.mark.parametrize("token", [None, "not-the-token"], ids=["missing", "wrong"])
def test_caller_with_a_bad_api_token_is_refused(stack: DevStack, token: str | None) -> None:
    """A caller with a valid client certificate but a missing or wrong token is refused."""
    error = attest_with(stack, replace(stack.transport, api_token=token))
    assert isinstance(error, ApiTokenRejected)
    assert error.error_code == "api_token_rejected"


### The CLI against the same deployment


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*(v for v, _ in SETTINGS.values()), CONFIG_ENV, "SHARDKEEP_API_TOKEN"]:
        monkeypatch.delenv(name, raising=False)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def tls_flags(stack: DevStack) -> list[str]:
    assert stack.tls is not None
    return [
        "--server-ca", str(stack.tls.ca),
        "--client-cert", str(stack.tls.client_certificate),
        "--client-key", str(stack.tls.client_key),
        "--api-token-file", str(stack.directory / "api-token"),
    ]  # fmt: skip


@pytest.mark.usefixtures("no_environment")
def test_cli_fetches_the_document_that_verify_checks(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = tmp_path / "doc.cbor"
    status, out, err = cli(
        capsys, "attestation", "fetch", "--host", stack.host_address, "--out", str(document),
        "--state", str(tmp_path), "--json", *tls_flags(stack),
    )  # fmt: skip
    assert status == 0, err
    fetched = json.loads(out)
    assert fetched["bytes"] == len(document.read_bytes()) and len(fetched["nonce"]) == 64
    pcr0 = image_pcrs(devsetup.IMAGE)[0].hex()
    root = str(stack.directory / "pki" / "root.pem")
    status, out, err = cli(
        capsys, "attestation", "verify", str(document), "--root", root,
        "--nonce", fetched["nonce"], "--pcr", f"0={pcr0}",
    )  # fmt: skip
    assert status == 0, err
    assert "attestation document valid" in out
    status, _, err = cli(
        capsys, "attestation", "verify", str(document), "--root", root, "--nonce", "00" * 32
    )
    assert status == 1 and "nonce" in err  # the fetched document answers its own nonce only


@pytest.mark.usefixtures("no_environment")
def test_cli_takes_the_settings_from_the_environment(
    stack: DevStack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert stack.tls is not None
    monkeypatch.setenv("SHARDKEEP_HOST", stack.host_address)
    monkeypatch.setenv("SHARDKEEP_SERVER_CA", str(stack.tls.ca))
    monkeypatch.setenv("SHARDKEEP_CLIENT_CERT", str(stack.tls.client_certificate))
    monkeypatch.setenv("SHARDKEEP_CLIENT_KEY", str(stack.tls.client_key))
    monkeypatch.setenv("SHARDKEEP_API_TOKEN", (stack.directory / "api-token").read_text().strip())
    status, out, err = cli(
        capsys, "attestation", "fetch", "--out", str(tmp_path / "doc"), "--state", str(tmp_path)
    )
    assert status == 0, err
    assert out.startswith("wrote ") and "nonce: " in out


@pytest.mark.usefixtures("no_environment")
def test_cli_signs_with_the_settings_of_its_config_file(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stack.tls is not None
    state = tmp_path / "state"
    state.mkdir()
    (state / "config.toml").write_text(
        f'host = "{stack.host_address}"\nrelay = "{stack.relay_address}"\n'
        f'coordinator_key = "{stack.directory / "coordinator.key"}"\n'
        f'root = "{stack.directory / "pki" / "root.pem"}"\n'
        f'server_ca = "{stack.tls.ca}"\nclient_cert = "{stack.tls.client_certificate}"\n'
        f'client_key = "{stack.tls.client_key}"\n'
        f'api_token_file = "{stack.directory / "api-token"}"\n'
    )
    passcode = tmp_path / "passcode"
    passcode.write_text("a long passphrase for the CLI\n")
    local = [
        "--state",
        str(state),
        "--passcode-file",
        str(passcode),
        "--insecure-weak-kdf",
        "--json",
    ]
    status, out, err = cli(
        capsys, "wallet", "create", "--scheme", "bip340", "--allow-raw-digest", *local
    )
    assert status == 0, err
    created = json.loads(out)
    status, out, err = cli(
        capsys, "wallet", "sign", created["wallet_id"], "--digest", DIGEST.hex(), *local
    )
    assert status == 0, err
    signed = json.loads(out)
    xonly = bytes.fromhex(signed["xonly_public_key"])
    assert xonly == bytes.fromhex(created["public_key"])[1:]
    assert schnorr_verify(DIGEST, xonly, bytes.fromhex(signed["signature"]))


@pytest.mark.usefixtures("no_environment")
def test_cli_without_a_client_certificate_exits_naming_it(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stack.tls is not None
    status, _, err = cli(
        capsys, "attestation", "fetch", "--host", stack.host_address, "--out", str(tmp_path / "d"),
        "--state", str(tmp_path), "--server-ca", str(stack.tls.ca),
        "--api-token-file", str(stack.directory / "api-token"),
    )  # fmt: skip
    assert status == 1
    assert "requires a client certificate (--client-cert, --client-key)" in err
