"""Every ceremony on one long-lived ``Enclave.Session`` stream (docs/transport.md).

With ``LinkConfig.session_transport`` the host opens one Session stream to the
enclave and keeps it: each ceremony is a channel on it instead of a
``RunCeremony`` call of its own, which saves the HTTP/2 stream, headers and
deadline of a call per ceremony. A ``SessionChannel`` offers what
``CeremonyDriver`` uses of a call (write, read, done_writing, cancel), so the
driver is the same for both transports.

A stream that breaks fails every channel on it with UNAVAILABLE, as a broken
call would; the next ceremony opens a new stream. The stream ends with the
host's channel to the enclave (closed at shutdown, after the server drained).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Final

import grpc
import structlog

from host.errors import ENCLAVE_CODES, HostError, error_from_enclave
from shardkeep.framing import BatchError, batched, drain, unbatched
from shardkeep.v1 import enclave_pb2, enclave_pb2_grpc

__all__ = [
    # Types
    "EnclaveSession",
    "SessionChannel",
]

_EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]
_SessionCall = grpc.aio.StreamStreamCall[enclave_pb2.SessionInput, enclave_pb2.SessionOutput]
_BROKEN: Final = HostError(grpc.StatusCode.UNAVAILABLE, "the enclave is unavailable")


def _refusal(end: enclave_pb2.ChannelEnd) -> HostError:
    """The coordinator's status for a channel the enclave ended with an error."""
    code = getattr(grpc.StatusCode, end.code, grpc.StatusCode.INTERNAL)
    mapped = ENCLAVE_CODES.get(code, grpc.StatusCode.INTERNAL)
    return HostError(mapped, end.message or mapped.name.lower(), from_enclave=True)


class SessionChannel:
    """One ceremony on the session: its outputs in order, then EOF or its error."""

    def __init__(self, session: EnclaveSession, number: int) -> None:
        self._session = session
        self._number = number
        self._inbox: asyncio.Queue[enclave_pb2.CeremonyOutput | HostError | None] = asyncio.Queue()
        self._ended = False

    async def write(self, item: enclave_pb2.CeremonyInput) -> None:
        """Send an input (dropped once the channel has ended, as a closed call's would fail)."""
        if not self._ended:
            self._session.send(enclave_pb2.SessionInput(channel=self._number, input=item))

    async def read(self) -> enclave_pb2.CeremonyOutput | object:
        """The next output, or ``grpc.aio.EOF`` once the channel ended OK.

        Raises:
            HostError: the channel ended with the enclave's error, or the stream broke.
        """
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)
            return _EOF
        if isinstance(item, HostError):
            self._inbox.put_nowait(item)
            raise item
        return item

    async def done_writing(self) -> None:
        if not self._ended:
            self._session.send(enclave_pb2.SessionInput(channel=self._number, half_close=True))

    def cancel(self) -> bool:
        """Give the ceremony up (a no-op once it ended)."""
        if self._ended:
            return False
        self._end(HostError(grpc.StatusCode.CANCELLED, "the ceremony was cancelled"))
        self._session.send(enclave_pb2.SessionInput(channel=self._number, cancel=True))
        return True

    def _deliver(self, frame: enclave_pb2.SessionOutput) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "output":
            self._inbox.put_nowait(frame.output)
            if frame.output.HasField("result"):
                self._end(None)  # the result is the channel's last frame
        elif kind == "end":
            if frame.end.code == grpc.StatusCode.OK.name:
                self._end(None)
            else:
                self._end(_refusal(frame.end))

    def _end(self, outcome: HostError | None) -> None:
        if not self._ended:
            self._ended = True
            self._session.forget(self._number)
            self._inbox.put_nowait(outcome)


class EnclaveSession:
    """The host's end of the Session stream: channels by number, one writer, one reader."""

    def __init__(self, stub: enclave_pb2_grpc.EnclaveStub) -> None:
        self._stub = stub
        self._numbers = itertools.count(1)
        self._channels: dict[int, SessionChannel] = {}
        self._challenges: dict[int, asyncio.Future[enclave_pb2.GetChallengeResponse]] = {}
        self._call: _SessionCall | None = None
        self._outbox: asyncio.Queue[enclave_pb2.SessionInput] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._log = structlog.get_logger("host.enclave")

    def open_channel(self) -> SessionChannel:
        """A new channel for one ceremony, on the open stream (opened first if needed)."""
        if self._call is None or self._call.done():
            self._open()
        channel = SessionChannel(self, next(self._numbers))
        self._channels[channel._number] = channel
        return channel

    async def challenge(self) -> enclave_pb2.GetChallengeResponse:
        """A single-use challenge from the enclave, asked on the session stream.

        Raises:
            HostError: the enclave's refusal, or the stream broke.
        """
        if self._call is None or self._call.done():
            self._open()
        number = next(self._numbers)
        answer: asyncio.Future[enclave_pb2.GetChallengeResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._challenges[number] = answer
        try:
            self.send(
                enclave_pb2.SessionInput(
                    channel=number, get_challenge=enclave_pb2.GetChallengeRequest()
                )
            )
            return await answer
        finally:
            self._challenges.pop(number, None)

    def send(self, frame: enclave_pb2.SessionInput) -> None:
        self._outbox.put_nowait(frame)

    def forget(self, number: int) -> None:
        self._channels.pop(number, None)

    def _open(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._fail_all(_BROKEN)  # channels of a stream that ended
        call: _SessionCall = self._stub.Session()
        self._call = call
        self._outbox = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._write_loop(call, self._outbox)),
            asyncio.create_task(self._read_loop(call)),
        ]

    async def _write_loop(
        self, call: _SessionCall, outbox: asyncio.Queue[enclave_pb2.SessionInput]
    ) -> None:
        """The only writer of the stream (grpc forbids concurrent writes)."""
        try:
            while True:
                # What is queued goes out in one message (a batch).
                frames = drain(outbox, await outbox.get())
                for message in batched(frames, enclave_pb2.SessionInputs):
                    await call.write(message)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return  # the stream ended: the reader reports how

    async def _read_loop(self, call: _SessionCall) -> None:
        error = _BROKEN
        try:
            while True:
                frame = await call.read()
                if frame is _EOF or not isinstance(frame, enclave_pb2.SessionOutput):
                    break
                for one in unbatched(frame):
                    channel = self._channels.get(one.channel)
                    if channel is not None:
                        channel._deliver(one)
                    else:
                        self._answer_challenge(one)
        except BatchError as e:
            call.cancel()
            self._log.warning("enclave session ended", error=str(e))
            error = HostError(grpc.StatusCode.INTERNAL, "the enclave sent a malformed batch")
        except grpc.aio.AioRpcError as e:
            error = error_from_enclave(e)
            self._log.warning("enclave session ended", code=e.code().name)
        finally:
            if self._call is call:  # else a new stream has failed this one's channels
                self._call = None
                self._fail_all(error)

    def _answer_challenge(self, frame: enclave_pb2.SessionOutput) -> None:
        answer = self._challenges.get(frame.channel)
        if answer is None or answer.done():
            return
        kind = frame.WhichOneof("frame")
        if kind == "challenge":
            answer.set_result(frame.challenge)
        elif kind == "end":
            answer.set_exception(_refusal(frame.end))

    def _fail_all(self, error: HostError) -> None:
        for channel in list(self._channels.values()):
            channel._end(error)
        self._channels.clear()
        for answer in self._challenges.values():
            if not answer.done():
                answer.set_exception(error)
