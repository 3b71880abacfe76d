"""Client share storage (client/storage/shares.py): containers, files, armour, host backups."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from client.storage import shares as storage
from client.storage.errors import (
    ArmourError,
    DecryptionError,
    KdfParamsError,
    ShareFileExistsError,
    ShareFormatError,
    ShareMismatchError,
    UnsupportedVersionError,
)
from client.storage.shares import (
    DEFAULT_ARGON2_PARAMS,
    ENCRYPTED_FORMAT,
    MAX_CONTAINER_BYTES,
    PLAIN_FORMAT,
    Argon2Params,
    BackupBlob,
    armour,
    dearmour,
    decrypt_share,
    decrypt_with_key,
    encode_plain_share,
    encrypt_share,
    encrypt_with_key,
    insecure_test_params,
    inspect_share,
    make_backup,
    open_share,
    read_share_file,
    recover_share,
    write_share_file,
)
from tss import local
from tss.curve import ecdsa_verify, schnorr_verify
from tss.errors import InputError
from tss.keyshare import KeyShare

PASSCODE = "correct horse battery staple"
KEY = bytes(range(32))
WALLET = "wallet-7f3a"
DIGEST = hashlib.sha256(b"shardkeep storage test").digest()
WEAK: dict[str, Any] = {"params": insecure_test_params(), "insecure_allow_weak_kdf": True}
SCHEMES = ["bip340", "ecdsa-secp256k1"]


@pytest.fixture(scope="module")
def keyrings() -> dict[str, list[KeyShare]]:
    return {s: local.keygen(s, threshold=2, parties=2) for s in SCHEMES}


@pytest.fixture(params=SCHEMES)
def keyring(request: pytest.FixtureRequest, keyrings: dict[str, list[KeyShare]]) -> list[KeyShare]:
    return keyrings[request.param]


@pytest.fixture
def share(keyrings: dict[str, list[KeyShare]]) -> KeyShare:
    return keyrings["bip340"][0]


@pytest.fixture(scope="module")
def sealed(keyrings: dict[str, list[KeyShare]]) -> bytes:
    """A weak-parameter passcode container of ``share``, made before ``no_hashing`` applies."""
    return encrypted(keyrings["bip340"][0])


@pytest.fixture
def no_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if Argon2id runs at all."""

    def refuse(**_: Any) -> bytes:
        raise AssertionError("Argon2id ran")

    monkeypatch.setattr(storage, "hash_secret_raw", refuse)


def counter_random() -> Callable[[int], bytes]:
    """Deterministic bytes, for reproducible containers."""
    state = iter(range(1 << 20))
    return lambda n: bytes(next(state) % 256 for _ in range(n))


def encrypted(share: KeyShare, passcode: str = PASSCODE, **kw: Any) -> bytes:
    return encrypt_share(share, passcode, wallet_id=WALLET, **{**WEAK, **kw})


def fields_of(container: bytes) -> dict[str, Any]:
    value = cbor2.loads(container)
    assert isinstance(value, dict)
    return value


def edited(container: bytes, path: tuple[str, ...], value: Any) -> bytes:
    """The container re-encoded with one (nested) field set; a missing value deletes it."""
    fields = fields_of(container)
    node = fields
    for name in path[:-1]:
        node = node[name]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return cbor2.dumps(fields)


_DELETE = object()


def same_share(a: KeyShare, b: KeyShare) -> bool:
    # KeyShare equality leaves out the ECDSA setup; the serialisation has everything.
    return a.to_bytes() == b.to_bytes()


### Round trips


def test_passcode_round_trip(keyring: list[KeyShare]) -> None:
    for share in keyring:
        opened = decrypt_share(encrypted(share), PASSCODE, insecure_allow_weak_kdf=True)
        assert same_share(opened.share, share)
        assert opened.metadata == storage.ShareMetadata.of(share, WALLET)


def test_key_round_trip(keyring: list[KeyShare]) -> None:
    for share in keyring:
        container = encrypt_with_key(share, KEY, wallet_id=WALLET)
        assert same_share(decrypt_with_key(container, KEY).share, share)
        assert same_share(open_share(container, key=KEY).share, share)


def test_plain_round_trip(keyring: list[KeyShare]) -> None:
    for share in keyring:
        opened = open_share(encode_plain_share(share, wallet_id=WALLET))
        assert same_share(opened.share, share)
        assert opened.metadata.wallet_id == WALLET


