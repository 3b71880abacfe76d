from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("room_id", "ceremony_id", "round", "sender", "recipient", "seq", "payload")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    ceremony_id: str
    round: int
    sender: str
    recipient: str
    seq: int
    payload: bytes
    def __init__(self, room_id: _Optional[str] = ..., ceremony_id: _Optional[str] = ..., round: _Optional[int] = ..., sender: _Optional[str] = ..., recipient: _Optional[str] = ..., seq: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...
