"""The host's AWS credentials for the enclave (host/credentials.py, host/enclave_link.py).

- The IMDSv2 client against a fake metadata server on 127.0.0.1: session token
  first, role discovery, the credentials document, token renewal on 401.
- The environment and file sources, and ``--kms-credentials`` parsing.
- The refresh policy (``CredentialKeeper``) on a fake clock.
- ``EnclaveLink`` hands the (fake) enclave credentials before Provision, again
  when they expire or the enclave restarted, and never logs them.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog

from host.credentials import (
    AwsCredentials,
    CredentialKeeper,
    CredentialsError,
    EnvironmentCredentials,
    FileCredentials,
    ImdsCredentials,
    parse_expiration,
    source_from_spec,
)
from host.enclave_link import EnclaveLink, LinkConfig
from host.errors import HostError
from host.main import main as host_main
from host.stores import open_store
from shardkeep import logs
from shardkeep.v1 import enclave_pb2
from tests.fake_enclave import STATIC_KEY, FakeEnclave, start_fake_enclave

SECRET = "CANARY-imds-secret-9f8e7d"
TOKEN = "CANARY-imds-session-token-1a2b3c"
ROLE = "shardkeep-host"
EXPIRATION = "2030-01-02T03:04:05Z"


### A fake instance metadata service (IMDSv2 only)


@dataclass
class Imds:
    """State of the fake: what it answers and what it saw."""

    role: str | None = ROLE
    code: str = "Success"
    tokens_issued: int = 0
    expire_tokens: bool = False  # answer 401 to the current token once
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    current_token: str = ""

    def document(self) -> dict[str, str]:
        return {
            "Code": self.code,
            "LastUpdated": "2030-01-01T21:00:00Z",
            "Type": "AWS-HMAC",
            "AccessKeyId": "ASIAIMDSTEST",
            "SecretAccessKey": SECRET,
            "Token": TOKEN,
            "Expiration": EXPIRATION,
        }


def handler_for(state: Imds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            state.requests.append(
                ("PUT", self.path, {k.lower(): v for k, v in self.headers.items()})
            )
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            if self.path != "/latest/api/token" or ttl is None or not 1 <= int(ttl) <= 21600:
                self.reply(400)
                return
            state.tokens_issued += 1
            state.current_token = f"session-{state.tokens_issued}"
            self.reply(200, state.current_token.encode())

        def do_GET(self) -> None:
            state.requests.append(
                ("GET", self.path, {k.lower(): v for k, v in self.headers.items()})
            )
            token = self.headers.get("X-aws-ec2-metadata-token")
            if token != state.current_token or not token:
                self.reply(401)  # IMDSv2 required: no v1 answers
                return
            if state.expire_tokens:
                state.expire_tokens = False
                state.current_token = ""
                self.reply(401)
                return
            base = "/latest/meta-data/iam/security-credentials/"
            if self.path == base:
                self.reply(200, (state.role or "").encode())
            elif state.role is not None and self.path == base + state.role:
                self.reply(200, json.dumps(state.document()).encode())
            else:
                self.reply(404)

    return Handler


@pytest.fixture
def imds() -> Iterator[tuple[Imds, str]]:
    state = Imds()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_imds_fetches_the_role_credentials_with_a_session_token(imds: tuple[Imds, str]) -> None:
    state, url = imds
    source = ImdsCredentials(url)
    credentials = source.fetch()
    assert credentials.access_key_id == "ASIAIMDSTEST"
    assert credentials.secret_access_key == SECRET
    assert credentials.session_token == TOKEN
    assert credentials.expires_at == parse_expiration(EXPIRATION)
    methods = [(method, path) for method, path, _ in state.requests]
    assert methods == [
        ("PUT", "/latest/api/token"),
        ("GET", "/latest/meta-data/iam/security-credentials/"),
        ("GET", f"/latest/meta-data/iam/security-credentials/{ROLE}"),
    ]
    assert state.requests[0][2]["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    # The session token is reused until it lapses.
    source.fetch()
    assert state.tokens_issued == 1
    assert SECRET not in repr(credentials) and TOKEN not in repr(credentials)


def test_imds_renews_a_rejected_session_token_once(imds: tuple[Imds, str]) -> None:
    state, url = imds
    source = ImdsCredentials(url, role=ROLE)
    source.fetch()
    state.expire_tokens = True
    assert source.fetch().session_token == TOKEN
    assert state.tokens_issued == 2


def test_imds_renews_its_session_token_before_it_lapses(imds: tuple[Imds, str]) -> None:
    state, url = imds
    now = [1000.0]
    source = ImdsCredentials(url, role=ROLE, clock=lambda: now[0])
    source.fetch()
    now[0] += 21600 - 30  # inside the slack before the 6 h TTL
    source.fetch()
    assert state.tokens_issued == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"role": None}, "no IAM role"),
        ({"code": "AssumeRoleUnauthorizedAccess"}, "not 'Success'"),
    ],
    ids=["no-instance-profile", "role-not-assumable"],
)
def test_imds_errors(imds: tuple[Imds, str], change: dict[str, Any], message: str) -> None:
    state, url = imds
    for name, value in change.items():
        setattr(state, name, value)
    with pytest.raises(CredentialsError, match=message) as info:
        ImdsCredentials(url).fetch()
    assert SECRET not in str(info.value) and TOKEN not in str(info.value)


def test_imds_unreachable_is_a_credentials_error() -> None:
    with pytest.raises(CredentialsError, match="unreachable"):
        ImdsCredentials("http://127.0.0.1:9", timeout_s=0.5).fetch()
    with pytest.raises(CredentialsError, match="http://"):
        ImdsCredentials("https://169.254.169.254")


### Environment, file, spec


def test_environment_source() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AKIDENV",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "AWS_CREDENTIAL_EXPIRATION": EXPIRATION,
    }
    credentials = EnvironmentCredentials(env).fetch()
    assert credentials == AwsCredentials("AKIDENV", SECRET, TOKEN, parse_expiration(EXPIRATION))
    long_term = EnvironmentCredentials({"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S"})
    assert long_term.fetch() == AwsCredentials("A", "S")
    with pytest.raises(CredentialsError, match="AWS_SECRET_ACCESS_KEY is missing"):
        EnvironmentCredentials({"AWS_ACCESS_KEY_ID": "A"}).fetch()


def test_file_source_reads_the_credential_process_shape_at_every_fetch(tmp_path: Path) -> None:
    path = tmp_path / "aws-credentials.json"
    source = FileCredentials(path)
    with pytest.raises(CredentialsError, match="cannot read"):
        source.fetch()
    path.write_text(
        json.dumps(
            {
                "Version": 1,
                "AccessKeyId": "AKIDFILE",
                "SecretAccessKey": SECRET,
                "SessionToken": TOKEN,
                "Expiration": EXPIRATION,
            }
        )
    )
    assert source.fetch().expires_at == parse_expiration(EXPIRATION)
    path.write_text(json.dumps({"Version": 1, "AccessKeyId": "AKID2", "SecretAccessKey": "s2"}))
    assert source.fetch() == AwsCredentials("AKID2", "s2")  # an outside rotation applies
    for bad, message in (
        (f'{{"SecretAccessKey": "{SECRET}"', "not JSON"),
        (json.dumps({"Version": 2}), "Version 1"),
        (json.dumps({"AccessKeyId": "A", "SecretAccessKey": SECRET, "Expiration": "x"}), "ISO"),
    ):
        path.write_text(bad)
        with pytest.raises(CredentialsError, match=message) as info:
            source.fetch()
        assert SECRET not in str(info.value)
        assert info.value.__cause__ is None or SECRET not in str(info.value.__cause__)


def test_expiration_needs_a_time_zone() -> None:
    assert parse_expiration("1970-01-01T00:01:00Z") == 60.0
    assert parse_expiration("1970-01-01T01:01:00+01:00") == 60.0
    with pytest.raises(CredentialsError, match="time zone"):
        parse_expiration("1970-01-01T00:01:00")


def test_source_from_spec(tmp_path: Path) -> None:
    assert source_from_spec("none") is None
    assert isinstance(source_from_spec("env"), EnvironmentCredentials)
    assert isinstance(source_from_spec(f"file:{tmp_path}/c.json"), FileCredentials)
    assert isinstance(source_from_spec("imds"), ImdsCredentials)
    assert isinstance(source_from_spec("imds:http://127.0.0.1:8080"), ImdsCredentials)
    for bad in ("file:", "vault", "imds:ftp://x", ""):
        with pytest.raises(CredentialsError):
            source_from_spec(bad)


def test_host_command_line_checks_the_source(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--enclave", "unix:/nonexistent", "--relay", "x:1", "--store", "sqlite:///x"]
    with pytest.raises(SystemExit):
        host_main([*base, "--kms-credentials", "vault"])
    assert "--kms-credentials" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        host_main(["--help"])
    assert "--kms-credentials" in capsys.readouterr().out


### The refresh policy


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


class Fixed:
    kind = "test"

    def __init__(self, credentials: AwsCredentials) -> None:
        self.credentials = credentials
        self.fetches = 0
        self.error: CredentialsError | None = None

    def fetch(self) -> AwsCredentials:
        self.fetches += 1
        if self.error is not None:
            raise self.error
        return self.credentials


def test_keeper_refreshes_before_expiry_and_rechecks_long_term_credentials() -> None:
    clock = Clock()
    expiring = AwsCredentials("A", SECRET, TOKEN, clock.now + 3600)
    keeper = CredentialKeeper(
        Fixed(expiring), margin_s=900, recheck_s=600, min_interval_s=30, clock=clock
    )
    assert keeper.due()
    keeper.delivered(expiring)
    assert not keeper.due()
    clock.now += 3600 - 901
    assert not keeper.due()
    clock.now += 2  # inside the margin
    assert keeper.due()
    keeper.delivered(expiring)  # IMDS has not rotated yet: same expiry
    assert not keeper.due(), "at most every min_interval_s inside the margin"
    clock.now += 30
    assert keeper.due()
    clock.now = expiring.expires_at or 0
    keeper.delivered(expiring)
    assert keeper.due(), "expired: always due"
    keeper.forget()
    assert keeper.due() and keeper.expires_at is None

    long_term = AwsCredentials("A", SECRET)
    keeper = CredentialKeeper(Fixed(long_term), recheck_s=600, clock=clock)
    keeper.delivered(long_term)
    clock.now += 599
    assert not keeper.due()
    clock.now += 1
    assert keeper.due()


### The link hands them to the enclave


class CredentialFake(FakeEnclave):
    """The fake enclave, recording SetCredentials; ``restart()`` forgets identity and keys."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.credentials: list[enclave_pb2.SetCredentialsRequest] = []
        self.provisioned_now = False

    def restart(self) -> None:
        self.provisioned_now = False

    async def SetCredentials(
        self,
        request: enclave_pb2.SetCredentialsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> enclave_pb2.SetCredentialsResponse:
        self.events.append("SetCredentials")
        self.credentials.append(request)
        return enclave_pb2.SetCredentialsResponse()

    async def Provision(
        self, request: enclave_pb2.ProvisionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> enclave_pb2.ProvisionResponse:
        self.events.append("Provision")
        self.provisioned_now = True
        return await super().Provision(request, context)

    async def GetStatus(
        self, request: enclave_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> enclave_pb2.GetStatusResponse:
        key = STATIC_KEY if self.provisioned_now else b""
        return enclave_pb2.GetStatusResponse(version="fake", static_key=key)


def test_link_hands_credentials_before_provision_and_on_expiry_or_restart(
    tmp_path: Path,
) -> None:
    fresh = AwsCredentials("ASIAFRESH", SECRET, TOKEN, time.time() + 6 * 3600)
    source = Fixed(fresh)
    out = io.StringIO()
    logs.configure("host", stream=out)

    async def body() -> None:
        fake = CredentialFake()
        server, target = await start_fake_enclave(fake)
        store = open_store(f"sqlite:///{tmp_path / 'host.db'}")
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                link = EnclaveLink(channel, LinkConfig(kms_credentials=source))
                await link.provision(store)
                assert fake.events == ["SetCredentials", "Provision"]
                (sent,) = fake.credentials
                assert (sent.access_key_id, sent.secret_access_key, sent.session_token) == (
                    "ASIAFRESH",
                    SECRET,
                    TOKEN,
                )
                assert sent.expires_at_unix == math.ceil(fresh.expires_at or 0)
                # Fresh credentials: nothing more to hand over.
                await link.ensure_provisioned(store)
                assert fake.events == ["SetCredentials", "Provision"]
                # The enclave restarted: credentials again, then Provision.
                fake.restart()
                await link.ensure_provisioned(store)
                assert fake.events[2:] == ["SetCredentials", "Provision"]
                # Expiring credentials are replaced before each call.
                source.credentials = AwsCredentials("ASIAOLD", SECRET, TOKEN, time.time() - 1)
                await link.refresh_credentials(timeout_s=5, force=True)
                await link.ensure_provisioned(store)
                assert fake.events[4:] == ["SetCredentials", "SetCredentials"]
                # No credentials to be had: UNAVAILABLE, naming the source only.
                source.error = CredentialsError("IMDS GET /x: HTTP 500")
                with pytest.raises(HostError) as info:
                    await link.ensure_provisioned(store)
                assert info.value.code == grpc.StatusCode.UNAVAILABLE
                assert "(test)" in info.value.message and SECRET not in info.value.message
        finally:
            store.close()
            await server.stop(None)

    try:
        asyncio.run(body())
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "kms credentials handed to the enclave" in text
    assert "kms credentials unavailable" in text
    for secret in (SECRET, TOKEN, "ASIAFRESH"):
        assert secret not in text


def test_link_without_a_source_hands_over_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        fake = CredentialFake()
        server, target = await start_fake_enclave(fake)
        store = open_store(f"sqlite:///{tmp_path / 'host.db'}")
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                link = EnclaveLink(channel)
                await link.provision(store)
                assert not await link.refresh_credentials(timeout_s=1, force=True)
                assert fake.events == ["Provision"]
        finally:
            store.close()
            await server.stop(None)

    asyncio.run(body())