def test_default_parameters_round_trip(share: KeyShare) -> None:
    container = encrypt_share(share, PASSCODE, wallet_id=WALLET)
    info = inspect_share(container)
    assert info.argon2 == DEFAULT_ARGON2_PARAMS == Argon2Params(3, 65536, 4)
    assert same_share(decrypt_share(container, PASSCODE).share, share)


def test_container_layout_is_self_describing(share: KeyShare) -> None:
    container = encrypted(share, random=counter_random())
    fields = fields_of(container)
    assert fields["format"] == ENCRYPTED_FORMAT and fields["version"] == 1
    assert fields["kdf"] == {
        "alg": "argon2id",
        "salt": bytes(range(16)),
        "time_cost": 1,
        "memory_cost_kib": 8,
        "parallelism": 1,
    }
    assert fields["cipher"] == {"alg": "aes-256-gcm", "nonce": bytes(range(16, 28))}
    assert fields["metadata"] == {
        "wallet_id": WALLET,
        "scheme": "bip340",
        "party_id": 0,
        "public_key": share.public_key,
        "epoch": 0,
    }
    assert len(fields["ciphertext"]) == len(share.to_bytes()) + 16
    # Randomness passed in makes the output reproducible; the default draws fresh salt and nonce.
    assert encrypted(share, random=counter_random()) == container
    assert encrypted(share) != encrypted(share)
    key_fields = fields_of(encrypt_with_key(share, KEY, wallet_id=WALLET, random=counter_random()))
    assert key_fields["kdf"] == {"alg": "hkdf-sha256", "salt": bytes(range(32))}


def test_inspect_reads_metadata_without_secrets(
    share: KeyShare, sealed: bytes, no_hashing: None
) -> None:
    info = inspect_share(armour(sealed))
    assert info.protection == "passcode"
    assert info.metadata == storage.ShareMetadata.of(share, WALLET)
    assert inspect_share(encrypt_with_key(share, KEY, wallet_id=WALLET)).protection == "key"
    assert inspect_share(encode_plain_share(share, wallet_id=WALLET)).protection == "plain"


### Passcodes, keys, randomness


def test_wrong_passcode_is_one_opaque_error(share: KeyShare, sealed: bytes) -> None:
    with pytest.raises(DecryptionError) as info:
        decrypt_share(sealed, "correct horse battery stapler", insecure_allow_weak_kdf=True)
    assert "stapler" not in str(info.value) and PASSCODE not in str(info.value)


def test_wrong_key_is_the_same_opaque_error(share: KeyShare) -> None:
    container = encrypt_with_key(share, KEY, wallet_id=WALLET)
    with pytest.raises(DecryptionError):
        decrypt_with_key(container, bytes(32))


def test_passcode_is_nfc_normalised(share: KeyShare) -> None:
    composed, decomposed = "caf\u00e9-p\u00e2sse", "cafe\u0301-pa\u0302sse"
    container = encrypted(share, composed)
    opened = decrypt_share(container, decomposed, insecure_allow_weak_kdf=True)
    assert same_share(opened.share, share)
    as_bytes = decrypt_share(container, composed.encode(), insecure_allow_weak_kdf=True)
    assert same_share(as_bytes.share, share)


@pytest.mark.parametrize("bad", ["", b""], ids=["empty-str", "empty-bytes"])
def test_empty_passcode_is_refused(share: KeyShare, bad: str | bytes) -> None:
    with pytest.raises(InputError):
        encrypt_share(share, bad, wallet_id=WALLET, **WEAK)


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33)], ids=["0", "31", "33"])
def test_key_must_be_32_bytes(share: KeyShare, key: bytes) -> None:
    with pytest.raises(InputError):
        encrypt_with_key(share, key, wallet_id=WALLET)
    with pytest.raises(InputError):
        decrypt_with_key(encrypt_with_key(share, KEY, wallet_id=WALLET), key)


def test_random_source_of_wrong_length_is_refused(share: KeyShare) -> None:
    with pytest.raises(InputError):
        encrypted(share, random=lambda n: bytes(n - 1))


@pytest.mark.parametrize("wallet_id", ["", "has space", "x" * 129], ids=["empty", "space", "long"])
def test_bad_wallet_id_is_refused(share: KeyShare, wallet_id: str) -> None:
    with pytest.raises(InputError):
        encrypt_with_key(share, KEY, wallet_id=wallet_id)


