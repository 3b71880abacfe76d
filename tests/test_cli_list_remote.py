"""`shardkeep wallet list --remote` against a deployment-shaped stack (TLS, mutual TLS, API token).

The host's wallets are listed page by page, each marked whether this machine
holds a party of it (a damaged local wallet stays marked damaged, and listed as
such locally); a caller without the host's API token is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.cli.connection import CONFIG_ENV, SETTINGS
from client.cli.devstack import DevStack
from client.cli.main import main
from client.cli.state import wallet_dir
from tests.cli_harness import shardkeep
from tests.stack_harness import background_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("list-stack"), tls=True) as running:
        yield running


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*(v for v, _ in SETTINGS.values()), CONFIG_ENV, "SHARDKEEP_API_TOKEN"]:
        monkeypatch.delenv(name, raising=False)
    for name in ("STATE", "PASSCODE"):
        monkeypatch.delenv(f"SHARDKEEP_{name}", raising=False)


def connection(stack: DevStack, token_file: Path | None = None) -> list[str]:
    assert stack.tls is not None
    return [
        "--host", stack.host_address, "--relay", stack.relay_address,
        "--coordinator-key", str(stack.directory / "coordinator.key"),
        "--root", str(stack.directory / "pki" / "root.pem"),
        "--server-ca", str(stack.tls.ca),
        "--client-cert", str(stack.tls.client_certificate),
        "--client-key", str(stack.tls.client_key),
        "--api-token-file", str(token_file or stack.directory / "api-token"),
    ]  # fmt: skip


def test_list_remote_marks_held_damaged_and_absent_wallets(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passcode = tmp_path / "passcode"
    passcode.write_text("listing the host's wallets\n")
    local = ["--passcode-file", str(passcode), "--insecure-weak-kdf", "--json"]
    desk, laptop = tmp_path / "desk", tmp_path / "laptop"

    def create(state: Path) -> str:
        status, wallet, err = shardkeep(
            capsys, "wallet", "create", "--scheme", "bip340",
            *connection(stack), "--state", str(state), *local,
        )  # fmt: skip
        assert status == 0, err
        return str(wallet["wallet_id"])

    held, broken, elsewhere = create(desk), create(desk), create(laptop)
    next(wallet_dir(desk, broken).rglob("party-0.share")).unlink()

    status, listed, err = shardkeep(
        capsys, "wallet", "list", "--remote", *connection(stack), "--state", str(desk), "--json"
    )
    assert status == 0, err
    assert [w["wallet_id"] for w in listed["wallets"]] == [held]
    assert [d["wallet_id"] for d in listed["damaged"]] == [broken]  # still shown locally
    remote = {w["wallet_id"]: w for w in listed["remote"]}
    assert {held, broken, elsewhere} <= set(remote)  # other tests' wallets may be there too
    assert [remote[w]["local"] for w in (held, broken, elsewhere)] == ["held", "damaged", "none"]
    assert list(remote) == sorted(remote)  # the host's wallet-id order, across pages
    mine = listed["wallets"][0]
    for key in ("scheme", "threshold", "parties", "public_key", "epoch"):
        assert remote[held][key] == mine[key]

    # Plain output: one line per kind, the host's wallets marked.
    status = main(["wallet", "list", "--remote", *connection(stack), "--state", str(desk)])
    out = capsys.readouterr().out
    assert status == 0
    assert f"{broken} (here: damaged)" in out and f"{elsewhere} (here: none)" in out


def test_list_remote_without_the_api_token_is_refused(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "token"
    wrong.write_text("not-the-token\n")
    status, listed, err = shardkeep(
        capsys, "wallet", "list", "--remote", *connection(stack, wrong),
        "--state", str(tmp_path), "--json",
    )  # fmt: skip
    assert status == 1
    assert listed is None
    assert "missing or bad API token" in err, err


def test_list_remote_needs_a_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = shardkeep(capsys, "wallet", "list", "--remote", "--state", str(tmp_path))
    assert status == 2 and "--host" in err
