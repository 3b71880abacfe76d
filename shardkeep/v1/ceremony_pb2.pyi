from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scheme(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEME_UNSPECIFIED: _ClassVar[Scheme]
    SCHEME_ECDSA_SECP256K1: _ClassVar[Scheme]
    SCHEME_BIP340: _ClassVar[Scheme]
    SCHEME_ED25519: _ClassVar[Scheme]

class CeremonyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CEREMONY_KIND_UNSPECIFIED: _ClassVar[CeremonyKind]
    CEREMONY_KIND_KEYGEN: _ClassVar[CeremonyKind]
    CEREMONY_KIND_SIGN: _ClassVar[CeremonyKind]
    CEREMONY_KIND_RESHARE: _ClassVar[CeremonyKind]
    CEREMONY_KIND_REFRESH: _ClassVar[CeremonyKind]
    CEREMONY_KIND_EXPORT: _ClassVar[CeremonyKind]
    CEREMONY_KIND_PAIR_SETUP: _ClassVar[CeremonyKind]
SCHEME_UNSPECIFIED: Scheme
SCHEME_ECDSA_SECP256K1: Scheme
SCHEME_BIP340: Scheme
SCHEME_ED25519: Scheme
CEREMONY_KIND_UNSPECIFIED: CeremonyKind
CEREMONY_KIND_KEYGEN: CeremonyKind
CEREMONY_KIND_SIGN: CeremonyKind
CEREMONY_KIND_RESHARE: CeremonyKind
CEREMONY_KIND_REFRESH: CeremonyKind
CEREMONY_KIND_EXPORT: CeremonyKind
CEREMONY_KIND_PAIR_SETUP: CeremonyKind

class Party(_message.Message):
    __slots__ = ("party_id", "static_key", "host_pubkey")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    STATIC_KEY_FIELD_NUMBER: _ClassVar[int]
    HOST_PUBKEY_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    static_key: bytes
    host_pubkey: bytes
    def __init__(self, party_id: _Optional[str] = ..., static_key: _Optional[bytes] = ..., host_pubkey: _Optional[bytes] = ...) -> None: ...

class PublicKeyring(_message.Message):
    __slots__ = ("threshold", "public_key", "public_shares", "epoch")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_SHARES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    threshold: int
    public_key: bytes
    public_shares: _containers.RepeatedScalarFieldContainer[bytes]
    epoch: int
    def __init__(self, threshold: _Optional[int] = ..., public_key: _Optional[bytes] = ..., public_shares: _Optional[_Iterable[bytes]] = ..., epoch: _Optional[int] = ...) -> None: ...

class CeremonyRequest(_message.Message):
    __slots__ = ("ceremony_id", "room_id", "kind", "scheme", "wallet_id", "threshold", "parties", "digest", "derivation_path", "taproot_merkle_root", "export_recipient_key", "not_after_unix", "signers", "owner_key", "new_threshold", "new_parties", "epoch", "taproot", "export_recipient", "keyring", "pair_setup_ids", "challenge", "message", "policy_set", "evm_transaction", "solana_message", "psbt", "psbt_input", "eth_personal_message", "eth_typed_data", "want_next_challenge")
    class PairSetupIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bytes
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    DERIVATION_PATH_FIELD_NUMBER: _ClassVar[int]
    TAPROOT_MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    EXPORT_RECIPIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_UNIX_FIELD_NUMBER: _ClassVar[int]
    SIGNERS_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_FIELD_NUMBER: _ClassVar[int]
    NEW_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NEW_PARTIES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TAPROOT_FIELD_NUMBER: _ClassVar[int]
    EXPORT_RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    KEYRING_FIELD_NUMBER: _ClassVar[int]
    PAIR_SETUP_IDS_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POLICY_SET_FIELD_NUMBER: _ClassVar[int]
    EVM_TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    SOLANA_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PSBT_FIELD_NUMBER: _ClassVar[int]
    PSBT_INPUT_FIELD_NUMBER: _ClassVar[int]
    ETH_PERSONAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ETH_TYPED_DATA_FIELD_NUMBER: _ClassVar[int]
    WANT_NEXT_CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    room_id: str
    kind: CeremonyKind
    scheme: Scheme
    wallet_id: str
    threshold: int
    parties: _containers.RepeatedCompositeFieldContainer[Party]
    digest: bytes
    derivation_path: _containers.RepeatedScalarFieldContainer[int]
    taproot_merkle_root: bytes
    export_recipient_key: bytes
    not_after_unix: int
    signers: _containers.RepeatedScalarFieldContainer[int]
    owner_key: bytes
    new_threshold: int
    new_parties: _containers.RepeatedCompositeFieldContainer[Party]
    epoch: int
    taproot: bool
    export_recipient: Party
    keyring: PublicKeyring
    pair_setup_ids: _containers.ScalarMap[int, bytes]
    challenge: bytes
    message: bytes
    policy_set: bytes
    evm_transaction: bytes
    solana_message: bool
    psbt: bytes
    psbt_input: int
    eth_personal_message: bytes
    eth_typed_data: bytes
    want_next_challenge: bool
    def __init__(self, ceremony_id: _Optional[str] = ..., room_id: _Optional[str] = ..., kind: _Optional[_Union[CeremonyKind, str]] = ..., scheme: _Optional[_Union[Scheme, str]] = ..., wallet_id: _Optional[str] = ..., threshold: _Optional[int] = ..., parties: _Optional[_Iterable[_Union[Party, _Mapping]]] = ..., digest: _Optional[bytes] = ..., derivation_path: _Optional[_Iterable[int]] = ..., taproot_merkle_root: _Optional[bytes] = ..., export_recipient_key: _Optional[bytes] = ..., not_after_unix: _Optional[int] = ..., signers: _Optional[_Iterable[int]] = ..., owner_key: _Optional[bytes] = ..., new_threshold: _Optional[int] = ..., new_parties: _Optional[_Iterable[_Union[Party, _Mapping]]] = ..., epoch: _Optional[int] = ..., taproot: _Optional[bool] = ..., export_recipient: _Optional[_Union[Party, _Mapping]] = ..., keyring: _Optional[_Union[PublicKeyring, _Mapping]] = ..., pair_setup_ids: _Optional[_Mapping[int, bytes]] = ..., challenge: _Optional[bytes] = ..., message: _Optional[bytes] = ..., policy_set: _Optional[bytes] = ..., evm_transaction: _Optional[bytes] = ..., solana_message: _Optional[bool] = ..., psbt: _Optional[bytes] = ..., psbt_input: _Optional[int] = ..., eth_personal_message: _Optional[bytes] = ..., eth_typed_data: _Optional[bytes] = ..., want_next_challenge: _Optional[bool] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("authenticator", "signature", "authenticator_data", "client_data_json")
    AUTHENTICATOR_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATOR_DATA_FIELD_NUMBER: _ClassVar[int]
    CLIENT_DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    authenticator: str
    signature: bytes
    authenticator_data: bytes
    client_data_json: bytes
    def __init__(self, authenticator: _Optional[str] = ..., signature: _Optional[bytes] = ..., authenticator_data: _Optional[bytes] = ..., client_data_json: _Optional[bytes] = ...) -> None: ...

class SignedCeremonyRequest(_message.Message):
    __slots__ = ("request", "coordinator_signature", "owner_signature", "approvals")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    OWNER_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    request: bytes
    coordinator_signature: bytes
    owner_signature: bytes
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    def __init__(self, request: _Optional[bytes] = ..., coordinator_signature: _Optional[bytes] = ..., owner_signature: _Optional[bytes] = ..., approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ...) -> None: ...

class SealedShare(_message.Message):
    __slots__ = ("wallet_id", "share_index", "scheme", "epoch", "encrypted_data_key", "ciphertext", "public_key", "key_change", "certificate")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    SHARE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_CHANGE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    share_index: int
    scheme: Scheme
    epoch: int
    encrypted_data_key: bytes
    ciphertext: bytes
    public_key: bytes
    key_change: KeyChange
    certificate: bytes
    def __init__(self, wallet_id: _Optional[str] = ..., share_index: _Optional[int] = ..., scheme: _Optional[_Union[Scheme, str]] = ..., epoch: _Optional[int] = ..., encrypted_data_key: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., key_change: _Optional[_Union[KeyChange, _Mapping]] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class KeyChange(_message.Message):
    __slots__ = ("session_id", "transcript", "host_pubkeys")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    HOST_PUBKEYS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    transcript: bytes
    host_pubkeys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, session_id: _Optional[bytes] = ..., transcript: _Optional[bytes] = ..., host_pubkeys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class CeremonyResult(_message.Message):
    __slots__ = ("ceremony_id", "wallet_id", "public_key", "epoch", "signature", "recovery_id", "encrypted_export", "certificate", "next_challenge", "next_challenge_not_after_unix")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_ID_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_EXPORT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    NEXT_CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    NEXT_CHALLENGE_NOT_AFTER_UNIX_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    wallet_id: str
    public_key: bytes
    epoch: int
    signature: bytes
    recovery_id: int
    encrypted_export: bytes
    certificate: bytes
    next_challenge: bytes
    next_challenge_not_after_unix: int
    def __init__(self, ceremony_id: _Optional[str] = ..., wallet_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., epoch: _Optional[int] = ..., signature: _Optional[bytes] = ..., recovery_id: _Optional[int] = ..., encrypted_export: _Optional[bytes] = ..., certificate: _Optional[bytes] = ..., next_challenge: _Optional[bytes] = ..., next_challenge_not_after_unix: _Optional[int] = ...) -> None: ...