def test_wrong_protection_is_a_format_error_or_needs_a_secret(
    share: KeyShare, sealed: bytes
) -> None:
    passcode_container = sealed
    key_container = encrypt_with_key(share, KEY, wallet_id=WALLET)
    with pytest.raises(ShareFormatError) as info:
        decrypt_share(key_container, PASSCODE)
    assert info.value.field == "kdf.alg"
    with pytest.raises(ShareFormatError):
        decrypt_with_key(passcode_container, KEY)
    with pytest.raises(InputError):
        open_share(passcode_container)
    with pytest.raises(InputError):
        open_share(key_container, passcode=PASSCODE)


### Tampering: every authenticated field


# Parameters with room to change each cost (p=2 needs m >= 16 KiB).
TAMPER_PARAMS = Argon2Params(time_cost=1, memory_cost_kib=32, parallelism=1)

TAMPERS: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "metadata.wallet_id": (("metadata", "wallet_id"), lambda v: v + "x"),
    "metadata.scheme": (("metadata", "scheme"), lambda v: "ecdsa-secp256k1"),
    "metadata.party_id": (("metadata", "party_id"), lambda v: v + 1),
    "metadata.public_key": (("metadata", "public_key"), lambda v: bytes([v[0] ^ 1]) + v[1:]),
    "metadata.epoch": (("metadata", "epoch"), lambda v: v + 1),
    "cipher.nonce": (("cipher", "nonce"), lambda v: bytes([v[0] ^ 1]) + v[1:]),
    "ciphertext.body": (("ciphertext",), lambda v: bytes([v[0] ^ 1]) + v[1:]),
    "ciphertext.tag": (("ciphertext",), lambda v: v[:-1] + bytes([v[-1] ^ 1])),
    "ciphertext.truncated": (("ciphertext",), lambda v: v[:-1]),
    "kdf.salt": (("kdf", "salt"), lambda v: bytes([v[0] ^ 1]) + v[1:]),
    "kdf.time_cost": (("kdf", "time_cost"), lambda v: v + 1),
    "kdf.memory_cost_kib": (("kdf", "memory_cost_kib"), lambda v: v + 8),
    "kdf.parallelism": (("kdf", "parallelism"), lambda v: v + 1),
}


@pytest.mark.parametrize("name", sorted(TAMPERS), ids=sorted(TAMPERS))
def test_each_tampered_field_fails_decryption(share: KeyShare, name: str) -> None:
    container = encrypted(share, params=TAMPER_PARAMS)
    path, change = TAMPERS[name]
    node: Any = fields_of(container)
    for part in path:
        node = node[part]
    with pytest.raises(DecryptionError):
        decrypt_share(edited(container, path, change(node)), PASSCODE, insecure_allow_weak_kdf=True)


@pytest.mark.parametrize("path", [("kdf", "salt"), ("cipher", "nonce"), ("ciphertext",)], ids=str)
def test_tampered_key_container_fails_decryption(share: KeyShare, path: tuple[str, ...]) -> None:
    container = encrypt_with_key(share, KEY, wallet_id=WALLET)
    node: Any = fields_of(container)
    for part in path:
        node = node[part]
    with pytest.raises(DecryptionError):
        decrypt_with_key(edited(container, path, bytes([node[0] ^ 1]) + node[1:]), KEY)


def test_swapping_kdf_kind_is_refused(share: KeyShare) -> None:
    container = encrypt_with_key(share, KEY, wallet_id=WALLET)
    fields = fields_of(container)
    fields["kdf"] = {**fields["kdf"], "alg": "argon2id"}
    with pytest.raises(ShareFormatError):
        decrypt_share(cbor2.dumps(fields), PASSCODE)


### Hostile or weak KDF parameters: refused before any hashing


HOSTILE = {
    "memory 1 TiB": ("memory_cost_kib", 1 << 30, "kdf.memory_cost_kib"),
    "memory just over 1 GiB": ("memory_cost_kib", (1 << 20) + 1, "kdf.memory_cost_kib"),
    "memory below 8p": ("memory_cost_kib", 7, "kdf.memory_cost_kib"),
    "time 10^6": ("time_cost", 10**6, "kdf.time_cost"),
    "time 0": ("time_cost", 0, "kdf.time_cost"),
    "parallelism 1000": ("parallelism", 1000, "kdf.parallelism"),
    "parallelism 0": ("parallelism", 0, "kdf.parallelism"),
    "salt 4 bytes": ("salt", bytes(4), "kdf.salt"),
    "salt 1 KiB": ("salt", bytes(1024), "kdf.salt"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE), ids=sorted(HOSTILE))
