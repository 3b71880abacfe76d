from shardkeep.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoomState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROOM_STATE_UNSPECIFIED: _ClassVar[RoomState]
    ROOM_STATE_OPEN: _ClassVar[RoomState]
    ROOM_STATE_CLOSED: _ClassVar[RoomState]
    ROOM_STATE_EXPIRED: _ClassVar[RoomState]

class RoomEndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROOM_END_REASON_UNSPECIFIED: _ClassVar[RoomEndReason]
    ROOM_END_REASON_CLOSED: _ClassVar[RoomEndReason]
    ROOM_END_REASON_EXPIRED: _ClassVar[RoomEndReason]
ROOM_STATE_UNSPECIFIED: RoomState
ROOM_STATE_OPEN: RoomState
ROOM_STATE_CLOSED: RoomState
ROOM_STATE_EXPIRED: RoomState
ROOM_END_REASON_UNSPECIFIED: RoomEndReason
ROOM_END_REASON_CLOSED: RoomEndReason
ROOM_END_REASON_EXPIRED: RoomEndReason

class RoomLimits(_message.Message):
    __slots__ = ("max_message_bytes", "max_messages", "max_total_bytes")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_messages: int
    max_total_bytes: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_messages: _Optional[int] = ..., max_total_bytes: _Optional[int] = ...) -> None: ...

class CreateRoomRequest(_message.Message):
    __slots__ = ("room_id", "participants", "ttl_ms", "limits")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participants: _containers.RepeatedScalarFieldContainer[str]
    ttl_ms: int
    limits: RoomLimits
    def __init__(self, room_id: _Optional[str] = ..., participants: _Optional[_Iterable[str]] = ..., ttl_ms: _Optional[int] = ..., limits: _Optional[_Union[RoomLimits, _Mapping]] = ...) -> None: ...

class CreateRoomResponse(_message.Message):
    __slots__ = ("room_id", "join_tokens", "admin_token", "expires_at_ms", "limits")
    class JoinTokensEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    JOIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    join_tokens: _containers.ScalarMap[str, str]
    admin_token: str
    expires_at_ms: int
    limits: RoomLimits
    def __init__(self, room_id: _Optional[str] = ..., join_tokens: _Optional[_Mapping[str, str]] = ..., admin_token: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., limits: _Optional[_Union[RoomLimits, _Mapping]] = ...) -> None: ...

