from shardkeep.v1 import ceremony_pb2 as _ceremony_pb2
from shardkeep.v1 import relay_pb2 as _relay_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollRequest(_message.Message):
    __slots__ = ("enrollment_code", "device_key")
    ENROLLMENT_CODE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KEY_FIELD_NUMBER: _ClassVar[int]
    enrollment_code: str
    device_key: bytes
    def __init__(self, enrollment_code: _Optional[str] = ..., device_key: _Optional[bytes] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeviceCall(_message.Message):
    __slots__ = ("device_key", "timestamp_ms", "nonce", "body", "signature")
    DEVICE_KEY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    device_key: bytes
    timestamp_ms: int
    nonce: bytes
    body: bytes
    signature: bytes
    def __init__(self, device_key: _Optional[bytes] = ..., timestamp_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., body: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class CeremonyAsk(_message.Message):
    __slots__ = ("kind", "scheme", "threshold", "party", "owner_key", "wallet_id", "digest", "derivation_path", "taproot", "taproot_merkle_root", "attestation_nonce", "pair_setup_id", "export_recipient_key", "new_party", "new_device_key", "new_threshold", "keyring", "message", "remove_party", "policy_set", "approvals_follow", "evm_transaction", "solana_message", "psbt", "psbt_input", "eth_personal_message", "eth_typed_data")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PARTY_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_FIELD_NUMBER: _ClassVar[int]
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    DERIVATION_PATH_FIELD_NUMBER: _ClassVar[int]
    TAPROOT_FIELD_NUMBER: _ClassVar[int]
    TAPROOT_MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_NONCE_FIELD_NUMBER: _ClassVar[int]
    PAIR_SETUP_ID_FIELD_NUMBER: _ClassVar[int]
    EXPORT_RECIPIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    NEW_PARTY_FIELD_NUMBER: _ClassVar[int]
    NEW_DEVICE_KEY_FIELD_NUMBER: _ClassVar[int]
    NEW_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    KEYRING_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_PARTY_FIELD_NUMBER: _ClassVar[int]
    POLICY_SET_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FOLLOW_FIELD_NUMBER: _ClassVar[int]
    EVM_TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    SOLANA_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PSBT_FIELD_NUMBER: _ClassVar[int]
    PSBT_INPUT_FIELD_NUMBER: _ClassVar[int]
    ETH_PERSONAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ETH_TYPED_DATA_FIELD_NUMBER: _ClassVar[int]
    kind: _ceremony_pb2.CeremonyKind
    scheme: _ceremony_pb2.Scheme
    threshold: int
    party: _ceremony_pb2.Party
    owner_key: bytes
    wallet_id: str
    digest: bytes
    derivation_path: _containers.RepeatedScalarFieldContainer[int]
    taproot: bool
    taproot_merkle_root: bytes
    attestation_nonce: bytes
    pair_setup_id: bytes
    export_recipient_key: bytes
    new_party: _ceremony_pb2.Party
    new_device_key: bytes
    new_threshold: int
    keyring: _ceremony_pb2.PublicKeyring
    message: bytes
    remove_party: int
    policy_set: bytes
    approvals_follow: bool
    evm_transaction: bytes
    solana_message: bool
    psbt: bytes
    psbt_input: int
    eth_personal_message: bytes
    eth_typed_data: bytes
    def __init__(self, kind: _Optional[_Union[_ceremony_pb2.CeremonyKind, str]] = ..., scheme: _Optional[_Union[_ceremony_pb2.Scheme, str]] = ..., threshold: _Optional[int] = ..., party: _Optional[_Union[_ceremony_pb2.Party, _Mapping]] = ..., owner_key: _Optional[bytes] = ..., wallet_id: _Optional[str] = ..., digest: _Optional[bytes] = ..., derivation_path: _Optional[_Iterable[int]] = ..., taproot: _Optional[bool] = ..., taproot_merkle_root: _Optional[bytes] = ..., attestation_nonce: _Optional[bytes] = ..., pair_setup_id: _Optional[bytes] = ..., export_recipient_key: _Optional[bytes] = ..., new_party: _Optional[_Union[_ceremony_pb2.Party, _Mapping]] = ..., new_device_key: _Optional[bytes] = ..., new_threshold: _Optional[int] = ..., keyring: _Optional[_Union[_ceremony_pb2.PublicKeyring, _Mapping]] = ..., message: _Optional[bytes] = ..., remove_party: _Optional[int] = ..., policy_set: _Optional[bytes] = ..., approvals_follow: _Optional[bool] = ..., evm_transaction: _Optional[bytes] = ..., solana_message: _Optional[bool] = ..., psbt: _Optional[bytes] = ..., psbt_input: _Optional[int] = ..., eth_personal_message: _Optional[bytes] = ..., eth_typed_data: _Optional[bytes] = ...) -> None: ...

class JoinAsk(_message.Message):
    __slots__ = ("wallet_id", "attestation_nonce")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_NONCE_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    attestation_nonce: bytes
    def __init__(self, wallet_id: _Optional[str] = ..., attestation_nonce: _Optional[bytes] = ...) -> None: ...

class StartedCeremony(_message.Message):
    __slots__ = ("request", "attestation_document", "join_token", "needs_owner_approval", "needs_approvals", "relay_room")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NEEDS_OWNER_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    NEEDS_APPROVALS_FIELD_NUMBER: _ClassVar[int]
    RELAY_ROOM_FIELD_NUMBER: _ClassVar[int]
    request: bytes
    attestation_document: bytes
    join_token: str
    needs_owner_approval: bool
    needs_approvals: bool
    relay_room: _relay_pb2.SignedRoomSpec
    def __init__(self, request: _Optional[bytes] = ..., attestation_document: _Optional[bytes] = ..., join_token: _Optional[str] = ..., needs_owner_approval: _Optional[bool] = ..., needs_approvals: _Optional[bool] = ..., relay_room: _Optional[_Union[_relay_pb2.SignedRoomSpec, _Mapping]] = ...) -> None: ...

class CeremonyApproval(_message.Message):
    __slots__ = ("ceremony_id", "owner_signature", "approvals")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    owner_signature: bytes
    approvals: _containers.RepeatedCompositeFieldContainer[_ceremony_pb2.Approval]
    def __init__(self, ceremony_id: _Optional[str] = ..., owner_signature: _Optional[bytes] = ..., approvals: _Optional[_Iterable[_Union[_ceremony_pb2.Approval, _Mapping]]] = ...) -> None: ...

class ApprovedCeremony(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EpochAck(_message.Message):
    __slots__ = ("wallet_id", "epoch", "position", "signature")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    epoch: int
    position: int
    signature: bytes
    def __init__(self, wallet_id: _Optional[str] = ..., epoch: _Optional[int] = ..., position: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class AcknowledgedEpoch(_message.Message):
    __slots__ = ("pruned",)
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    pruned: int
    def __init__(self, pruned: _Optional[int] = ...) -> None: ...

class FinishAsk(_message.Message):
    __slots__ = ("ceremony_id",)
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    def __init__(self, ceremony_id: _Optional[str] = ...) -> None: ...

class BackupUpload(_message.Message):
    __slots__ = ("wallet_id", "backup_id", "epoch", "blob")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    backup_id: str
    epoch: int
    blob: bytes
    def __init__(self, wallet_id: _Optional[str] = ..., backup_id: _Optional[str] = ..., epoch: _Optional[int] = ..., blob: _Optional[bytes] = ...) -> None: ...

class StoredBackup(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BackupAsk(_message.Message):
    __slots__ = ("wallet_id",)
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    def __init__(self, wallet_id: _Optional[str] = ...) -> None: ...

class FetchedBackup(_message.Message):
    __slots__ = ("backup_id", "party", "epoch", "blob", "parties")
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    backup_id: str
    party: int
    epoch: int
    blob: bytes
    parties: _containers.RepeatedCompositeFieldContainer[_ceremony_pb2.Party]
    def __init__(self, backup_id: _Optional[str] = ..., party: _Optional[int] = ..., epoch: _Optional[int] = ..., blob: _Optional[bytes] = ..., parties: _Optional[_Iterable[_Union[_ceremony_pb2.Party, _Mapping]]] = ...) -> None: ...

class PartyClaim(_message.Message):
    __slots__ = ("wallet_id", "party", "signature")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    party: int
    signature: bytes
    def __init__(self, wallet_id: _Optional[str] = ..., party: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ClaimedParty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KeyChangeSettle(_message.Message):
    __slots__ = ("wallet_id", "epoch", "certificate")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    epoch: int
    certificate: bytes
    def __init__(self, wallet_id: _Optional[str] = ..., epoch: _Optional[int] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class SettledKeyChange(_message.Message):
    __slots__ = ("state", "session_id", "transcript", "certificate", "deadline_unix_ms")
    STATE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    state: str
    session_id: bytes
    transcript: bytes
    certificate: bytes
    deadline_unix_ms: int
    def __init__(self, state: _Optional[str] = ..., session_id: _Optional[bytes] = ..., transcript: _Optional[bytes] = ..., certificate: _Optional[bytes] = ..., deadline_unix_ms: _Optional[int] = ...) -> None: ...