def test_hostile_kdf_parameters_are_refused_before_hashing(
    share: KeyShare, sealed: bytes, case: str, no_hashing: None
) -> None:
    name, value, field = HOSTILE[case]
    hostile = edited(sealed, ("kdf", name), value)
    for attempt in (
        lambda: decrypt_share(hostile, PASSCODE, insecure_allow_weak_kdf=True),
        lambda: inspect_share(hostile),
    ):
        with pytest.raises(KdfParamsError) as info:
            attempt()
        assert info.value.field == field


def test_weak_parameters_need_the_explicit_flag(
    share: KeyShare, sealed: bytes, no_hashing: None
) -> None:
    with pytest.raises(KdfParamsError):
        decrypt_share(sealed, PASSCODE)
    with pytest.raises(InputError):
        encrypt_share(share, PASSCODE, wallet_id=WALLET, params=insecure_test_params())
    with pytest.raises(InputError):
        encrypt_share(
            share,
            PASSCODE,
            wallet_id=WALLET,
            params=Argon2Params(1, 2 << 20, 1),
            insecure_allow_weak_kdf=True,
        )


@pytest.mark.parametrize(
    ("params", "strong"),
    [
        (Argon2Params(1, 47104, 1), True),
        (Argon2Params(2, 19456, 1), True),
        (Argon2Params(5, 7168, 1), True),
        (Argon2Params(1, 47103, 1), False),
        (Argon2Params(2, 19455, 4), False),
        (Argon2Params(16, 7167, 1), False),
        (DEFAULT_ARGON2_PARAMS, True),
    ],
    ids=str,
)
def test_owasp_minimums(params: Argon2Params, strong: bool) -> None:
    assert params.is_strong() is strong


### Malformed containers: a typed error naming the field


def test_unknown_version_is_refused(share: KeyShare, sealed: bytes, no_hashing: None) -> None:
    for container in (sealed, encode_plain_share(share, wallet_id=WALLET)):
        with pytest.raises(UnsupportedVersionError) as info:
            open_share(edited(container, ("version",), 2), passcode=PASSCODE)
        assert info.value.field == "version"


MALFORMED: dict[str, tuple[tuple[str, ...], Any, str]] = {
    "format unknown": (("format",), "shardkeep-keyshare", "format"),
    "version missing": (("version",), _DELETE, "version"),
    "version not int": (("version",), "1", "version"),
    "unknown top-level field": (("extra",), 1, "extra"),
    "kdf alg unknown": (("kdf", "alg"), "scrypt", "kdf.alg"),
    "kdf not a map": (("kdf",), [1], "kdf"),
    "kdf unknown field": (("kdf", "pepper"), b"x", "kdf.pepper"),
    "time_cost missing": (("kdf", "time_cost"), _DELETE, "kdf.time_cost"),
    "time_cost bool": (("kdf", "time_cost"), True, "kdf.time_cost"),
    "cipher alg": (("cipher", "alg"), "chacha20-poly1305", "cipher.alg"),
    "nonce length": (("cipher", "nonce"), bytes(16), "cipher.nonce"),
    "metadata missing": (("metadata",), _DELETE, "metadata"),
    "metadata wallet_id": (("metadata", "wallet_id"), "no spaces allowed", "metadata.wallet_id"),
    "metadata scheme": (("metadata", "scheme"), "ed448", "metadata.scheme"),
    "metadata party_id": (("metadata", "party_id"), -1, "metadata.party_id"),
    "metadata public_key": (("metadata", "public_key"), bytes(33), "metadata.public_key"),
    "metadata epoch type": (("metadata", "epoch"), "0", "metadata.epoch"),
    "ciphertext missing": (("ciphertext",), _DELETE, "ciphertext"),
    "ciphertext short": (("ciphertext",), bytes(15), "ciphertext"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED), ids=sorted(MALFORMED))
def test_malformed_container_names_the_field(
    share: KeyShare, sealed: bytes, case: str, no_hashing: None
) -> None:
    path, value, field = MALFORMED[case]
    with pytest.raises(ShareFormatError) as info:
        decrypt_share(edited(sealed, path, value), PASSCODE, insecure_allow_weak_kdf=True)
    assert info.value.field == field
    assert not isinstance(info.value, DecryptionError)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\x00", cbor2.dumps([1, 2]), b"not cbor at all"],
    ids=["empty", "garbage", "array", "text"],
)
def test_not_a_container(data: bytes) -> None:
    with pytest.raises(ShareFormatError):
        open_share(data, passcode=PASSCODE)