class GetRoomRequest(_message.Message):
    __slots__ = ("room_id", "token")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    token: str
    def __init__(self, room_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class RoomPartyStatus(_message.Message):
    __slots__ = ("party", "joined", "messages_delivered")
    PARTY_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_DELIVERED_FIELD_NUMBER: _ClassVar[int]
    party: str
    joined: bool
    messages_delivered: int
    def __init__(self, party: _Optional[str] = ..., joined: _Optional[bool] = ..., messages_delivered: _Optional[int] = ...) -> None: ...

class RoomStatus(_message.Message):
    __slots__ = ("room_id", "state", "parties", "created_at_ms", "expires_at_ms", "limits", "messages", "total_bytes")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    state: RoomState
    parties: _containers.RepeatedCompositeFieldContainer[RoomPartyStatus]
    created_at_ms: int
    expires_at_ms: int
    limits: RoomLimits
    messages: int
    total_bytes: int
    def __init__(self, room_id: _Optional[str] = ..., state: _Optional[_Union[RoomState, str]] = ..., parties: _Optional[_Iterable[_Union[RoomPartyStatus, _Mapping]]] = ..., created_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., limits: _Optional[_Union[RoomLimits, _Mapping]] = ..., messages: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class CloseRoomRequest(_message.Message):
    __slots__ = ("room_id", "admin_token")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    admin_token: str
    def __init__(self, room_id: _Optional[str] = ..., admin_token: _Optional[str] = ...) -> None: ...

class CloseRoomResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JoinHello(_message.Message):
    __slots__ = ("room_id", "party", "join_token", "resume_after", "room")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_FIELD_NUMBER: _ClassVar[int]
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    party: str
    join_token: str
    resume_after: int
    room: SignedRoomSpec
    def __init__(self, room_id: _Optional[str] = ..., party: _Optional[str] = ..., join_token: _Optional[str] = ..., resume_after: _Optional[int] = ..., room: _Optional[_Union[SignedRoomSpec, _Mapping]] = ...) -> None: ...

class RoomSpec(_message.Message):
    __slots__ = ("room_id", "participants", "expires_at_ms", "limits", "token_digests", "admin_digest")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participants: _containers.RepeatedScalarFieldContainer[str]
    expires_at_ms: int
    limits: RoomLimits
    token_digests: _containers.RepeatedScalarFieldContainer[bytes]
    admin_digest: bytes
    def __init__(self, room_id: _Optional[str] = ..., participants: _Optional[_Iterable[str]] = ..., expires_at_ms: _Optional[int] = ..., limits: _Optional[_Union[RoomLimits, _Mapping]] = ..., token_digests: _Optional[_Iterable[bytes]] = ..., admin_digest: _Optional[bytes] = ...) -> None: ...

class SignedRoomSpec(_message.Message):
    __slots__ = ("spec", "credential")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    spec: bytes
    credential: str
    def __init__(self, spec: _Optional[bytes] = ..., credential: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("hello", "envelopes")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    hello: JoinHello
    envelopes: _containers.RepeatedCompositeFieldContainer[_envelope_pb2.Envelope]
    def __init__(self, hello: _Optional[_Union[JoinHello, _Mapping]] = ..., envelopes: _Optional[_Iterable[_Union[_envelope_pb2.Envelope, _Mapping]]] = ...) -> None: ...

class JoinAccepted(_message.Message):
    __slots__ = ("room_id", "party", "participants", "next_seq", "expires_at_ms", "limits")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    party: str
    participants: _containers.RepeatedScalarFieldContainer[str]
    next_seq: int
    expires_at_ms: int
    limits: RoomLimits
    def __init__(self, room_id: _Optional[str] = ..., party: _Optional[str] = ..., participants: _Optional[_Iterable[str]] = ..., next_seq: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., limits: _Optional[_Union[RoomLimits, _Mapping]] = ...) -> None: ...

class EnvelopeDelivery(_message.Message):
    __slots__ = ("envelope", "position")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    envelope: _envelope_pb2.Envelope
    position: int
    def __init__(self, envelope: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., position: _Optional[int] = ...) -> None: ...

class EnvelopeAck(_message.Message):
    __slots__ = ("seq", "position")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    seq: int
    position: int
    def __init__(self, seq: _Optional[int] = ..., position: _Optional[int] = ...) -> None: ...

class RoomEnded(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: RoomEndReason
    def __init__(self, reason: _Optional[_Union[RoomEndReason, str]] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("accepted", "deliveries", "acks", "ended")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    accepted: JoinAccepted
    deliveries: _containers.RepeatedCompositeFieldContainer[EnvelopeDelivery]
    acks: _containers.RepeatedCompositeFieldContainer[EnvelopeAck]
    ended: RoomEnded
    def __init__(self, accepted: _Optional[_Union[JoinAccepted, _Mapping]] = ..., deliveries: _Optional[_Iterable[_Union[EnvelopeDelivery, _Mapping]]] = ..., acks: _Optional[_Iterable[_Union[EnvelopeAck, _Mapping]]] = ..., ended: _Optional[_Union[RoomEnded, _Mapping]] = ...) -> None: ...

class AwaitRoundRequest(_message.Message):
    __slots__ = ("room_id", "token", "ceremony_id", "round", "parties", "timeout_ms")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    token: str
    ceremony_id: str
    round: int
    parties: _containers.RepeatedScalarFieldContainer[str]
    timeout_ms: int
    def __init__(self, room_id: _Optional[str] = ..., token: _Optional[str] = ..., ceremony_id: _Optional[str] = ..., round: _Optional[int] = ..., parties: _Optional[_Iterable[str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class AwaitRoundResponse(_message.Message):
    __slots__ = ("complete", "delivered", "missing", "state")
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    complete: bool
    delivered: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedScalarFieldContainer[str]
    state: RoomState
    def __init__(self, complete: _Optional[bool] = ..., delivered: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[RoomState, str]] = ...) -> None: ...

class RelaySessionRequest(_message.Message):
    __slots__ = ("channel", "join", "envelopes", "flush", "close", "close_room", "batch")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    JOIN_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_ROOM_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    channel: int
    join: ChannelJoin
    envelopes: EnvelopeList
    flush: int
    close: ChannelClosed
    close_room: CloseRoomRequest
    batch: RelaySessionRequests
    def __init__(self, channel: _Optional[int] = ..., join: _Optional[_Union[ChannelJoin, _Mapping]] = ..., envelopes: _Optional[_Union[EnvelopeList, _Mapping]] = ..., flush: _Optional[int] = ..., close: _Optional[_Union[ChannelClosed, _Mapping]] = ..., close_room: _Optional[_Union[CloseRoomRequest, _Mapping]] = ..., batch: _Optional[_Union[RelaySessionRequests, _Mapping]] = ...) -> None: ...

class RelaySessionRequests(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[RelaySessionRequest]
    def __init__(self, frames: _Optional[_Iterable[_Union[RelaySessionRequest, _Mapping]]] = ...) -> None: ...

class ChannelJoin(_message.Message):
    __slots__ = ("hello", "deadline_ms")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    hello: JoinHello
    deadline_ms: int
    def __init__(self, hello: _Optional[_Union[JoinHello, _Mapping]] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class EnvelopeList(_message.Message):
    __slots__ = ("envelopes", "flush")
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedCompositeFieldContainer[_envelope_pb2.Envelope]
    flush: int
    def __init__(self, envelopes: _Optional[_Iterable[_Union[_envelope_pb2.Envelope, _Mapping]]] = ..., flush: _Optional[int] = ...) -> None: ...

class RelaySessionResponse(_message.Message):
    __slots__ = ("channel", "accepted", "deliveries", "non_delivery", "flushed", "closed", "batch")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    NON_DELIVERY_FIELD_NUMBER: _ClassVar[int]
    FLUSHED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    channel: int
    accepted: JoinAccepted
    deliveries: DeliveryList
    non_delivery: NonDelivery
    flushed: Flushed
    closed: ChannelClosed
    batch: RelaySessionResponses
    def __init__(self, channel: _Optional[int] = ..., accepted: _Optional[_Union[JoinAccepted, _Mapping]] = ..., deliveries: _Optional[_Union[DeliveryList, _Mapping]] = ..., non_delivery: _Optional[_Union[NonDelivery, _Mapping]] = ..., flushed: _Optional[_Union[Flushed, _Mapping]] = ..., closed: _Optional[_Union[ChannelClosed, _Mapping]] = ..., batch: _Optional[_Union[RelaySessionResponses, _Mapping]] = ...) -> None: ...

class RelaySessionResponses(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[RelaySessionResponse]
    def __init__(self, frames: _Optional[_Iterable[_Union[RelaySessionResponse, _Mapping]]] = ...) -> None: ...

class DeliveryList(_message.Message):
    __slots__ = ("deliveries",)
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[EnvelopeDelivery]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[EnvelopeDelivery, _Mapping]]] = ...) -> None: ...

class NonDelivery(_message.Message):
    __slots__ = ("seq", "code", "message", "error")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    seq: int
    code: str
    message: str
    error: str
    def __init__(self, seq: _Optional[int] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class Flushed(_message.Message):
    __slots__ = ("flush", "position")
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    flush: int
    position: int
    def __init__(self, flush: _Optional[int] = ..., position: _Optional[int] = ...) -> None: ...

class ChannelClosed(_message.Message):
    __slots__ = ("code", "message", "error", "ended")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    error: str
    ended: RoomEndReason
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., error: _Optional[str] = ..., ended: _Optional[_Union[RoomEndReason, str]] = ...) -> None: ...
