"""Every SDK failure is a ``WalletError`` with a stable ``error_code``.

The fault: transport, attestation, storage and input errors, and the errors of
the layers below (the protocol core, the relay client, gRPC), reached SDK
callers as unrelated types, so one ``except WalletError`` missed most
failures. Now each SDK error class derives from ``WalletError`` and names its
own documented code, every public SDK function translates what it raises, and
the original error stays the cause.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import re
import socket
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import client
from client.errors import (
    CeremonyFailed,
    InternalSdkError,
    InvalidEncoding,
    InvalidInput,
    WalletError,
    sdk_boundary,
)
from client.sdk.attestation import AttestationError, verify
from client.sdk.party import PartyIdentity
from client.sdk.transport import ServerUnreachable
from client.sdk.wallet import WalletClient
from client.storage.errors import DecryptionError
from client.storage.shares import (
    decrypt_share,
    encrypt_share,
    insecure_test_params,
    read_share_file,
)
from relay.errors import BackendUnavailableError, QuotaExceededError
from tests.stack_harness import RawDigestWalletClient
from tss.errors import FaultyParticipantError, InputError, InvalidEncodingError
from tss.keyshare import KeyShare
from tss.local import keygen

ROOT = Path(__file__).resolve().parents[1]
# The SDK: everything under client/ but the command line (its own errors are
# usage errors it prints and maps to exit statuses).
SDK_PACKAGES = ("client.sdk", "client.storage", "client.chains")


def sdk_modules() -> list[ModuleType]:
    modules = [importlib.import_module("client.errors")]
    for package in SDK_PACKAGES:
        path = [str(ROOT / Path(*package.split(".")))]
        for info in pkgutil.iter_modules(path):
            modules.append(importlib.import_module(f"{package}.{info.name}"))
    return modules


def sdk_error_classes() -> list[type[BaseException]]:
    return sorted(
        {
            member
            for module in sdk_modules()
            for member in vars(module).values()
            if inspect.isclass(member)
            and issubclass(member, BaseException)
            and member.__module__.startswith("client.")
        },
        key=lambda c: c.__qualname__,
    )


def test_every_sdk_error_is_a_wallet_error_with_its_own_documented_code() -> None:
    classes = sdk_error_classes()
    assert len(classes) >= 20  # the module walk found them
    codes: dict[str, str] = {}
    operations = (ROOT / "docs" / "operations.md").read_text()
    for cls in classes:
        assert issubclass(cls, WalletError), f"{cls.__qualname__} is not a WalletError"
        code = vars(cls).get("error_code")
        assert isinstance(code, str), f"{cls.__qualname__} names no error_code of its own"
        assert re.fullmatch(r"[a-z][a-z_]*", code), code
        assert code not in codes, f"{cls.__qualname__} repeats {codes.get(code)}'s code"
        codes[code] = cls.__qualname__
        assert f"`{code}`" in operations, f"docs/operations.md does not list {code}"


def test_every_public_sdk_function_is_behind_the_boundary() -> None:
    unguarded = []
    for module in sdk_modules():
        if module.__name__ == "client.errors":
            continue
        for name in getattr(module, "__all__", []):
            member = getattr(module, name)
            if inspect.isfunction(member):
                if not getattr(member, "__sdk_boundary__", False):
                    unguarded.append(f"{module.__name__}.{name}")
            elif inspect.isclass(member) and not issubclass(member, BaseException):
                if member.__module__ != module.__name__ or getattr(member, "_is_protocol", False):
                    continue  # imported, or implemented by the caller (a KeyStore)
                for attr, value in vars(member).items():
                    function = getattr(value, "__func__", value)
                    if attr.startswith("_") or not inspect.isfunction(function):
                        continue
                    if not getattr(function, "__sdk_boundary__", False):
                        unguarded.append(f"{module.__name__}.{name}.{attr}")
    assert unguarded == []
    # The clients are public without an __all__ entry in every module.
    for cls in (WalletClient,):
        assert getattr(cls.sign, "__sdk_boundary__", False)


@sdk_boundary
def raises(error: Exception) -> None:
    raise error


@sdk_boundary
async def raises_async(error: Exception) -> None:
    await asyncio.sleep(0)
    raise error


@pytest.mark.parametrize(
    ("error", "expected", "code", "status"),
    [
        (InputError("bad"), InvalidInput, "invalid_input", None),
        (InvalidEncodingError("bad bytes"), InvalidEncoding, "invalid_encoding", None),
        (ValueError("bad PEM"), InvalidInput, "invalid_input", None),
        (FaultyParticipantError(1, "forged"), CeremonyFailed, "ceremony_failed", None),
        (
            BackendUnavailableError("relay backend unavailable"),
            CeremonyFailed,
            "ceremony_failed",
            grpc.StatusCode.UNAVAILABLE,
        ),
        (
            QuotaExceededError("coordinator 'x' room quota 1 reached"),
            CeremonyFailed,
            "ceremony_failed",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        (TimeoutError(), CeremonyFailed, "ceremony_failed", grpc.StatusCode.DEADLINE_EXCEEDED),
        (KeyError("a bug"), InternalSdkError, "internal", None),
    ],
)
def test_lower_layer_errors_are_translated_at_the_boundary(
    error: Exception, expected: type[WalletError], code: str, status: grpc.StatusCode | None
) -> None:
    for call in (lambda: raises(error), lambda: asyncio.run(raises_async(error))):
        with pytest.raises(expected) as caught:
            call()
        assert caught.value.error_code == code
        assert caught.value.code == status
        assert caught.value.__cause__ is error
    if isinstance(error, InputError):  # callers catching the core's type still do
        with pytest.raises(type(error)):
            raises(error)


def test_sdk_errors_and_the_callers_files_pass_the_boundary_unchanged(tmp_path: Path) -> None:
    own = DecryptionError()
    with pytest.raises(DecryptionError) as caught:
        raises(own)
    assert caught.value is own
    # A missing share file stays FileNotFoundError, as open() reports it.
    with pytest.raises(FileNotFoundError):
        read_share_file(tmp_path / "missing.share", passcode="pw")


def test_a_wrong_passcode_is_a_wallet_error() -> None:
    share: KeyShare = keygen("bip340", threshold=2, parties=2)[0]
    weak = insecure_test_params()
    container = encrypt_share(
        share, "right passcode", wallet_id="wallet-1", params=weak, insecure_allow_weak_kdf=True
    )
    with pytest.raises(WalletError) as caught:
        decrypt_share(container, "wrong passcode", insecure_allow_weak_kdf=True)
    assert isinstance(caught.value, DecryptionError)
    assert caught.value.error_code == "decryption_failed"


def test_an_invalid_attestation_document_is_a_wallet_error() -> None:
    with pytest.raises(WalletError) as caught:
        verify(b"\x84not a COSE_Sign1 document")
    assert isinstance(caught.value, AttestationError)
    assert caught.value.error_code == "attestation"
    assert caught.value.reason == "malformed"


def test_an_unreachable_host_and_a_bad_argument_are_wallet_errors() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]

    async def body() -> None:
        address = f"127.0.0.1:{port}"
        async with RawDigestWalletClient(
            address, address, Ed25519PrivateKey.generate(), timeout=5.0
        ) as wallets:
            phone = PartyIdentity.generate()
            with pytest.raises(WalletError) as caught:
                await wallets.create_wallet("bip340", [phone], threshold=1)
            assert isinstance(caught.value, InvalidInput)
            assert isinstance(caught.value, InputError)  # still what it was
            with pytest.raises(WalletError) as caught:
                await wallets.create_wallet("bip340", [phone], threshold=2)
            assert isinstance(caught.value, ServerUnreachable)
            assert caught.value.error_code == "unreachable"
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE

    asyncio.run(asyncio.wait_for(body(), 60))


def test_the_client_package_is_the_sdk() -> None:
    # The walk above covers every SDK package client/ holds.
    packages = {
        f"client.{info.name}" for info in pkgutil.iter_modules(client.__path__) if info.ispkg
    }
    assert packages == {*SDK_PACKAGES, "client.cli"}