def test_trailing_bytes_are_refused(share: KeyShare, sealed: bytes) -> None:
    with pytest.raises(ShareFormatError) as info:
        inspect_share(sealed + b"\x00")
    assert info.value.field == "container"


def test_oversized_container_is_refused_before_decoding() -> None:
    with pytest.raises(ShareFormatError) as info:
        inspect_share(b"\xa0" + bytes(MAX_CONTAINER_BYTES))
    assert info.value.field == "container"


def test_plain_container_metadata_must_describe_the_share(share: KeyShare) -> None:
    plain = encode_plain_share(share, wallet_id=WALLET)
    with pytest.raises(ShareFormatError) as info:
        open_share(edited(plain, ("metadata", "epoch"), 7))
    assert info.value.field == "metadata"
    with pytest.raises(ShareFormatError) as info:
        open_share(edited(plain, ("share",), b"\xa0"))
    assert info.value.field == "share"


### Armour


def test_armour_round_trip_and_shape(share: KeyShare, sealed: bytes) -> None:
    container = sealed
    text = armour(container)
    lines = text.splitlines()
    assert lines[0] == "-----BEGIN SHARDKEEP SHARE-----"
    assert lines[1] == f"Format: {ENCRYPTED_FORMAT}"
    assert lines[2].startswith("Checksum: sha256:") and lines[3] == ""
    assert lines[-1] == "-----END SHARDKEEP SHARE-----"
    assert all(len(line) <= 64 for line in lines[4:-1])
    assert dearmour(text) == container
    plain = encode_plain_share(share, wallet_id=WALLET)
    assert f"Format: {PLAIN_FORMAT}" in armour(plain)
    # Pasted into an e-mail, with CRLF line ends and indentation.
    pasted = "Hi, my backup:\r\n\r\n" + "\r\n".join("  " + ln for ln in lines) + "\r\nBye\r\n"
    assert dearmour(pasted) == container
    assert dearmour(pasted.encode()) == container
    assert same_share(decrypt_share(pasted, PASSCODE, insecure_allow_weak_kdf=True).share, share)


def _corrupt_body_char(text: str) -> str:
    lines = text.splitlines()
    row = lines[5]
    lines[5] = row[:10] + ("A" if row[10] != "A" else "B") + row[11:]
    return "\n".join(lines)


def _drop_lines(text: str, drop: Callable[[int, str], bool]) -> str:
    return "\n".join(ln for i, ln in enumerate(text.splitlines()) if not drop(i, ln))


def _bad_base64(text: str) -> str:
    row = text.splitlines()[5]
    return text.replace(row, "!" + row[1:])


ARMOUR_DAMAGE: dict[str, tuple[Callable[[str], str], str]] = {
    "base64 char changed": (_corrupt_body_char, "armour.checksum"),
    "line lost": (lambda t: _drop_lines(t, lambda i, _: i == 6), "armour.checksum"),
    "invalid base64": (_bad_base64, "armour.body"),
    "no END": (lambda t: t.replace("-----END SHARDKEEP SHARE-----", ""), "armour"),
    "no BEGIN": (lambda t: t.replace("BEGIN SHARDKEEP SHARE", "BEGIN PGP MESSAGE"), "armour"),
    "checksum edited": (lambda t: t.replace("sha256:", "sha256:0"), "armour.checksum"),
    "checksum missing": (
        lambda t: _drop_lines(t, lambda _, ln: ln.startswith("Checksum")),
        "armour.headers",
    ),
    "unknown header": (lambda t: t.replace("Format:", "Comment: hi\nFormat:"), "armour.headers"),
    "format header lies": (
        lambda t: t.replace(ENCRYPTED_FORMAT, PLAIN_FORMAT, 1),
        "armour.headers",
    ),
    "no blank line": (lambda t: t.replace("\n\n", "\n"), "armour.headers"),
}


@pytest.mark.parametrize("case", sorted(ARMOUR_DAMAGE), ids=sorted(ARMOUR_DAMAGE))
def test_damaged_armour_is_reported(share: KeyShare, sealed: bytes, case: str) -> None:
    damage, field = ARMOUR_DAMAGE[case]
    bad = damage(armour(sealed))
    with pytest.raises(ArmourError) as info:
        dearmour(bad)
    assert info.value.field == field
    with pytest.raises(ArmourError):
        decrypt_share(bad, PASSCODE, insecure_allow_weak_kdf=True)


