from shardkeep.v1 import ceremony_pb2 as _ceremony_pb2
from shardkeep.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SetCredentialsRequest(_message.Message):
    __slots__ = ("access_key_id", "secret_access_key", "session_token", "expires_at_unix")
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    access_key_id: str
    secret_access_key: str
    session_token: str
    expires_at_unix: int
    def __init__(self, access_key_id: _Optional[str] = ..., secret_access_key: _Optional[str] = ..., session_token: _Optional[str] = ..., expires_at_unix: _Optional[int] = ...) -> None: ...

class SetCredentialsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProvisionRequest(_message.Message):
    __slots__ = ("sealed_identity",)
    SEALED_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    sealed_identity: bytes
    def __init__(self, sealed_identity: _Optional[bytes] = ...) -> None: ...

class ProvisionResponse(_message.Message):
    __slots__ = ("sealed_identity", "static_key", "host_pubkey")
    SEALED_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    STATIC_KEY_FIELD_NUMBER: _ClassVar[int]
    HOST_PUBKEY_FIELD_NUMBER: _ClassVar[int]
    sealed_identity: bytes
    static_key: bytes
    host_pubkey: bytes
    def __init__(self, sealed_identity: _Optional[bytes] = ..., static_key: _Optional[bytes] = ..., host_pubkey: _Optional[bytes] = ...) -> None: ...

class GetAttestationRequest(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    def __init__(self, nonce: _Optional[bytes] = ...) -> None: ...

class GetAttestationResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: bytes
    def __init__(self, document: _Optional[bytes] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("version", "static_key", "ceremonies_running", "malformed_requests", "instance_tag")
    class MalformedRequestsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CEREMONIES_RUNNING_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_TAG_FIELD_NUMBER: _ClassVar[int]
    version: str
    static_key: bytes
    ceremonies_running: int
    malformed_requests: _containers.ScalarMap[str, int]
    instance_tag: bytes
    def __init__(self, version: _Optional[str] = ..., static_key: _Optional[bytes] = ..., ceremonies_running: _Optional[int] = ..., malformed_requests: _Optional[_Mapping[str, int]] = ..., instance_tag: _Optional[bytes] = ...) -> None: ...

class CeremonyStart(_message.Message):
    __slots__ = ("request", "sealed_shares")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    SEALED_SHARES_FIELD_NUMBER: _ClassVar[int]
    request: _ceremony_pb2.SignedCeremonyRequest
    sealed_shares: _containers.RepeatedCompositeFieldContainer[_ceremony_pb2.SealedShare]
    def __init__(self, request: _Optional[_Union[_ceremony_pb2.SignedCeremonyRequest, _Mapping]] = ..., sealed_shares: _Optional[_Iterable[_Union[_ceremony_pb2.SealedShare, _Mapping]]] = ...) -> None: ...

class StoreAck(_message.Message):
    __slots__ = ("epoch",)
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    def __init__(self, epoch: _Optional[int] = ...) -> None: ...

class CeremonyInput(_message.Message):
    __slots__ = ("start", "inbound", "store_ack")
    START_FIELD_NUMBER: _ClassVar[int]
    INBOUND_FIELD_NUMBER: _ClassVar[int]
    STORE_ACK_FIELD_NUMBER: _ClassVar[int]
    start: CeremonyStart
    inbound: _envelope_pb2.Envelope
    store_ack: StoreAck
    def __init__(self, start: _Optional[_Union[CeremonyStart, _Mapping]] = ..., inbound: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., store_ack: _Optional[_Union[StoreAck, _Mapping]] = ...) -> None: ...

class CeremonyFailure(_message.Message):
    __slots__ = ("code", "message", "culprits", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CULPRITS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    culprits: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., culprits: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class OutboundEnvelopes(_message.Message):
    __slots__ = ("envelopes",)
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedCompositeFieldContainer[_envelope_pb2.Envelope]
    def __init__(self, envelopes: _Optional[_Iterable[_Union[_envelope_pb2.Envelope, _Mapping]]] = ...) -> None: ...

class CeremonyOutput(_message.Message):
    __slots__ = ("outbound", "store", "result", "failure")
    OUTBOUND_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    outbound: OutboundEnvelopes
    store: _ceremony_pb2.SealedShare
    result: _ceremony_pb2.CeremonyResult
    failure: CeremonyFailure
    def __init__(self, outbound: _Optional[_Union[OutboundEnvelopes, _Mapping]] = ..., store: _Optional[_Union[_ceremony_pb2.SealedShare, _Mapping]] = ..., result: _Optional[_Union[_ceremony_pb2.CeremonyResult, _Mapping]] = ..., failure: _Optional[_Union[CeremonyFailure, _Mapping]] = ...) -> None: ...

class SessionInput(_message.Message):
    __slots__ = ("channel", "input", "half_close", "cancel", "get_challenge", "batch")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    HALF_CLOSE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    GET_CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    channel: int
    input: CeremonyInput
    half_close: bool
    cancel: bool
    get_challenge: GetChallengeRequest
    batch: SessionInputs
    def __init__(self, channel: _Optional[int] = ..., input: _Optional[_Union[CeremonyInput, _Mapping]] = ..., half_close: _Optional[bool] = ..., cancel: _Optional[bool] = ..., get_challenge: _Optional[_Union[GetChallengeRequest, _Mapping]] = ..., batch: _Optional[_Union[SessionInputs, _Mapping]] = ...) -> None: ...

class SessionInputs(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[SessionInput]
    def __init__(self, frames: _Optional[_Iterable[_Union[SessionInput, _Mapping]]] = ...) -> None: ...

class SessionOutput(_message.Message):
    __slots__ = ("channel", "output", "end", "challenge", "batch")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    channel: int
    output: CeremonyOutput
    end: ChannelEnd
    challenge: GetChallengeResponse
    batch: SessionOutputs
    def __init__(self, channel: _Optional[int] = ..., output: _Optional[_Union[CeremonyOutput, _Mapping]] = ..., end: _Optional[_Union[ChannelEnd, _Mapping]] = ..., challenge: _Optional[_Union[GetChallengeResponse, _Mapping]] = ..., batch: _Optional[_Union[SessionOutputs, _Mapping]] = ...) -> None: ...

class SessionOutputs(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[SessionOutput]
    def __init__(self, frames: _Optional[_Iterable[_Union[SessionOutput, _Mapping]]] = ...) -> None: ...

class ChannelEnd(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetChallengeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetChallengeResponse(_message.Message):
    __slots__ = ("challenge", "not_after_unix")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_UNIX_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    not_after_unix: int
    def __init__(self, challenge: _Optional[bytes] = ..., not_after_unix: _Optional[int] = ...) -> None: ...
