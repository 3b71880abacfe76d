from shardkeep.v1 import ceremony_pb2 as _ceremony_pb2
from shardkeep.v1 import relay_pb2 as _relay_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostCeremonyRequest(_message.Message):
    __slots__ = ("request", "relay_token", "relay_room")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RELAY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RELAY_ROOM_FIELD_NUMBER: _ClassVar[int]
    request: _ceremony_pb2.SignedCeremonyRequest
    relay_token: str
    relay_room: _relay_pb2.SignedRoomSpec
    def __init__(self, request: _Optional[_Union[_ceremony_pb2.SignedCeremonyRequest, _Mapping]] = ..., relay_token: _Optional[str] = ..., relay_room: _Optional[_Union[_relay_pb2.SignedRoomSpec, _Mapping]] = ...) -> None: ...

class GetWalletRequest(_message.Message):
    __slots__ = ("wallet_id",)
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    def __init__(self, wallet_id: _Optional[str] = ...) -> None: ...

class Wallet(_message.Message):
    __slots__ = ("wallet_id", "scheme", "threshold", "parties", "public_key", "epoch")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    scheme: _ceremony_pb2.Scheme
    threshold: int
    parties: _containers.RepeatedCompositeFieldContainer[_ceremony_pb2.Party]
    public_key: bytes
    epoch: int
    def __init__(self, wallet_id: _Optional[str] = ..., scheme: _Optional[_Union[_ceremony_pb2.Scheme, str]] = ..., threshold: _Optional[int] = ..., parties: _Optional[_Iterable[_Union[_ceremony_pb2.Party, _Mapping]]] = ..., public_key: _Optional[bytes] = ..., epoch: _Optional[int] = ...) -> None: ...

class ListWalletsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWalletsResponse(_message.Message):
    __slots__ = ("wallets", "next_page_token")
    WALLETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    wallets: _containers.RepeatedCompositeFieldContainer[Wallet]
    next_page_token: str
    def __init__(self, wallets: _Optional[_Iterable[_Union[Wallet, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class HostAttestationRequest(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    def __init__(self, nonce: _Optional[bytes] = ...) -> None: ...

class HostAttestationResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: bytes
    def __init__(self, document: _Optional[bytes] = ...) -> None: ...

class Backup(_message.Message):
    __slots__ = ("wallet_id", "backup_id", "party_id", "epoch", "blob", "created_at_ms", "blob_bytes")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    backup_id: str
    party_id: str
    epoch: int
    blob: bytes
    created_at_ms: int
    blob_bytes: int
    def __init__(self, wallet_id: _Optional[str] = ..., backup_id: _Optional[str] = ..., party_id: _Optional[str] = ..., epoch: _Optional[int] = ..., blob: _Optional[bytes] = ..., created_at_ms: _Optional[int] = ..., blob_bytes: _Optional[int] = ...) -> None: ...

class PutBackupRequest(_message.Message):
    __slots__ = ("backup",)
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    backup: Backup
    def __init__(self, backup: _Optional[_Union[Backup, _Mapping]] = ...) -> None: ...

class PutBackupResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBackupRequest(_message.Message):
    __slots__ = ("wallet_id", "backup_id")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    backup_id: str
    def __init__(self, wallet_id: _Optional[str] = ..., backup_id: _Optional[str] = ...) -> None: ...

class ListBackupsRequest(_message.Message):
    __slots__ = ("wallet_id",)
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    def __init__(self, wallet_id: _Optional[str] = ...) -> None: ...

class ListBackupsResponse(_message.Message):
    __slots__ = ("backups",)
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    backups: _containers.RepeatedCompositeFieldContainer[Backup]
    def __init__(self, backups: _Optional[_Iterable[_Union[Backup, _Mapping]]] = ...) -> None: ...

class GetEpochsRequest(_message.Message):
    __slots__ = ("wallet_id",)
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    def __init__(self, wallet_id: _Optional[str] = ...) -> None: ...

class Epoch(_message.Message):
    __slots__ = ("epoch", "state", "threshold", "parties", "key_change", "certificate", "deadline_unix_ms", "acked")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    KEY_CHANGE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    state: str
    threshold: int
    parties: _containers.RepeatedCompositeFieldContainer[_ceremony_pb2.Party]
    key_change: _ceremony_pb2.KeyChange
    certificate: bytes
    deadline_unix_ms: int
    acked: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, epoch: _Optional[int] = ..., state: _Optional[str] = ..., threshold: _Optional[int] = ..., parties: _Optional[_Iterable[_Union[_ceremony_pb2.Party, _Mapping]]] = ..., key_change: _Optional[_Union[_ceremony_pb2.KeyChange, _Mapping]] = ..., certificate: _Optional[bytes] = ..., deadline_unix_ms: _Optional[int] = ..., acked: _Optional[_Iterable[int]] = ...) -> None: ...

class Epochs(_message.Message):
    __slots__ = ("epochs",)
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    epochs: _containers.RepeatedCompositeFieldContainer[Epoch]
    def __init__(self, epochs: _Optional[_Iterable[_Union[Epoch, _Mapping]]] = ...) -> None: ...

class SubmitCertificateRequest(_message.Message):
    __slots__ = ("wallet_id", "epoch", "certificate")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    epoch: int
    certificate: bytes
    def __init__(self, wallet_id: _Optional[str] = ..., epoch: _Optional[int] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class AckEpochRequest(_message.Message):
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

class AckEpochResponse(_message.Message):
    __slots__ = ("pruned",)
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    pruned: int
    def __init__(self, pruned: _Optional[int] = ...) -> None: ...

class RetireEpochRequest(_message.Message):
    __slots__ = ("wallet_id", "epoch", "owner_signature")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OWNER_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    epoch: int
    owner_signature: bytes
    def __init__(self, wallet_id: _Optional[str] = ..., epoch: _Optional[int] = ..., owner_signature: _Optional[bytes] = ...) -> None: ...

class RetireEpochResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HostChallengeRequest(_message.Message):
    __slots__ = ("affinity",)
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    affinity: str
    def __init__(self, affinity: _Optional[str] = ...) -> None: ...

class HostChallengeResponse(_message.Message):
    __slots__ = ("challenge", "not_after_unix")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_UNIX_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    not_after_unix: int
    def __init__(self, challenge: _Optional[bytes] = ..., not_after_unix: _Optional[int] = ...) -> None: ...

class HostCeremonyCall(_message.Message):
    __slots__ = ("kind", "request", "timeout_ms", "request_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    kind: _ceremony_pb2.CeremonyKind
    request: HostCeremonyRequest
    timeout_ms: int
    request_id: str
    def __init__(self, kind: _Optional[_Union[_ceremony_pb2.CeremonyKind, str]] = ..., request: _Optional[_Union[HostCeremonyRequest, _Mapping]] = ..., timeout_ms: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class HostSessionInput(_message.Message):
    __slots__ = ("channel", "call", "get_challenge", "cancel", "batch")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    GET_CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    channel: int
    call: HostCeremonyCall
    get_challenge: HostChallengeRequest
    cancel: bool
    batch: HostSessionInputs
    def __init__(self, channel: _Optional[int] = ..., call: _Optional[_Union[HostCeremonyCall, _Mapping]] = ..., get_challenge: _Optional[_Union[HostChallengeRequest, _Mapping]] = ..., cancel: _Optional[bool] = ..., batch: _Optional[_Union[HostSessionInputs, _Mapping]] = ...) -> None: ...

class HostSessionInputs(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[HostSessionInput]
    def __init__(self, frames: _Optional[_Iterable[_Union[HostSessionInput, _Mapping]]] = ...) -> None: ...

class HostSessionOutput(_message.Message):
    __slots__ = ("channel", "result", "challenge", "end", "batch")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    channel: int
    result: _ceremony_pb2.CeremonyResult
    challenge: HostChallengeResponse
    end: HostChannelEnd
    batch: HostSessionOutputs
    def __init__(self, channel: _Optional[int] = ..., result: _Optional[_Union[_ceremony_pb2.CeremonyResult, _Mapping]] = ..., challenge: _Optional[_Union[HostChallengeResponse, _Mapping]] = ..., end: _Optional[_Union[HostChannelEnd, _Mapping]] = ..., batch: _Optional[_Union[HostSessionOutputs, _Mapping]] = ...) -> None: ...

class HostSessionOutputs(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[HostSessionOutput]
    def __init__(self, frames: _Optional[_Iterable[_Union[HostSessionOutput, _Mapping]]] = ...) -> None: ...

class HostChannelEnd(_message.Message):
    __slots__ = ("code", "message", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    details: _containers.ScalarMap[str, bytes]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., details: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class HostSessionFrameHead(_message.Message):
    __slots__ = ("channel", "batch")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    channel: int
    batch: HostSessionBatchHead
    def __init__(self, channel: _Optional[int] = ..., batch: _Optional[_Union[HostSessionBatchHead, _Mapping]] = ...) -> None: ...

class HostSessionBatchHead(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, frames: _Optional[_Iterable[bytes]] = ...) -> None: ...