def test_armour_refuses_non_containers() -> None:
    with pytest.raises(ShareFormatError):
        armour(cbor2.dumps({"format": "something-else"}))


### Share files


def test_share_file_round_trips(tmp_path: Path, keyring: list[KeyShare]) -> None:
    share = keyring[1]
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"passcode": PASSCODE, **WEAK}, {"passcode": PASSCODE, "insecure_allow_weak_kdf": True}),
        ({"key": KEY}, {"key": KEY}),
        ({"plain": True}, {}),
        ({"plain": True, "armoured": True}, {}),
        ({"key": KEY, "armoured": True}, {"key": KEY}),
    ]
    for i, (write_kw, read_kw) in enumerate(cases):
        path = tmp_path / f"share-{i}"
        write_share_file(path, share, wallet_id=WALLET, **write_kw)
        opened = read_share_file(path, **read_kw)
        assert same_share(opened.share, share)
        assert opened.metadata == storage.ShareMetadata.of(share, WALLET)
        is_text = path.read_bytes().startswith(b"-----BEGIN SHARDKEEP SHARE-----")
        assert is_text == bool(write_kw.get("armoured"))


@pytest.mark.parametrize(
    "kw",
    [{}, {"passcode": PASSCODE, "key": KEY}, {"key": KEY, "plain": True}],
    ids=["none", "passcode+key", "key+plain"],
)
def test_share_file_needs_exactly_one_protection(
    tmp_path: Path, share: KeyShare, kw: dict[str, Any]
) -> None:
    with pytest.raises(InputError):
        write_share_file(tmp_path / "s", share, wallet_id=WALLET, **kw)
    assert list(tmp_path.iterdir()) == []


def test_share_file_is_owner_only_whatever_the_umask(tmp_path: Path, share: KeyShare) -> None:
    path = tmp_path / "share"
    path.write_bytes(b"old")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        write_share_file(path, share, wallet_id=WALLET, key=KEY, overwrite=True)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_refuses_to_overwrite_another_share(
    tmp_path: Path, keyrings: dict[str, list[KeyShare]]
) -> None:
    first, second = keyrings["bip340"]
    path = tmp_path / "share"
    write_share_file(path, first, wallet_id=WALLET, key=KEY)
    before = path.read_bytes()
    for other, wallet in ((second, WALLET), (first, "another-wallet")):
        with pytest.raises(ShareFileExistsError):
            write_share_file(path, other, wallet_id=wallet, plain=True)
        assert path.read_bytes() == before
    # The same share again (e.g. after an ECDSA pair was burned) may be rewritten.
    write_share_file(path, first, wallet_id=WALLET, key=KEY)
    assert path.read_bytes() != before
    write_share_file(path, second, wallet_id=WALLET, plain=True, overwrite=True)
    assert read_share_file(path).share.party_id == 1


def test_refuses_to_overwrite_unreadable_data(tmp_path: Path, share: KeyShare) -> None:
    path = tmp_path / "share"
    path.write_bytes(b"someone's notes")
    with pytest.raises(ShareFileExistsError):
        write_share_file(path, share, wallet_id=WALLET, plain=True)
    assert path.read_bytes() == b"someone's notes"


def _raise_crash(*_: Any) -> None:
    raise OSError("simulated crash between write and rename")


