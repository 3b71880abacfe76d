"""BIP 445 (FROST3) test vectors: every case of shared/vectors/bip-frost-signing/*.json,
plus the sources of its tweaks: BIP-341 TapTweak (bip-0341-wallet-test-vectors.json)
and BIP-32 CKDpub (the non-hardened steps of BIP-32's test vectors 1 and 2).

Each case is its own pytest parameter, named ``<file>-<group>-<kind>-tc<id>``. The
vector file layout is described in bip-frost-signing/test_vectors_summary.md: cases
index into their group's shared inputs. ``ValueError`` cases must raise
``InputError`` (a ``ValueError``) with the reference's exact message;
``InvalidContributionError`` cases must blame the same list position (and the
participant id at that position), or the coordinator when ``signer_index`` is null.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.vectors import load_json
from tss.bip32 import HARDENED, ckd_pub, derive_public
from tss.curve import N, Point, schnorr_verify
from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    InputError,
    ProtocolError,
    SessionStateError,
    culprits,
)
from tss.frost import (
    PlainPk,
    SecnonceReuseError,
    SessionContext,
    SignersContext,
    XonlyPk,
    deterministic_sign,
    get_xonly_pk,
    nonce_agg,
    nonce_gen_internal,
    partial_sig_agg,
    partial_sig_verify,
    partial_sig_verify_internal,
    sign,
    thresh_pubkey_and_tweak,
)
from tss.taproot import taproot_output_key, taproot_tweak

Case = dict[str, Any]

FILES = {
    "nonce_gen": load_json("bip-frost-signing/nonce_gen_vectors.json"),
    "nonce_agg": load_json("bip-frost-signing/nonce_agg_vectors.json"),
    "sign_verify": load_json("bip-frost-signing/sign_verify_vectors.json"),
    "tweak": load_json("bip-frost-signing/tweak_vectors.json"),
    "det_sign": load_json("bip-frost-signing/det_sign_vectors.json"),
    "sig_agg": load_json("bip-frost-signing/sig_agg_vectors.json"),
}


def _groups(name: str) -> list[Case]:
    data = FILES[name]
    return list(data["test_groups"]) if "test_groups" in data else [data]


def _cases(name: str, kind: str) -> list[Any]:
    params = []
    for group in _groups(name):
        label = group.get("tg_id", "all")
        for tc in group.get(kind, []):
            params.append(pytest.param(group, tc, id=f"{name}-{label}-{kind}-tc{tc['tc_id']}"))
    if not params:
        raise AssertionError(f"no {kind} cases in {name}")
    return params


def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


def _hex_opt(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def _signers(group: Case, tc: Case) -> SignersContext:
    pubshares = [PlainPk(_hex(group["pubshares"][i])) for i in tc["pubshare_indices"]]
    return SignersContext(
        group["n"], group["t"], tc["ids"], pubshares, PlainPk(_hex(group["thresh_pk"]))
    )


def _pubnonces(group: Case, tc: Case) -> list[bytes]:
    return [_hex(group["pubnonces"][i]) for i in tc["pubnonce_indices"]]


def _tweaks(group: Case, tc: Case) -> tuple[list[bytes], list[bool]]:
    if "tweak_indices" in tc:
        return [_hex(group["tweaks"][i]) for i in tc["tweak_indices"]], tc["is_xonly"]
    return [_hex(t) for t in tc.get("tweaks", [])], tc.get("is_xonly", [])


def _assert_raises_as_specified(tc: Case, fn: Callable[[], object], ids: list[int] | None) -> None:
    error = tc["error"]
    if error["type"] == "ValueError":
        with pytest.raises(InputError) as exc:
            fn()
        assert isinstance(exc.value, ValueError)
        assert str(exc.value) == error["message"]
        assert culprits(exc.value) == ()
        return
    assert error["type"] == "InvalidContributionError"
    with pytest.raises(ProtocolError) as perr:
        fn()
    e: Any = perr.value
    assert e.contrib == error["contrib"]
    assert e.signer_index == error["signer_index"]
    if error["signer_index"] is None:
        assert isinstance(e, FaultyCoordinatorError)
        assert culprits(e) == ()
    else:
        assert isinstance(e, FaultyParticipantError)
        idx = error["signer_index"]
        assert culprits(e) == ((ids[idx],) if ids is not None else (idx,))


@pytest.mark.parametrize("name", sorted(FILES))
def test_vector_file_case_ids_are_continuous(name: str) -> None:
    ids = [
        tc["tc_id"]
        for group in _groups(name)
        for kind, cases in group.items()
        if kind.endswith("_tests")
        for tc in cases
    ]
    assert sorted(ids) == list(range(1, len(ids) + 1))


### NonceGen / NonceAgg


@pytest.mark.parametrize(("group", "tc"), _cases("nonce_gen", "valid_tests"))
def test_nonce_gen(group: Case, tc: Case) -> None:
    pubshare = _hex_opt(tc["pubshare"])
    thresh_pk = _hex_opt(tc["thresh_pk"])
    secnonce, pubnonce = nonce_gen_internal(
        _hex(tc["rand_"]),
        _hex_opt(tc["secshare"]),
        None if pubshare is None else PlainPk(pubshare),
        None if thresh_pk is None else XonlyPk(thresh_pk),
        _hex_opt(tc["msg"]),
        _hex_opt(tc["extra_in"]),
    )
    assert isinstance(secnonce, bytearray)
    assert bytes(secnonce) == _hex(tc["expected"][0])
    assert pubnonce == _hex(tc["expected"][1])


@pytest.mark.parametrize(("group", "tc"), _cases("nonce_agg", "valid_tests"))
def test_nonce_agg(group: Case, tc: Case) -> None:
    pubnonces = [_hex(group["pubnonces"][i]) for i in tc["pubnonce_indices"]]
    assert nonce_agg(pubnonces) == _hex(tc["expected"])


@pytest.mark.parametrize(("group", "tc"), _cases("nonce_agg", "error_tests"))
def test_nonce_agg_error(group: Case, tc: Case) -> None:
    pubnonces = [_hex(group["pubnonces"][i]) for i in tc["pubnonce_indices"]]
    _assert_raises_as_specified(tc, lambda: nonce_agg(pubnonces), None)
    # With ids the culprit is the participant id at the blamed position.
    ids = [10 + k for k in range(len(pubnonces))]
    _assert_raises_as_specified(tc, lambda: nonce_agg(pubnonces, ids), ids)


### Sign / PartialSigVerify


def _check_group_key_material(group: Case) -> None:
    for i in range(group["n"]):
        secshare = int.from_bytes(_hex(group["secshares"][i]), "big")
        assert Point.base_mul(secshare).to_bytes() == _hex(group["pubshares"][i])


@pytest.mark.parametrize(("group", "tc"), _cases("sign_verify", "valid_tests"))
def test_sign_verify(group: Case, tc: Case) -> None:
    _check_group_key_material(group)
    signers = _signers(group, tc)
    pubnonces = _pubnonces(group, tc)
    aggnonce = _hex(tc["aggnonce"])
    assert nonce_agg(pubnonces) == aggnonce
    msg = _hex(tc["msg"])
    session = SessionContext(signers, aggnonce, [], [], msg)
    secnonce = bytearray(_hex(group["secnonces"][tc["secnonce_index"]]))
    secshare = _hex(group["secshares"][tc["secshare_index"]])
    expected = _hex(tc["expected"])
    assert sign(secnonce, secshare, tc["my_id"], session) == expected
    # The secret nonce is wiped in place; a second use is refused.
    assert secnonce == bytearray(64)
    with pytest.raises(SecnonceReuseError) as exc:
        sign(secnonce, secshare, tc["my_id"], session)
    assert isinstance(exc.value, SessionStateError)
    signer_index = tc["ids"].index(tc["my_id"])
    assert partial_sig_verify(expected, pubnonces, signers, [], [], msg, signer_index)


@pytest.mark.parametrize(("group", "tc"), _cases("sign_verify", "sign_error_tests"))
def test_sign_error(group: Case, tc: Case) -> None:
    signers = _signers(group, tc)
    session = SessionContext(signers, _hex(tc["aggnonce"]), [], [], _hex(tc["msg"]))
    secnonce = bytearray(_hex(group["secnonces"][tc["secnonce_index"]]))
    secshare = _hex(group["secshares"][tc["secshare_index"]])
    _assert_raises_as_specified(tc, lambda: sign(secnonce, secshare, tc["my_id"], session), None)


@pytest.mark.parametrize(("group", "tc"), _cases("sign_verify", "verify_fail_tests"))
def test_verify_fail(group: Case, tc: Case) -> None:
    signers = _signers(group, tc)
    assert not partial_sig_verify(
        _hex(tc["psig"]),
        _pubnonces(group, tc),
        signers,
        [],
        [],
        _hex(tc["msg"]),
        tc["signer_index"],
    )


@pytest.mark.parametrize(("group", "tc"), _cases("sign_verify", "verify_error_tests"))
def test_verify_error(group: Case, tc: Case) -> None:
    signers = _signers(group, tc)

    def verify() -> bool:
        return partial_sig_verify(
            _hex(tc["psig"]),
            _pubnonces(group, tc),
            signers,
            [],
            [],
            _hex(tc["msg"]),
            tc["signer_index"],
        )

    _assert_raises_as_specified(tc, verify, tc["ids"])


### Tweaks


@pytest.mark.parametrize(("group", "tc"), _cases("tweak", "valid_tests"))
def test_tweak(group: Case, tc: Case) -> None:
    _check_group_key_material(group)
    signers = _signers(group, tc)
    pubnonces = _pubnonces(group, tc)
    aggnonce = _hex(tc["aggnonce"])
    assert nonce_agg(pubnonces) == aggnonce
    tweaks, is_xonly = _tweaks(group, tc)
    msg = _hex(tc["msg"])
    session = SessionContext(signers, aggnonce, tweaks, is_xonly, msg)
    secnonce = bytearray(_hex(group["secnonces"][tc["secnonce_index"]]))
    secshare = _hex(group["secshares"][tc["secshare_index"]])
    expected = _hex(tc["expected"])
    assert sign(secnonce, secshare, tc["my_id"], session) == expected
    signer_index = tc["ids"].index(tc["my_id"])
    assert partial_sig_verify(expected, pubnonces, signers, tweaks, is_xonly, msg, signer_index)


@pytest.mark.parametrize(("group", "tc"), _cases("tweak", "error_tests"))
def test_tweak_error(group: Case, tc: Case) -> None:
    signers = _signers(group, tc)
    tweaks, is_xonly = _tweaks(group, tc)
    session = SessionContext(signers, _hex(tc["aggnonce"]), tweaks, is_xonly, _hex(tc["msg"]))
    secnonce = bytearray(_hex(group["secnonces"][tc["secnonce_index"]]))
    secshare = _hex(group["secshares"][tc["secshare_index"]])
    _assert_raises_as_specified(tc, lambda: sign(secnonce, secshare, tc["my_id"], session), None)


### DeterministicSign


def _det_sign(group: Case, tc: Case) -> tuple[bytes, bytes]:
    tweaks, is_xonly = _tweaks(group, tc)
    return deterministic_sign(
        _hex(group["secshares"][tc["secshare_index"]]),
        tc["my_id"],
        _hex_opt(tc["aggothernonce"]),
        _signers(group, tc),
        tweaks,
        is_xonly,
        _hex(tc["msg"]),
        _hex_opt(tc["rand"]),
    )


@pytest.mark.parametrize(("group", "tc"), _cases("det_sign", "valid_tests"))
def test_det_sign(group: Case, tc: Case) -> None:
    _check_group_key_material(group)
    pubnonce, psig = _det_sign(group, tc)
    assert [pubnonce, psig] == [_hex(x) for x in tc["expected"]]
    aggothernonce = _hex_opt(tc["aggothernonce"])
    aggnonce = pubnonce if aggothernonce is None else nonce_agg([pubnonce, aggothernonce])
    tweaks, is_xonly = _tweaks(group, tc)
    signers = _signers(group, tc)
    session = SessionContext(signers, aggnonce, tweaks, is_xonly, _hex(tc["msg"]))
    pubshare = signers.pubshares[tc["ids"].index(tc["my_id"])]
    assert partial_sig_verify_internal(psig, tc["my_id"], pubnonce, pubshare, session)


@pytest.mark.parametrize(("group", "tc"), _cases("det_sign", "error_tests"))
def test_det_sign_error(group: Case, tc: Case) -> None:
    _assert_raises_as_specified(tc, lambda: _det_sign(group, tc), None)


### PartialSigAgg


@pytest.mark.parametrize(("group", "tc"), _cases("sig_agg", "valid_tests"))
def test_sig_agg(group: Case, tc: Case) -> None:
    signers = _signers(group, tc)
    tweaks, is_xonly = _tweaks(group, tc)
    msg = _hex(tc["msg"])
    session = SessionContext(signers, _hex(tc["aggnonce"]), tweaks, is_xonly, msg)
    sig = partial_sig_agg([_hex(p) for p in tc["psigs"]], session)
    assert sig == _hex(tc["expected"])
    tweaked = get_xonly_pk(thresh_pubkey_and_tweak(signers.thresh_pk, tweaks, is_xonly))
    assert schnorr_verify(msg, tweaked, sig)


@pytest.mark.parametrize(("group", "tc"), _cases("sig_agg", "error_tests"))
def test_sig_agg_error(group: Case, tc: Case) -> None:
    signers = _signers(group, tc)
    tweaks, is_xonly = _tweaks(group, tc)
    session = SessionContext(signers, _hex(tc["aggnonce"]), tweaks, is_xonly, _hex(tc["msg"]))
    psigs = [_hex(p) for p in tc["psigs"]]
    _assert_raises_as_specified(tc, lambda: partial_sig_agg(psigs, session), tc["ids"])


### Tweak sources: BIP-341 TapTweak (bip-0341 wallet vectors) and BIP-32 CKDpub

WALLET = load_json("bip-0341-wallet-test-vectors.json")


def _spk_cases() -> list[Any]:
    return [pytest.param(c, id=f"scriptPubKey-{k}") for k, c in enumerate(WALLET["scriptPubKey"])]


def _keypath_cases() -> list[Any]:
    return [
        pytest.param(c, id=f"keyPathSpending-input{c['given']['txinIndex']}")
        for c in WALLET["keyPathSpending"][0]["inputSpending"]
    ]


@pytest.mark.parametrize("case", _spk_cases())
def test_taproot_tweak_script_pubkey(case: Case) -> None:
    internal = _hex(case["given"]["internalPubkey"])
    merkle_root = _hex_opt(case["intermediary"]["merkleRoot"])
    out = taproot_output_key(internal, merkle_root)
    assert out.tweak == taproot_tweak(internal, merkle_root) == _hex(case["intermediary"]["tweak"])
    assert out.output_key == _hex(case["intermediary"]["tweakedPubkey"])
    assert _hex(case["expected"]["scriptPubKey"]) == b"\x51\x20" + out.output_key
    # The same tweak as a BIP 445 x-only tweak of the (even-y) internal key.
    ctx = thresh_pubkey_and_tweak(PlainPk(b"\x02" + internal), [out.tweak], [True])
    assert get_xonly_pk(ctx) == out.output_key
    assert ctx.Q.has_even_y() == (out.parity == 0)
    for control_block in case["expected"].get("scriptPathControlBlocks", []):
        assert _hex(control_block)[0] & 1 == out.parity


@pytest.mark.parametrize("case", _keypath_cases())
def test_taproot_tweak_key_path_spending(case: Case) -> None:
    inter = case["intermediary"]
    out = taproot_output_key(_hex(inter["internalPubkey"]), _hex_opt(case["given"]["merkleRoot"]))
    assert out.tweak == _hex(inter["tweak"])
    tweaked_priv = int.from_bytes(_hex(inter["tweakedPrivkey"]), "big")
    assert Point.base_mul(tweaked_priv).xonly() == out.output_key
    witness_sig = _hex(case["expected"]["witness"][0])[:64]
    assert schnorr_verify(_hex(inter["sigHash"]), out.output_key, witness_sig)


def test_taproot_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        taproot_tweak(bytes(31))
    with pytest.raises(InputError):
        taproot_tweak(bytes(32), bytes(31))
    with pytest.raises(InputError):  # x = 5 is not on the curve (x^3 + 7 = 132, a non-residue)
        taproot_tweak((5).to_bytes(32, "big"))


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58check(s: str) -> bytes:
    """Base58Check decoding (test helper for the BIP-32 xpub/xprv strings)."""
    num = 0
    for ch in s:
        num = num * 58 + _B58.index(ch)
    raw = num.to_bytes(82, "big")
    payload, checksum = raw[:-4], raw[-4:]
    assert hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == checksum
    return payload


def _xkey(s: str) -> tuple[bytes, bytes]:
    """(key data, chain code) of a serialised extended key (BIP-32 "Serialization format")."""
    data = _b58check(s)
    return data[45:78], data[13:45]


# BIP-32 "Test Vectors": the non-hardened steps, which public derivation reproduces
# from the parent's xpub (vector 1: m/0H -> /1, m/0H/1/2H -> /2 -> /1000000000;
# vector 2: m -> /0, m/0/2147483647H -> /1, m/0/2147483647H/1/2147483646H -> /2).
BIP32_STEPS = [
    (
        "v1 m/0H/1",
        "xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw",
        [1],
        "xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ",
    ),
    (
        "v1 m/0H/1/2H/2",
        "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
        [2],
        "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV",
    ),
    (
        "v1 m/0H/1/2H/2/1000000000",
        "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV",
        [1000000000],
        "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy",
    ),
    (
        "v1 m/0H/1/2H -> /2/1000000000",
        "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
        [2, 1000000000],
        "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy",
    ),
    (
        "v2 m/0",
        "xpub661MyMwAqRbcFW31YEwpkMuc5THy2PSt5bDMsktWQcFF8syAmRUapSCGu8ED9W6oDMSgv6Zz8idoc4a6mr8BDzTJY47LJhkJ8UB7WEGuduB",
        [0],
        "xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH",
    ),
    (
        "v2 m/0/2147483647H/1",
        "xpub6ASAVgeehLbnwdqV6UKMHVzgqAG8Gr6riv3Fxxpj8ksbH9ebxaEyBLZ85ySDhKiLDBrQSARLq1uNRts8RuJiHjaDMBU4Zn9h8LZNnBC5y4a",
        [1],
        "xpub6DF8uhdarytz3FWdA8TvFSvvAh8dP3283MY7p2V4SeE2wyWmG5mg5EwVvmdMVCQcoNJxGoWaU9DCWh89LojfZ537wTfunKau47EL2dhHKon",
    ),
    (
        "v2 m/0/2147483647H/1/2147483646H/2",
        "xpub6ERApfZwUNrhLCkDtcHTcxd75RbzS1ed54G1LkBUHQVHQKqhMkhgbmJbZRkrgZw4koxb5JaHWkY4ALHY2grBGRjaDMzQLcgJvLJuZZvRcEL",
        [2],
        "xpub6FnCn6nSzZAw5Tw7cgR9bi15UV96gLZhjDstkXXxvCLsUXBGXPdSnLFbdpq8p9HmGsApME5hQTZ3emM2rnY5agb9rXpVGyy3bdW6EEgAtqt",
    ),
]


@pytest.mark.parametrize(
    ("parent", "path", "child"), [pytest.param(*s[1:], id=s[0]) for s in BIP32_STEPS]
)
def test_bip32_ckd_pub(parent: str, path: list[int], child: str) -> None:
    parent_key, parent_chain = _xkey(parent)
    child_key, child_chain = _xkey(child)
    derived = derive_public(parent_key, parent_chain, path)
    assert (derived.public_key, derived.chain_code) == (child_key, child_chain)
    # The accumulated tweak is a plain BIP 445 tweak from parent to child.
    ctx = thresh_pubkey_and_tweak(PlainPk(parent_key), [derived.tweak], [False])
    assert ctx.Q.to_bytes() == child_key
    if len(path) == 1:
        assert ckd_pub(parent_key, parent_chain, path[0]) == derived


def test_bip32_tweak_matches_private_derivation() -> None:
    # BIP-32 test vector 1: xprv of m/0H/1/2H and of m/0H/1/2H/2/1000000000.
    parent, _ = _xkey(
        "xprv9z4pot5VBttmtdRTWfWQmoH1taj2axGVzFqSb8C9xaxKymcFzXBDptWmT7FwuEzG3ryjH4ktypQSAewRiNMjANTtpgP4mLTj34bhnZX7UiM"
    )
    child, _ = _xkey(
        "xprvA41z7zogVVwxVSgdKUHDy1SKmdb533PjDz7J6N6mV6uS3ze1ai8FHa8kmHScGpWmj4WggLyQjgPie1rFSruoUihUZREPSL39UNdE3BBDu76"
    )
    xpub_key, xpub_chain = _xkey(BIP32_STEPS[3][1])
    tweak = derive_public(xpub_key, xpub_chain, [2, 1000000000]).tweak
    k_parent, k_child = int.from_bytes(parent[1:], "big"), int.from_bytes(child[1:], "big")
    assert (k_parent + int.from_bytes(tweak, "big")) % N == k_child


def test_bip32_rejects_hardened_and_bad_input() -> None:
    key, chain = _xkey(BIP32_STEPS[0][1])
    for index in (HARDENED, -1, 2**32):
        with pytest.raises(InputError):
            ckd_pub(key, chain, index)
    with pytest.raises(InputError):
        derive_public(key, chain[:31], [0])
    with pytest.raises(InputError):
        derive_public(bytes(33), chain, [0])
    assert derive_public(key, chain, []) == (key, chain, bytes(32))