def test_crash_before_rename_keeps_the_old_file(
    tmp_path: Path, keyrings: dict[str, list[KeyShare]], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = keyrings["bip340"]
    path = tmp_path / "share"
    write_share_file(path, old, wallet_id=WALLET, plain=True)
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", _raise_crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_share_file(path, new, wallet_id=WALLET, plain=True, overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["share"]  # the temporary file is gone


def test_hard_crash_leaves_a_stale_temp_file_that_does_no_harm(
    tmp_path: Path, keyrings: dict[str, list[KeyShare]], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = keyrings["bip340"]
    path = tmp_path / "share"
    write_share_file(path, old, wallet_id=WALLET, plain=True)
    with monkeypatch.context() as m:
        # A power cut: the new bytes are written and fsync'ed, then nothing runs.
        m.setattr(os, "replace", _raise_crash)
        m.setattr(os, "unlink", lambda *_: None)
        with pytest.raises(OSError):
            write_share_file(path, new, wallet_id=WALLET, plain=True, overwrite=True)
    stale = [p for p in tmp_path.iterdir() if p.name != "share"]
    assert len(stale) == 1 and stat.S_IMODE(stale[0].stat().st_mode) == 0o600
    assert same_share(read_share_file(path).share, old)
    write_share_file(path, new, wallet_id=WALLET, plain=True, overwrite=True)
    assert same_share(read_share_file(path).share, new)


def test_read_share_file_wrong_passcode(tmp_path: Path, share: KeyShare) -> None:
    path = tmp_path / "share"
    write_share_file(path, share, wallet_id=WALLET, passcode=PASSCODE, **WEAK)
    with pytest.raises(DecryptionError):
        read_share_file(path, passcode="nope", insecure_allow_weak_kdf=True)
    with pytest.raises(InputError):
        read_share_file(path)


### Backups through the host


def test_backup_and_recovery_on_a_new_device(keyring: list[KeyShare]) -> None:
    share, other = keyring
    for secret in ({"passcode": PASSCODE, **WEAK}, {"key": KEY}):
        backup = make_backup(share, wallet_id=WALLET, **secret)
        assert (backup.wallet_id, backup.party_id, backup.epoch) == (WALLET, 0, 0)
        assert backup.backup_id == "bk-" + hashlib.sha256(backup.blob).hexdigest()[:32]
        secret.pop("params", None)
        recovered = recover_share(
            backup, public_key=share.public_key, epoch=0, party_id=0, **secret
        )
        assert same_share(recovered, share)
    # The recovered share signs with the other party.
    sig = local.sign([recovered, other], DIGEST)
    if share.scheme == "bip340":
        assert schnorr_verify(DIGEST, share.public_key[1:], sig)
    else:
        assert ecdsa_verify(DIGEST, share.public_key, sig)


def test_backup_needs_exactly_one_secret(share: KeyShare) -> None:
    with pytest.raises(InputError):
        make_backup(share, wallet_id=WALLET)
    with pytest.raises(InputError):
        make_backup(share, wallet_id=WALLET, passcode=PASSCODE, key=KEY)
    backup = make_backup(share, wallet_id=WALLET, key=KEY)
    with pytest.raises(InputError):
        recover_share(backup, public_key=share.public_key, epoch=0)


def test_backup_blob_validates_its_fields() -> None:
    with pytest.raises(InputError):
        BackupBlob(WALLET, "bad id!", 0, 0, b"x")
    with pytest.raises(InputError):
        BackupBlob(WALLET, "b1", 0, -1, b"x")
    with pytest.raises(InputError):
        BackupBlob(WALLET, "b1", 0, 0, b"")
    assert "blob" not in repr(BackupBlob(WALLET, "b1", 0, 0, b"x"))


def _stale_epoch_share(share: KeyShare) -> KeyShare:
    return dataclasses.replace(share, epoch=share.epoch + 1)


@pytest.mark.parametrize(
    ("expect", "field"),
    [
        ({"public_key": "other"}, "public key"),
        ({"epoch": 1}, "epoch"),
        ({"party_id": 1}, "party id"),
    ],
    ids=["public-key", "epoch", "party"],
)
def test_recovery_checks_the_callers_expectations_before_hashing(
    keyrings: dict[str, list[KeyShare]],
    expect: dict[str, Any],
    field: str,
    no_hashing: None,
    sealed: bytes,
) -> None:
    share = keyrings["bip340"][0]
    backup = BackupBlob(WALLET, "b1", 0, 0, sealed)
    kw: dict[str, Any] = {"public_key": share.public_key, "epoch": 0, **expect}
    if kw["public_key"] == "other":
        kw["public_key"] = keyrings["ecdsa-secp256k1"][0].public_key
    with pytest.raises(ShareMismatchError) as info:
        recover_share(backup, passcode=PASSCODE, insecure_allow_weak_kdf=True, **kw)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"wallet_id": "another-wallet"}, "backup record wallet_id"),
        ({"party_id": 1}, "backup record party_id"),
        ({"epoch": 3}, "backup record epoch"),
    ],
    ids=["wallet", "party", "epoch"],
)
def test_recovery_catches_a_host_that_edits_the_record(
    share: KeyShare, sealed: bytes, record: dict[str, Any], field: str, no_hashing: None
) -> None:
    backup = dataclasses.replace(BackupBlob(WALLET, "b1", 0, 0, sealed), **record)
    with pytest.raises(ShareMismatchError) as info:
        recover_share(
            backup,
            passcode=PASSCODE,
            public_key=share.public_key,
            epoch=backup.epoch,
            insecure_allow_weak_kdf=True,
        )
    assert info.value.field == field


def test_recovery_refuses_an_old_epoch_backup(share: KeyShare) -> None:
    newer = _stale_epoch_share(share)
    old_backup = make_backup(share, wallet_id=WALLET, key=KEY)
    with pytest.raises(ShareMismatchError) as info:
        recover_share(old_backup, key=KEY, public_key=newer.public_key, epoch=newer.epoch)
    assert info.value.field == "epoch"
    new_backup = make_backup(newer, wallet_id=WALLET, key=KEY)
    assert recover_share(new_backup, key=KEY, public_key=newer.public_key, epoch=1).epoch == 1


def test_recovery_catches_a_host_that_rewrites_the_clear_metadata(share: KeyShare) -> None:
    backup = make_backup(share, wallet_id=WALLET, key=KEY)
    forged = dataclasses.replace(
        backup, epoch=5, blob=edited(backup.blob, ("metadata", "epoch"), 5)
    )
    with pytest.raises(DecryptionError):
        recover_share(forged, key=KEY, public_key=share.public_key, epoch=5)


def test_recovery_refuses_plain_blobs_and_wrong_secrets(share: KeyShare) -> None:
    plain = BackupBlob(WALLET, "b1", 0, 0, encode_plain_share(share, wallet_id=WALLET))
    with pytest.raises(ShareFormatError):
        recover_share(plain, key=KEY, public_key=share.public_key, epoch=0)
    backup = make_backup(share, wallet_id=WALLET, key=KEY)
    with pytest.raises(DecryptionError):
        recover_share(backup, key=bytes(32), public_key=share.public_key, epoch=0)


### No secret in any encrypted output, repr or error


def _secret_windows(share: KeyShare) -> Iterator[bytes]:
    """The secret share and 16-byte windows across the ECDSA setup (OT seeds, zero seed)."""
    yield share.secret_share_bytes
    if share.ecdsa is not None:
        setup = share.ecdsa.to_bytes()
        # Past the public header (magic, version, index, parties, key id, bitmap).
        for start in range(64, len(setup) - 16, 509):
            yield setup[start : start + 16]


def test_no_plaintext_secret_in_encrypted_outputs(keyring: list[KeyShare], tmp_path: Path) -> None:
    share = keyring[0]
    encrypted_outputs = {
        "passcode": encrypted(share),
        "key": encrypt_with_key(share, KEY, wallet_id=WALLET),
        "backup-passcode": make_backup(share, wallet_id=WALLET, passcode=PASSCODE, **WEAK).blob,
        "backup-key": make_backup(share, wallet_id=WALLET, key=KEY).blob,
    }
    write_share_file(tmp_path / "f", share, wallet_id=WALLET, passcode=PASSCODE, **WEAK)
    encrypted_outputs["file"] = (tmp_path / "f").read_bytes()
    write_share_file(tmp_path / "a", share, wallet_id=WALLET, key=KEY, armoured=True)
    armoured = (tmp_path / "a").read_text()
    encrypted_outputs["armour-decoded"] = dearmour(armoured)
    windows = list(_secret_windows(share))
    for name, output in encrypted_outputs.items():
        for window in windows:
            assert output.find(window) == -1, name
    secret_hex = share.secret_share_bytes.hex()
    secret_b64 = base64.b64encode(share.secret_share_bytes)[:40].decode()
    assert secret_hex not in armoured and secret_b64 not in armoured
    # The scan does find the secret where it is in the clear.
    assert encode_plain_share(share, wallet_id=WALLET).find(share.secret_share_bytes) != -1


def test_no_secret_in_reprs_or_errors(share: KeyShare, sealed: bytes) -> None:
    opened = decrypt_share(sealed, PASSCODE, insecure_allow_weak_kdf=True)
    secret = share.secret_share_bytes
    texts = [repr(opened), repr(make_backup(share, wallet_id=WALLET, key=KEY))]
    attempts: list[Callable[[], object]] = [
        lambda: decrypt_share(sealed, "hunter2-wrong", insecure_allow_weak_kdf=True),
        lambda: decrypt_with_key(encrypt_with_key(share, KEY, wallet_id=WALLET), bytes(32)),
    ]
    for attempt in attempts:
        with pytest.raises(DecryptionError) as info:
            attempt()
        texts.append(str(info.value))
    for text in texts:
        for needle in (
            secret.hex(),
            str(share.secret_share),
            repr(secret),
            PASSCODE,
            "hunter2",
            KEY.hex(),
        ):
            assert needle not in text
